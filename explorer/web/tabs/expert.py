"""The Expert tab: one expert's page (contexts, samples, histogram, domains, tokens, siblings, similar experts),
opened from anywhere: its own box, a deep link `?expert=G1/17`, or a click on any expert in the page (open_on)."""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from explorer.web import messages, pages
from explorer.web.tabs.common import Context, clickable, status_line, url_js

# The parts of the page that expert_view fills (its keys), in the order of ExpertTab.parts.
PARTS = tuple(part for part in pages.NO_EXPERT if part != "name")


@dataclass(frozen=True)
class ExpertTab:
    spec: gr.Textbox
    status: gr.HTML
    switch_off: gr.Button
    opened: gr.State  # the name of the expert on show ("" when none)
    parts: tuple  # the components of PARTS
    effects: gr.HTML
    similar: gr.HTML


def build(ctx: Context) -> ExpertTab:
    with gr.Tab("Expert", id="expert"):
        opened = gr.State("")
        with gr.Row(equal_height=True):
            spec = gr.Textbox(
                show_label=False,
                placeholder=ctx.explorer.examples.expert_placeholder(),  # an expert of this model
                scale=3,
                elem_id="expert-spec",
                container=False,
            )
            open_button = gr.Button("Open", scale=0, min_width=90)
            switch_off = gr.Button("Switch off", variant="stop", scale=0, min_width=160, elem_id="switch-off")
            json_file = gr.DownloadButton("JSON", scale=0, min_width=90)
            csv_file = gr.DownloadButton("CSV", scale=0, min_width=90)
        status = status_line("expert-status")
        header = gr.HTML(pages.NO_EXPERT["header"], elem_id="expert-header")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("#### Top contexts (shade = weight; hover a token for its value)")
                contexts = gr.HTML(elem_id="expert-contexts")
                gr.Markdown("#### Samples across its activations (top x% = share of activations at least this heavy)")
                samples = gr.HTML()
            with gr.Column(scale=2):
                histogram = gr.Plot(show_label=False)
                domains = gr.Plot(show_label=False)
                gr.Markdown("#### Tokens it fires on most")
                top_tokens = gr.HTML()
                gr.Markdown("#### Tokens it promotes / suppresses")
                effects = gr.HTML()
        siblings = clickable()
        gr.Markdown("#### Similar experts (closest label and contexts)")
        similar = clickable()

    by_part = {
        "header": header,
        "contexts": contexts,
        "samples": samples,
        "histogram": histogram,
        "domains": domains,
        "top_tokens": top_tokens,
        "siblings": siblings,
        "json": json_file,
        "csv": csv_file,
    }
    tab = ExpertTab(spec, status, switch_off, opened, tuple(by_part[p] for p in PARTS), effects, similar)

    open_on(ctx, tab, open_button.click, lambda name: name, spec)
    open_on(ctx, tab, spec.submit, lambda name: name, spec)
    open_on_clicks(ctx, tab, (siblings, similar))

    def from_deep_link(request: gr.Request):
        return request.query_params.get("expert", "") if request else ""

    open_on(ctx, tab, ctx.blocks.load, from_deep_link)
    return tab


def open_on(
    ctx: Context,
    tab: ExpertTab,
    trigger,
    name_of: Callable[..., str],
    inputs=None,
    status: gr.HTML | None = None,
) -> None:
    """Open the expert named by name_of(*inputs) when `trigger` fires, then its slower extras.

    A failure is said in `status`, the status line beside the control that asked (default: the expert page's,
    which then shows the request as typed and no stale page); a status elsewhere leaves the page as it was.
    """
    elsewhere = status is not None and status is not tab.status
    outputs = [ctx.tabs, tab.spec, tab.opened, *tab.parts, tab.status] + ([status] if elsewhere else [])

    @functools.wraps(name_of)  # Gradio reads name_of's signature: it passes gr.Request / gr.EventData by type
    def show(*values):
        name = name_of(*values)
        if not name:
            return [gr.skip()] * len(outputs)
        view = pages.expert_view(ctx.explorer, name)
        if elsewhere and isinstance(view["status"], messages.ErrorNotice):
            return [gr.skip()] * (len(outputs) - 1) + [view["status"]]
        shown = [gr.Tabs(selected="expert"), view["name"] or name, view["name"], *(view[p] for p in PARTS)]
        return shown + [view["status"]] + ([""] if elsewhere else [])

    opened = trigger(show, inputs, outputs, **ctx.index_events)
    opened.then(None, tab.spec, None, js=url_js("expert"))  # a gr.State never reaches the browser: the box does
    opened.then(
        lambda name: pages.expert_extras(ctx.explorer, name), tab.opened, [tab.effects, tab.similar], **ctx.model_events
    )


def open_on_clicks(ctx: Context, tab: ExpertTab, clickables) -> None:
    """A click on an expert (a link, a table row, a cell of the E x E map) in any of `clickables` opens it."""

    def from_click(evt: gr.EventData):
        return pages.spec_from_event(evt._data)

    for element in clickables:
        open_on(ctx, tab, element.select, from_click)
