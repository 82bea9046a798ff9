"""The Inspector tab: the active experts of every token of a text (click a token to list them, an expert to open
it), why the model expects the token after it (the experts that pushed that logit up and down), and a button that
switches off the experts firing most on the text (see switch_off.connect). It shows its example text analysed the
first time it is opened."""

from dataclasses import dataclass

import gradio as gr

from explorer.app.inspector import ACTIVE_WEIGHT
from explorer.web import pages
from explorer.web.tabs.common import PROGRESS, QUIET_EVENT, Context, clickable, status_line


@dataclass(frozen=True)
class InspectorTab:
    text: gr.Textbox
    status: gr.HTML
    firing_off: gr.Button
    token_experts: gr.HTML  # a click on an expert opens it
    token_why: gr.HTML  # a click on an expert opens it


def build(ctx: Context) -> InspectorTab:
    explorer = ctx.explorer
    with gr.Tab("Inspector", id="inspect") as tab:
        inspection = gr.State()
        selected = gr.State()  # the token clicked last (a State outside a Tab would become a tab of its own)
        with gr.Row(equal_height=True):
            text = gr.Textbox(
                label="text", lines=3, scale=4, elem_id="inspect-text", value="City and County of San Francisco"
            )
            with gr.Column(scale=1):
                threshold = gr.Slider(0.001, 0.5, value=ACTIVE_WEIGHT, step=0.001, label="active when weight ≥")
                inspect_button = gr.Button("Inspect", variant="primary", elem_id="inspect-button")
                firing_off = gr.Button("Switch off the 20 experts firing most on it", size="sm", elem_id="firing-off")
        status = status_line("inspect-status")
        gr.Markdown(
            "Shade = number of active experts at the token. **Click a token** to list them and to see which experts "
            "pushed the token after it; click an expert to open it."
        )
        tokens = clickable(elem_id="inspect-tokens")
        with gr.Row():
            with gr.Column(scale=3):
                token_experts = clickable(elem_id="token-experts")
            with gr.Column(scale=2):
                token_why = clickable(elem_id="token-why")

    def run_inspection(value, weight, progress=PROGRESS):
        progress(0, desc="Running the model on the text…")
        return pages.inspect_view(explorer, value, weight)

    def why_busiest(state, progress=PROGRESS):
        if state is not None:
            progress(0, desc="Reading which experts pushed the next token…")
        return pages.why_view(explorer, state, None)

    inspected = gr.on(
        [inspect_button.click, text.submit],
        run_inspection,
        [text, threshold],
        [inspection, tokens, token_experts, status],
        **ctx.model_events,
    )
    inspected.then(why_busiest, inspection, token_why, **ctx.model_events)

    # The first time the tab opens, its example is analysed (a page load that never visits it costs nothing).
    def first_look(state, value, weight, progress=PROGRESS):
        if state is not None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return run_inspection(value, weight, progress)

    def why_if_missing(state, shown):
        return gr.skip() if shown else pages.why_view(explorer, state, None)

    tab.select(
        first_look, [inspection, text, threshold], [inspection, tokens, token_experts, status], **ctx.model_events
    ).then(why_if_missing, [inspection, token_why], token_why, **ctx.model_events)

    def pick_token(state, evt: gr.EventData):
        if evt._data.get("kind") != "token":
            return gr.skip(), gr.skip(), gr.skip(), None
        t = int(evt._data["value"])
        return *pages.token_view(explorer, state, t), t

    def why_selected(state, t, progress=PROGRESS):
        if t is None:
            return gr.skip()
        progress(0, desc="Reading which experts pushed the next token…")
        return pages.why_view(explorer, state, t)

    tokens.select(pick_token, inspection, [tokens, token_experts, status, selected], api_visibility="private").then(
        why_selected, [inspection, selected], token_why, **ctx.model_events
    )
    gr.on(
        [text.input, threshold.input],
        lambda state: pages.stale_status(
            state, "The text or threshold changed since the analysis below: press Inspect."
        ),
        inspection,
        status,
        **QUIET_EVENT,
    )
    return InspectorTab(text, status, firing_off, token_experts, token_why)
