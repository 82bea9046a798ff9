"""The first minute: what an expert is (a few sentences and the E x E picture), the "Start here" presets, and what
a preset's run shows (its perplexity ×N on its own text and ×M on its control, beside the side-by-side generation).

The Overview opens with these, the Switch-off tab repeats the presets, and talk mode (explorer.web.talk) is made of
the same pieces. Preset texts come from a data file (explorer.app.presets), so they are escaped like user input.
"""

from collections.abc import Sequence

import gradio as gr

from explorer.app.explorer import Explorer
from explorer.app.generation import AblationEffect
from explorer.app.presets import Preset
from explorer.model.naming import group_name
from explorer.web import html, messages, pages
from explorer.web.messages import reports_errors

# A click on a preset button reports which one (a `click` event with {preset: n}) and marks it as the one on show;
# nothing else in the row reacts.
PRESET_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-preset]');
  if (!button) return;
  element.querySelectorAll('button[data-preset]').forEach((b) => b.classList.toggle('preset-active', b === button));
  trigger('click', {preset: +button.dataset.preset});
});
"""
RUN_MARK = '<span class="preset-run" aria-hidden="true"> ▶</span>'  # says that a click runs it
CONTROL_SHOWN_CHARS = 70  # the control text is quoted this far under its figure


# -- what an expert is ---------------------------------------------------------------------------------------
def expert_grid_svg(rows: Sequence[int] = (2, 5), columns: Sequence[int] = (1, 6), n: int = 9) -> str:
    """The E x E picture: an n x n grid standing for E x E experts; the router's rows and columns are tinted,
    the experts where they cross (the ones that fire) are solid."""
    cell, left, top = 21, 70, 42
    size = n * cell
    shapes = []
    for i in rows:
        shapes.append(f'<rect class="pick-row" x="{left}" y="{top + i * cell}" width="{size}" height="{cell}"/>')
    for j in columns:
        shapes.append(f'<rect class="pick-col" x="{left + j * cell}" y="{top}" width="{cell}" height="{size}"/>')
    for k in range(n + 1):
        shapes.append(f'<line x1="{left}" y1="{top + k * cell}" x2="{left + size}" y2="{top + k * cell}"/>')
        shapes.append(f'<line x1="{left + k * cell}" y1="{top}" x2="{left + k * cell}" y2="{top + size}"/>')
    for i in rows:
        for j in columns:
            x, y = left + j * cell + 2, top + i * cell + 2
            shapes.append(f'<rect class="fires" x="{x}" y="{y}" width="{cell - 4}" height="{cell - 4}" rx="2"/>')
    labels = (
        f'<text x="{left + size / 2}" y="14" text-anchor="middle">columns j (router, side 2)</text>'
        f'<text x="{left + size / 2}" y="30" text-anchor="middle" class="svg-hint">picks a few</text>'
        f'<text x="{left - 8}" y="{top + size / 2 - 8}" text-anchor="end">rows i</text>'
        f'<text x="{left - 8}" y="{top + size / 2 + 8}" text-anchor="end" class="svg-hint">(side 1)</text>'
    )
    width, height = left + size + 24, top + size + 30
    labels += (
        f'<text x="{width / 2}" y="{top + size + 20}" text-anchor="middle" class="svg-hint">'
        "■ fire: picked row × picked column</text>"
    )
    return (
        f'<svg class="expert-grid" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f"<title>E x E experts: the router picks rows and columns, the experts where they cross fire</title>"
        f"{''.join(shapes)}{labels}</svg>"
    )


def what_is_an_expert_html(explorer: Explorer) -> str:
    """Two or three sentences and the E x E picture, with this model's numbers and a real expert as the example."""
    shape = explorer.shape
    if shape is None:
        return ""
    E, example = shape.experts_per_side, explorer.examples
    ref = explorer.expert_ref(example.expert)
    groups = ", ".join(f"{group_name(g)} = layers {shape.layer_span(g)}" for g in range(shape.num_groups))
    return (
        f'<div class="intro" id="what-is-an-expert">{expert_grid_svg()}<div class="intro-text">'
        "<h2>What is an expert?</h2>"
        f"<p>In a Monet model each layer's MLP is <b>{E} × {E} = {E * E:,} tiny experts</b>. For every token the "
        "router picks a few rows <i>i</i> and a few columns <i>j</i>; only the experts (<i>i</i>, <i>j</i>) where "
        "they cross do any work, each with an exact weight.</p>"
        "<p><b>Switching an expert off is exact too</b>: its weight becomes zero and nothing else changes, so you "
        "can see what the model loses without it.</p>"
        f'<p class="hint">Layers share a router in routing groups ({html.esc(groups)}), so experts are named by '
        f"group: {html.expert_link(example.expert)} = {html.esc(example.pair)} is row {ref.i}, column {ref.j} of "
        f"{html.esc(group_name(0))}, its busiest expert (click to open it).</p>"
        "</div></div>"
    )


# -- the presets ------------------------------------------------------------------------------------------------
def presets_html(presets: Sequence[Preset], keys: bool = False, lead: str = "") -> str:
    """One button per preset: its title and its line of why (keys: its keyboard number too, for talk mode),
    after a few words of `lead` when given."""
    if not presets:
        return ""
    buttons = [f'<span class="presets-lead">{html.esc(lead)}</span>'] if lead else []
    for number, preset in enumerate(presets):
        key = f'<span class="preset-key">{number + 1}</span> ' if keys else ""
        buttons.append(
            f'<button class="preset" type="button" data-preset="{number}" '
            f'title="{html.esc(f"{preset.why} (switches off {preset.ablate})")}">'
            f'<span class="preset-title">{key}{html.esc(preset.title)}{RUN_MARK}</span>'
            f'<span class="preset-why">{html.esc(preset.why)}</span></button>'
        )
    return f'<div class="presets">{"".join(buttons)}</div>'


def preset_buttons(presets: Sequence[Preset], elem_id: str, keys: bool = False, lead: str = "") -> gr.HTML:
    """The presets row as a component: its `click` event carries {preset: n} (see preset_of)."""
    return gr.HTML(presets_html(presets, keys, lead), js_on_load=PRESET_JS, elem_id=elem_id)


def preset_of(presets: Sequence[Preset], data: dict | None) -> int | None:
    """The preset number a click on a presets row names, or None (a click between the buttons)."""
    number = (data or {}).get("preset")
    return int(number) if isinstance(number, int | float) and 0 <= number < len(presets) else None


def _ratio(effect: AblationEffect) -> float:
    return effect.ablated_perplexity / effect.baseline_perplexity if effect.baseline_perplexity > 0 else float("nan")


def _times(ratio: float) -> str:
    return f"×{ratio:.1f}" if ratio >= 10 else f"×{ratio:.2f}"


def preset_effect_html(preset: Preset, target: AblationEffect, control: AblationEffect, summary: str) -> str:
    """The preset's effect in two numbers: perplexity ×N on its own text, ×M on its control text."""
    on_target, on_control = _ratio(target), _ratio(control)
    quoted = (
        preset.control if len(preset.control) <= CONTROL_SHOWN_CHARS else preset.control[:CONTROL_SHOWN_CHARS] + "…"
    )
    return (
        '<div class="preset-effect">'
        f'<div class="figure figure-strong"><span class="figure-value ratio-target" data-ratio="{on_target:.4f}">'
        f'{_times(on_target)}</span><span class="figure-label">perplexity on the preset\'s text '
        f"({target.baseline_perplexity:,.1f} → {target.ablated_perplexity:,.1f})</span></div>"
        f'<div class="figure"><span class="figure-value ratio-control" data-ratio="{on_control:.4f}">'
        f'{_times(on_control)}</span><span class="figure-label">on a control text: “{html.esc(quoted)}”</span></div>'
        f'<div class="figure-note">switched off: {html.esc(preset.ablate)} · {html.esc(summary)}</div></div>'
    )


@reports_errors("", "", "", "", None)
def preset_run_view(explorer: Explorer, preset: Preset, max_new_tokens: float, temperature: float, seed: float):
    """A preset's run: its effect on its text and its control, then the side-by-side generation from its prompt.

    Yields the preset's effect, the two panels, the continuation's effect, the run (pages.GenerationRun), then the
    status line: the outputs of pages.generate_view with the preset's effect in front.
    """
    waiting = (
        html.continuation_html("Plain model", preset.prompt, "", False, "baseline"),
        html.continuation_html("Experts switched off", preset.prompt, "", False, "ablated"),
    )
    started = pages.GenerationRun(preset.prompt, "", "", False, preset.ablate)  # so that Stop, pressed now, says so
    yield "", *waiting, "", started, messages.status(f"{preset.title}: measuring its text and its control…")
    target = explorer.measure_text(preset.prompt, preset.ablate)
    control = explorer.measure_text(preset.control, preset.ablate)
    effect = preset_effect_html(preset, target.effect, control.effect, target.summary)
    for update in pages.generate_view(explorer, preset.prompt, preset.ablate, max_new_tokens, temperature, seed):
        yield effect, *update
