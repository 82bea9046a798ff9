"""The Inspector tab: the active experts of every token of a text (click a token to list them, an expert to open
it), and a button that switches off the experts firing most on the text (see switch_off.connect)."""

from dataclasses import dataclass

import gradio as gr

from explorer.app.inspector import ACTIVE_WEIGHT
from explorer.web import pages
from explorer.web.tabs.common import QUIET_EVENT, Context, clickable, status_line


@dataclass(frozen=True)
class InspectorTab:
    text: gr.Textbox
    status: gr.HTML
    firing_off: gr.Button
    token_experts: gr.HTML  # a click on an expert opens it


def build(ctx: Context) -> InspectorTab:
    explorer = ctx.explorer
    with gr.Tab("Inspector", id="inspect"):
        inspection = gr.State()
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
            "Shade = number of active experts at the token. **Click a token** to list them; click an expert to open it."
        )
        tokens = clickable(elem_id="inspect-tokens")
        token_experts = clickable(elem_id="token-experts")

    gr.on(
        [inspect_button.click, text.submit],
        lambda value, weight: pages.inspect_view(explorer, value, weight),
        [text, threshold],
        [inspection, tokens, token_experts, status],
        **ctx.model_events,
    )

    def pick_token(state, evt: gr.EventData):
        if evt._data.get("kind") != "token":
            return gr.skip(), gr.skip(), gr.skip()
        return pages.token_view(explorer, state, int(evt._data["value"]))

    tokens.select(pick_token, inspection, [tokens, token_experts, status], api_visibility="private")
    gr.on(
        [text.input, threshold.input],
        lambda state: pages.stale_status(
            state, "The text or threshold changed since the analysis below: press Inspect."
        ),
        inspection,
        status,
        **QUIET_EVENT,
    )
    return InspectorTab(text, status, firing_off, token_experts)
