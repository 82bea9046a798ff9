"""Data to HTML: token highlighting, expert links and tables, the E x E map, the generation panels.

Every piece of text from a corpus, a prompt or a model goes through `html.escape`. Clickable things
carry data attributes that the page's small script (ui.CLICK_JS) turns into events: `data-expert`
opens an expert, `data-token` selects a token, a click on the E x E map opens the cell under it.
Expert links are also real links (`?expert=G1/17`), so they can be copied or opened in a new tab.
Shades are CSS variables (`--w` in 0..1) so the colours live in assets/style.css.
"""

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image

# How invisible characters are drawn is decided once, beside the labels the index writer makes with it.
from explorer.index.labels import NEWLINE, visible  # noqa: F401 (NEWLINE: html.NEWLINE for callers)


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def notice(text: str, kind: str = "info") -> str:
    """A status line: kind is info, warning or error."""
    return f'<div class="notice notice-{kind}">{esc(text)}</div>'


def _shade(value: float, scale: float) -> str:
    return f"{min(1.0, max(0.0, value / scale)) if scale > 0 else 0.0:.3f}"


def _piece(text: str, break_lines: bool) -> str:
    if text == "":  # the first bytes of a character that the next token completes
        return '<span class="tok-partial" title="the first bytes of a character the next token completes"></span>'
    shown = esc(visible(text, spaces=False))
    if break_lines and "\n" in text:
        shown += "<br>"
    return shown


def tokens_html(
    pieces: Sequence[str],
    weights: Sequence[float],
    *,
    scale: float | None = None,
    focus: int | None = None,
    label: Callable[[int, float], str] = lambda t, w: f"weight {w:.4f}",
    clickable: bool = False,
    selected: int | None = None,
    break_lines: bool = False,
) -> str:
    """Tokens shaded by weight (shade = weight / scale); hovering shows `label(position, weight)`."""
    scale = scale if scale is not None else max([*weights, 1e-9])
    spans = []
    for t, (piece, weight) in enumerate(zip(pieces, weights, strict=True)):
        classes = ["tok"] + (["tok-focus"] if t == focus else []) + (["tok-selected"] if t == selected else [])
        data = f' data-token="{t}"' if clickable else ""
        spans.append(
            f'<span class="{" ".join(classes)}" style="--w:{_shade(weight, scale)}" '
            f'title="{esc(label(t, weight))}"{data}>{_piece(piece, break_lines)}</span>'
        )
    return f'<span class="tokens">{"".join(spans)}</span>'


def delta_tokens_html(pieces: Sequence[str], deltas: Sequence[float], scale: float = 2.0) -> str:
    """Tokens shaded by Δ log p (ablated - baseline): red where the ablated model finds them less likely."""
    spans = []
    for piece, delta in zip(pieces, deltas, strict=True):
        kind = "down" if delta < 0 else "up"
        spans.append(
            f'<span class="tok tok-{kind}" style="--w:{_shade(abs(delta), scale)}" '
            f'title="Δ log p = {delta:+.3f}">{_piece(piece, False)}</span>'
        )
    return f'<span class="tokens">{"".join(spans)}</span>'


def expert_link(name: str, text: str | None = None) -> str:
    return (
        f'<a class="expert-link" href="?expert={quote(name, safe="/")}" data-expert="{esc(name)}">'
        f"{esc(text or name)}</a>"
    )


def table_html(
    rows: Sequence[dict],
    columns: Sequence[tuple[str, str, Callable]],
    empty: str = "Nothing found.",
    expert_key: str = "name",
) -> str:
    """A table whose rows open their expert when clicked. columns: (key, header, format) with format(value)."""
    if not rows:
        return notice(empty)
    head = "".join(f"<th>{esc(header)}</th>" for _, header, _ in columns)
    body = []
    for row in rows:
        cells = "".join(
            f"<td>{expert_link(row[key]) if key == expert_key else esc(visible(fmt(row[key]), spaces=False))}</td>"
            for key, _, fmt in columns
        )
        body.append(f'<tr data-expert="{esc(row[expert_key])}">{cells}</tr>')
    return f'<table class="expert-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def percent(value: float, digits: int = 3) -> str:
    """A share as a percentage with `digits` significant digits: 24.7%, 0.306%, 0.00254% (never "0.000%")."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.0%}"
    points = 100 * value
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(points))))
    return f"{points:.{decimals}f}%"


def chip(text: str, value: str = "", title: str = "") -> str:
    """A token shown alone (drawn by `visible`), with an optional value beside it."""
    extra = f'<span class="chip-value">{esc(value)}</span>' if value else ""
    title_attribute = f' title="{esc(title)}"' if title else ""
    return f'<span class="chip"{title_attribute}><span class="chip-text">{esc(visible(text))}</span>{extra}</span>'


def expert_label(label: str) -> str:
    """An expert's label beside its id: invisible characters drawn, escaped ("" when it has none)."""
    return f'<span class="expert-label-inline">{esc(visible(label, spaces=False))}</span>' if label else ""


def context_rows_html(
    examples, show_quantile: bool = False, pieces: Sequence[Sequence[str]] | None = None, shown: int | None = None
) -> str:
    """Contexts of an expert (explorer.index.Example): weight, highlighted window, domain and source.

    pieces: the display text of each example's tokens (default: example.tokens); shown: how many rows are
    open, the rest behind a "show all" control (default: all open).
    """
    if not examples:
        return notice("No stored contexts for this expert.")
    scale = max(max(e.weights, default=0) for e in examples) or 1.0
    rows = []
    for k, example in enumerate(examples):
        where = " · ".join(esc(v) for v in (example.domain, example.source_id) if v)
        badge = f"top {example.quantile:.0%}" if show_quantile and example.quantile is not None else ""
        tokens = pieces[k] if pieces is not None else example.tokens
        rows.append(
            f'<div class="context"><span class="context-weight" title="weight at the highlighted token">'
            f"{example.weight:.3f}</span>"
            f"{tokens_html(tokens, example.weights, scale=scale, focus=example.highlight)}"
            f'<span class="context-source">{esc(badge)}{" · " if badge and where else ""}{where}</span></div>'
        )
    if shown is None or len(rows) <= shown:
        return f'<div class="contexts">{"".join(rows)}</div>'
    return (
        f'<div class="contexts">{"".join(rows[:shown])}</div>'
        f'<details class="more-contexts"><summary>Show all {len(rows)} top contexts</summary>'
        f'<div class="contexts">{"".join(rows[shown:])}</div></details>'
    )


CAUSAL_HELP = (
    "causal effect: the mean, over its top contexts, of KL(plain ‖ switched off) of the next-token distribution"
    " (nats), the model run on the tokens up to each context's highlighted token, plain and with this expert"
    " switched off in every layer of its group"
)
COHERENCE_HELP = (
    "coherence: mean pairwise cosine similarity of the sentence embeddings of its top contexts, minus the same"
    " for random top contexts of the index (0 = as alike as chance)"
)


def expert_scores_html(scores, note: str) -> str:
    """An expert's causal effect and coherence (explorer.index.scores.ExpertScores) with their percentiles among the
    scored experts; `note` says why there are none when `scores` is None ("not scored")."""
    if scores is None:
        return f'<div class="expert-facts expert-scores">{esc(note)}</div>'
    causal = (
        f"causal effect {scores.causal_effect:.3g} nats: higher than {scores.causal_percentile:.0%} of the"
        f" {scores.scored_experts:,} scored experts (it had weight in {scores.contexts_active} of its"
        f" {scores.contexts_scored} contexts)"
    )
    if scores.coherence is None:
        coherence = "coherence not measured for this index"
    else:
        coherence = f"coherence {scores.coherence:+.3f}: higher than {scores.coherence_percentile:.0%}"
    return (
        f'<div class="expert-facts expert-scores"><span title="{esc(CAUSAL_HELP)}">{esc(causal)}</span> · '
        f'<span title="{esc(COHERENCE_HELP)}">{esc(coherence)}</span></div>'
    )


def ties_at_top(weights: Sequence[float], kept: int, tolerance: float = 1e-6) -> str:
    """A notice when several top contexts share the maximum weight ("" when they do not).

    weights: the top contexts' weights, best first; kept: K, the most the index keeps per expert. When all K
    tie, more places may weigh as much: the notice says "at least".
    """
    if not weights:
        return ""
    ties = sum(1 for w in weights if weights[0] - w <= tolerance)
    if ties < 2:
        return ""
    count = f"At least {ties}" if ties == len(weights) and len(weights) >= kept else f"{ties}"
    return notice(
        f"{count} contexts tie at the maximum weight {weights[0]:.3f}: their order among themselves means nothing."
    )


# -- the E x E map ----------------------------------------------------------------------------------------
_RAMP = np.array([[255, 255, 204], [254, 217, 118], [253, 141, 60], [227, 26, 28], [128, 0, 38]], dtype=float)
_NEVER = np.array([238, 240, 243], dtype=np.uint8)
_LOOKUP = (
    np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_RAMP)), _RAMP[:, c]) for c in range(3)], axis=-1)
    .round()
    .astype(np.uint8)
)


def _colours(density: np.ndarray) -> np.ndarray:
    """[E, E] densities to RGB on a log scale (a 256-entry lookup table); never-active experts light grey."""
    active = density > 0
    rgb = np.empty((*density.shape, 3), dtype=np.uint8)
    rgb[:] = _NEVER
    if active.any():
        logs = np.log10(density[active])
        low, high = logs.min(), logs.max()
        level = np.round(255 * (logs - low) / (high - low)).astype(int) if high > low else np.full(logs.shape, 255)
        rgb[active] = _LOOKUP[level]
    return rgb


def _png_data_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _bars_svg(values: np.ndarray, vertical: bool, title: str) -> str:
    """A marginal: one bar per row (vertical=True, bars grow to the right) or per column (bars grow up)."""
    n, peak = len(values), max(float(values.max()), 1e-12)
    rects = []
    for k, value in enumerate(values):
        length = 100 * float(value) / peak
        if vertical:
            rects.append(f'<rect x="0" y="{k}" width="{length:.2f}" height="1"/>')
        else:
            rects.append(f'<rect x="{k}" y="{100 - length:.2f}" width="1" height="{length:.2f}"/>')
    box = f"0 0 100 {n}" if vertical else f"0 0 {n} 100"
    kind = "marginal-rows" if vertical else "marginal-cols"
    return (
        f'<svg class="{kind}" viewBox="{box}" preserveAspectRatio="none" role="img"><title>{esc(title)}</title>'
        f"{''.join(rects)}</svg>"
    )


def density_map_html(density: np.ndarray, group: int) -> str:
    """The group's E x E density map (row i, column j; log colour scale) with row and column marginals.

    Clicking a pixel opens expert (i, j); hovering names it (see ui.CLICK_JS).
    """
    E = density.shape[0]
    never = int((density == 0).sum())
    image = (
        f'<img class="expert-map" src="{_png_data_uri(_colours(density))}" data-e="{E}" data-group="{group}" '
        f'alt="density of every expert of G{group + 1}: row i, column j" draggable="false">'
    )
    columns = _bars_svg(density.mean(0), vertical=False, title="column j: mean density over its row entries i")
    rows = _bars_svg(density.mean(1), vertical=True, title="row i: mean density over its column entries j")
    legend = (
        f'<div class="map-legend"><span class="legend-ramp"></span> density, log scale · '
        f'<span class="legend-never"></span> never active ({never:,} of {E * E:,})</div>'
    )
    return (
        f'<div class="expert-map-box"><div class="map-corner">column j →</div>{columns}'
        f'<div class="map-side">row i ↓</div>{image}{rows}</div>'
        f'<div class="map-readout">hover the map: row i, column j; click a cell to open that expert</div>{legend}'
    )


# -- generation ---------------------------------------------------------------------------------------------
def continuation_html(title: str, prompt: str, continuation: str, finished: bool, kind: str) -> str:
    cursor = "" if finished else '<span class="cursor">\u258c</span>'
    return (
        f'<div class="panel panel-{kind}"><div class="panel-title">{esc(title)}</div>'
        f'<div class="panel-text"><span class="prompt-text">{esc(prompt)}</span>'
        f'<span class="continuation">{esc(continuation)}</span>{cursor}</div></div>'
    )


def effect_summary_html(baseline_ppl: float, ablated_ppl: float, removed_share: float, tokens: int, what: str) -> str:
    ratio = ablated_ppl / baseline_ppl if baseline_ppl > 0 else float("nan")
    return (
        '<div class="effect-summary">'
        f'<div class="figure"><span class="figure-value">{baseline_ppl:,.2f}</span>'
        f'<span class="figure-label">perplexity, plain model</span></div>'
        f'<div class="figure figure-strong"><span class="figure-value">{ablated_ppl:,.2f}</span>'
        f'<span class="figure-label">perplexity, experts switched off (×{ratio:.2f})</span></div>'
        f'<div class="figure"><span class="figure-value">{percent(removed_share)}</span>'
        f'<span class="figure-label">of all routing mass removed</span></div>'
        f'<div class="figure-note">over {tokens:,} tokens of {esc(what)}</div></div>'
    )
