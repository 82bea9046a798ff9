"""The Expert tab: one expert's page (contexts, samples, histogram, domains, tokens, siblings, similar experts, its
weight on a text of your own), opened from anywhere: its own box, a deep link `?expert=G1/17`, or a click on any
expert in the page (open_on).

Every open scrolls to the expert's header and adds a browser history entry (`?expert=...`), so Back returns to
the previous expert, or to the tab the reader came from (HISTORY_JS).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from explorer.web import messages, pages
from explorer.web.tabs.common import PROGRESS, Context, clickable, status_line

# The parts of the page that expert_view fills (its keys), in the order of ExpertTab.parts.
PARTS = tuple(part for part in pages.NO_EXPERT if part != "name")

# After an open: a history entry for it (pushed, or replacing the entry for a deep link), then its header in view.
# `name` is the expert on show ("" after a failed open: the address and the scroll stay).
OPENED_JS = """(name) => {{
  if (!name) return name;
  const params = new URLSearchParams(window.location.search);
  if (params.get('expert') !== name) {{
    params.set('expert', name);
    const query = params.toString().replace(/%2F/g, '/').replace(/%2C/g, ',').replace(/%3A/g, ':');
    history.{method}({{...(history.state || {{}}), expert: name}}, '', window.location.pathname + '?' + query);
  }}
  const header = document.getElementById('expert-header');
  if (header) header.scrollIntoView({{block: 'start'}});
  return name;
}}"""

# Once per page: Back and Forward reopen the expert of the entry (typed into the box, then Open), or go back to
# the tab the entry was left from (each entry remembers the last tab chosen on it).
HISTORY_JS = """() => {
  if (window.monetHistory) return;
  window.monetHistory = true;
  document.addEventListener('click', (event) => {
    const tab = event.target.closest('[role=tab]');
    if (tab) history.replaceState({...(history.state || {}), tab: tab.textContent.trim()}, '');
  }, true);
  window.addEventListener('popstate', (event) => {
    const name = new URLSearchParams(window.location.search).get('expert');
    if (name) {
      const box = document.querySelector('#expert-spec textarea');
      box.value = name;
      box.dispatchEvent(new Event('input', {bubbles: true}));
      setTimeout(() => document.getElementById('expert-open').click(), 0);
      return;
    }
    const tab = (event.state && event.state.tab) || 'Overview';
    const button = [...document.querySelectorAll('[role=tab]')].find((b) => b.textContent.trim() === tab);
    if (button) button.click();
  });
}"""


@dataclass(frozen=True)
class ExpertTab:
    spec: gr.Textbox
    status: gr.HTML
    switch_off: gr.Button
    opened: gr.Textbox  # the name of the expert on show ("" when none); hidden, but in the page for OPENED_JS
    parts: tuple  # the components of PARTS
    effects: gr.HTML
    similar: gr.HTML


def build(ctx: Context) -> ExpertTab:
    with gr.Tab("Expert", id="expert"):
        opened = gr.Textbox("", visible="hidden", elem_id="expert-opened")
        with gr.Row(equal_height=True):
            spec = gr.Textbox(
                show_label=False,
                placeholder=ctx.explorer.examples.expert_placeholder(),  # an expert of this model
                scale=3,
                elem_id="expert-spec",
                container=False,
            )
            open_button = gr.Button("Open", scale=0, min_width=90, elem_id="expert-open")
            switch_off = gr.Button("Switch off", variant="stop", scale=0, min_width=160, elem_id="switch-off")
            json_file = gr.DownloadButton("JSON", scale=0, min_width=90)
            csv_file = gr.DownloadButton("CSV", scale=0, min_width=90)
        status = status_line("expert-status")
        header = gr.HTML(pages.NO_EXPERT["header"], elem_id="expert-header")
        with gr.Accordion("Test this expert on your own text: its weight at every token", open=False):
            with gr.Row(equal_height=True):
                test_text = gr.Textbox(
                    show_label=False,
                    lines=2,
                    scale=4,
                    elem_id="expert-test-text",
                    placeholder="paste a text: each token is shaded by this expert's exact weight there",
                )
                test_button = gr.Button("Test", scale=0, min_width=90, elem_id="expert-test")
            test_status = status_line("expert-test-status")
            test_result = gr.HTML(elem_id="expert-test-result")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("#### Top contexts (shade = weight; hover a token for its value)")
                contexts = gr.HTML(elem_id="expert-contexts")
                gr.Markdown("#### Samples across its activations (top x% = share of activations at least this heavy)")
                samples = gr.HTML(elem_id="expert-samples")
            with gr.Column(scale=2):
                histogram = gr.Plot(show_label=False)
                domains = gr.Plot(show_label=False)
                gr.Markdown("#### Tokens it fires on most")
                top_tokens = gr.HTML(elem_id="expert-top-tokens")
                gr.Markdown("#### Tokens it promotes / suppresses")
                effects = gr.HTML(elem_id="expert-effects")
        siblings = clickable(elem_id="expert-siblings")
        gr.Markdown("#### Similar experts (closest label and contexts)")
        similar = clickable(elem_id="expert-similar")

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

    open_on(ctx, tab, ctx.blocks.load, from_deep_link, history="replaceState")
    ctx.blocks.load(None, None, None, js=HISTORY_JS)

    def test_on_text(name, text, progress=PROGRESS):
        progress(0, desc="Running the model on your text…")
        return pages.expert_test_view(ctx.explorer, name, text)

    gr.on(
        [test_button.click, test_text.submit],
        test_on_text,
        [opened, test_text],
        [test_result, test_status],
        **ctx.model_events,
    )
    opened.change(lambda: ("", ""), None, [test_result, test_status], api_visibility="private", queue=False)
    return tab


def open_on(
    ctx: Context,
    tab: ExpertTab,
    trigger,
    name_of: Callable[..., str],
    inputs=None,
    status: gr.HTML | None = None,
    history: str = "pushState",
) -> None:
    """Open the expert named by name_of(*inputs) when `trigger` fires, then its slower extras.

    A failure is said in `status`, the status line beside the control that asked (default: the expert page's,
    which then shows the request as typed and no stale page); a status elsewhere leaves the page as it was.
    history: how the open enters the browser's history (pushState: Back returns here; replaceState: a deep link).
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

    def extras(name, progress=PROGRESS):
        if name:
            progress(0, desc="Reading what it promotes (a model pass) and its neighbours…")
        return pages.expert_extras(ctx.explorer, name)

    opened = trigger(show, inputs, outputs, **ctx.index_events)
    opened.then(None, tab.opened, None, js=OPENED_JS.format(method=history))
    opened.then(extras, tab.opened, [tab.effects, tab.similar], **ctx.model_events)


def open_on_clicks(ctx: Context, tab: ExpertTab, clickables) -> None:
    """A click on an expert (a link, a table row, a cell of the E x E map) in any of `clickables` opens it."""

    def from_click(evt: gr.EventData):
        return pages.spec_from_event(evt._data)

    for element in clickables:
        open_on(ctx, tab, element.select, from_click)
