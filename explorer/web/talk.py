"""Talk mode (`?talk=1`): the demo presets as big buttons, the plain and the ablated model side by side at full width
in large type, the preset's perplexity ×N on its text and ×M on its control, and nothing else; keys run and stop
(said on screen). Made for a projector at 1280 x 720.

The page is built once for both modes: TALK_HEAD (in the page's <head>, so before anything is drawn) marks <html>
with the class talk-mode when the address asks for it, and assets/style.css then shows the talk column instead of
the header and the tabs. The same script binds the keys: 1-9 run that preset, Esc stops.
"""

from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from explorer.app.presets import Preset
from explorer.web import first_minute, html, messages, pages
from explorer.web.tabs.common import Context

TALK_HEAD = """<script>
(() => {
  const talk = new URLSearchParams(window.location.search).get('talk');
  if (!talk || talk === '0') return;
  document.documentElement.classList.add('talk-mode');
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest('input, textarea, select, [contenteditable]')) return;
    const press = (selector) => {
      const target = document.querySelector(selector);
      if (target) { event.preventDefault(); target.click(); }
    };
    if (event.key === 'Escape') press('#talk-stop');
    else if (/^[1-9]$/.test(event.key)) press(`#talk-presets button[data-preset="${+event.key - 1}"]`);
  });
})();
</script>"""


def keys_text(presets: Sequence[Preset]) -> str:
    count = len(presets)
    run = "1" if count == 1 else f"1–{count}"
    return f"Keys: {run} run a preset · Esc stops"


def bar_html(model_id: str, presets: Sequence[Preset]) -> str:
    keys = f'<span class="talk-keys">{html.esc(keys_text(presets))}</span>' if presets else ""
    model_name = Path(model_id).name or model_id  # a folder's name or a hub id's, never a machine path
    return (
        f'<div class="talk-bar"><span class="talk-title">Monet Explorer</span>'
        f'<span class="talk-model">{html.esc(model_name)} · switch experts off while it writes</span>{keys}</div>'
    )


def empty_panels() -> tuple[str, str]:
    return (
        html.continuation_html("Plain model", "", "", True, "baseline"),
        html.continuation_html("Experts switched off", "", "", True, "ablated"),
    )


def build(ctx: Context, presets: Sequence[Preset]) -> None:
    """The talk column: hidden by the style sheet unless <html> has the class talk-mode."""
    explorer = ctx.explorer
    max_new_tokens = min(40, explorer.limits.max_new_tokens)
    with gr.Column(elem_id="talk"):
        with gr.Row(elem_id="talk-top"):
            gr.HTML(bar_html(explorer.model_id, presets), scale=5)
            stop = gr.Button("Stop (Esc)", elem_id="talk-stop", size="sm", scale=0, min_width=110)
        rows = first_minute.preset_buttons(presets, "talk-presets", keys=True)
        hint = (
            f"Click a preset or press its number: the model writes with and without its experts. {keys_text(presets)}."
            if presets
            else "No demo presets are loaded: start the app with --presets FILE (see assets/presets.json)."
        )
        status = gr.HTML(  # a status line that starts with the hint; emptied (hidden) once a run is done
            messages.status(hint, "info" if presets else "warning"), elem_id="talk-status", elem_classes=["status-line"]
        )
        effect = gr.HTML(elem_id="talk-effect")
        baseline_panel, ablated_panel = empty_panels()
        with gr.Row(equal_height=True):
            baseline = gr.HTML(baseline_panel, elem_id="talk-baseline")
            ablated = gr.HTML(ablated_panel, elem_id="talk-ablated")
        run = gr.State()  # the generation on show (pages.GenerationRun), for Stop

    def run_preset(evt: gr.EventData):
        number = first_minute.preset_of(presets, evt._data)
        if number is None:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        view = first_minute.preset_run_view(explorer, presets[number], max_new_tokens, 0.0, 0)
        for preset_effect, baseline_html, ablated_html, _continuation_effect, shown, line in view:
            if shown is not None and shown.finished and not isinstance(line, messages.ErrorNotice):
                line = ""  # done: the room reads the panels (the status would point at an effect not shown here)
            yield preset_effect, baseline_html, ablated_html, shown, line

    def stopped(shown):
        baseline_html, ablated_html, _continuation_effect, line = pages.stopped_view(shown)
        if isinstance(line, str):  # stopped mid-run (not a skip): say so in the room's words
            line = messages.status(f"Stopped: the texts are as far as they got. {keys_text(presets)}.", "warning")
        return baseline_html, ablated_html, line

    running = rows.click(run_preset, None, [effect, baseline, ablated, run, status], **ctx.model_events)
    stop.click(None, None, None, cancels=[running]).then(
        stopped, run, [baseline, ablated, status], api_visibility="private"
    )
