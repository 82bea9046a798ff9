"""What the Switch-off tab shows for a switched-off set against its control, and for the concept builder.

`control_html` is the compact comparison under an effect (the chosen set and a like set of random experts, run on
the same text: per-token KL and Δ log p, their means and the specificity); `concept_view` is the concept panel's
handler. Every text that came from a user or a model is escaped (html.esc, messages.status) before it is HTML.
"""

from pathlib import Path

from explorer.app import concept as concept_rules
from explorer.app.concept import Concept, LossChange
from explorer.app.explorer import Explorer
from explorer.app.generation import SPECIFICITY_HELP, AblationEffect
from explorer.app.tokens import RequestRejected
from explorer.web import html, messages
from explorer.web.messages import reports_errors

CONCEPT_EXPERTS_SHOWN = 30
MAX_UPLOAD_BYTES = 1_000_000


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _times(value: float | None) -> str:
    if value is None:
        return "—"
    return f"×{value:,.0f}" if value >= 100 else f"×{value:.1f}" if value >= 10 else f"×{value:.2f}"


def control_html(effect: AblationEffect, pieces: list[str]) -> str:
    """The set against its control on the same tokens: a two-row table, the specificity, and per token (behind a
    "details" control) KL and Δ log p of both. Without a control, the note that says why."""
    control = effect.control
    if control is None:
        return html.notice(effect.control_note, "info") if effect.control_note else ""
    rows = [
        ("switched-off set", control.control.experts, control.control.set_density, effect.removed_mass_share,
         effect.kl, effect.deltas),
        ("control: like experts at random", control.control.experts, control.control.control_density,
         control.removed_mass_share, control.kl, control.deltas),
    ]  # fmt: skip
    head = "".join(
        f"<th>{html.esc(name)}</th>"
        for name in ("", "experts", "mean density", "routing mass removed", "mean KL (nats)", "mean Δ log p")
    )
    body = "".join(
        f"<tr><td>{html.esc(name)}</td><td>{experts:,}</td><td>{html.percent(density)}</td>"
        f"<td>{html.percent(mass)}</td><td>{_mean(kl):.4f}</td><td>{_mean(deltas):+.4f}</td></tr>"
        for name, experts, density, mass, kl, deltas in rows
    )
    per_token = "".join(
        f"<tr><td>{html.esc(html.visible(piece, spaces=False))}</td><td>{kl:.4f}</td><td>{control_kl:.4f}</td>"
        f"<td>{delta:+.3f}</td><td>{control_delta:+.3f}</td></tr>"
        for piece, kl, control_kl, delta, control_delta in zip(
            pieces, effect.kl, control.kl, effect.deltas, control.deltas, strict=True
        )
    )
    token_head = "".join(
        f"<th>{html.esc(name)}</th>" for name in ("token", "KL set", "KL control", "Δ log p set", "Δ log p control")
    )
    specificity = effect.specificity
    value = _times(specificity)
    return (
        '<div class="control-compare"><div class="delta-title">Against a control: as many experts of the same groups'
        " and layers, about as often active in the index, drawn at random, run on the same tokens</div>"
        '<div class="control-row"><div class="figure figure-strong"><span class="figure-value specificity" '
        f'data-specificity="{"" if specificity is None else f"{specificity:.4f}"}">{html.esc(value)}</span>'
        '<span class="figure-label">specificity: how much more the set moves the predictions than its control</span>'
        f'</div><table class="expert-table control-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f'</div><p class="hint">{html.esc(SPECIFICITY_HELP)}</p>'
        f'<details class="control-experts"><summary>The control\'s {control.control.experts:,} experts (seed'
        f" {control.control.seed})</summary><code>{html.esc(control.control.text)}</code></details>"
        '<details class="control-tokens"><summary>Per token: KL(plain ‖ ablated) and Δ log p, set and control'
        f'</summary><div class="scroll-box"><table class="expert-table control-table"><thead><tr>{token_head}</tr>'
        f"</thead><tbody>{per_token}</tbody></table></div></details></div>"
    )


# -- the concept builder -------------------------------------------------------------------------------------
def read_upload(path: str | None) -> str:
    """The text of an uploaded file ("" without one); a file that is too big or not UTF-8 is refused in words."""
    if not path:
        return ""
    file = Path(path)
    if file.stat().st_size > MAX_UPLOAD_BYTES:
        raise RequestRejected(f"The file is larger than {MAX_UPLOAD_BYTES:,} bytes: give a smaller one.")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RequestRejected("The file is not UTF-8 text: give a plain text file.") from None


def _change_figure(change: LossChange | None, what: str, kind: str) -> str:
    if change is None:
        return ""
    return (
        f'<div class="figure {"figure-strong" if kind == "held-out" else ""}">'
        f'<span class="figure-value concept-rise-{kind}" data-rise="{change.rise:.6f}">{change.rise:+.3f}</span>'
        f'<span class="figure-label">nats per token on {html.esc(what)} ({change.plain_loss:.2f} → '
        f"{change.ablated_loss:.2f}; {change.tokens:,} tokens of {change.texts} texts)</span></div>"
    )


def _domains_html(domains: dict[str, LossChange]) -> str:
    if not domains:
        return ""
    rows = "".join(
        f'<tr data-domain="{html.esc(name)}"><td>{html.esc(name)}</td><td>{change.plain_loss:.3f}</td>'
        f"<td>{change.ablated_loss:.3f}</td><td>{change.rise:+.3f}</td><td>{change.texts}</td></tr>"
        for name, change in domains.items()
    )
    head = "".join(f"<th>{name}</th>" for name in ("domain", "loss, plain", "loss, switched off", "rise", "texts"))
    return (
        '<details class="concept-domains"><summary>The background per domain of the index</summary>'
        f'<table class="expert-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></details>'
    )


def _experts_html(explorer: Explorer, found: Concept) -> str:
    shown = found.experts[:CONCEPT_EXPERTS_SHOWN]
    labels = explorer.labels([(e.ref.group, e.ref.flat) for e in shown])
    rows = "".join(
        f'<tr data-expert="{html.esc(e.ref)}"><td>{html.expert_link(str(e.ref))}</td>'
        f"<td>{html.expert_label(labels.get((e.ref.group, e.ref.flat), ''))}</td>"
        f"<td>{e.concept_mean:.4f}</td><td>{e.background_mean:.4f}</td>"
        f"<td>{'only here' if e.lift is None else f'{e.lift:.1f}×'}</td>"
        f"<td>{e.active_tokens}</td><td>{e.texts}</td></tr>"
        for e in shown
    )
    head = "".join(
        f"<th>{html.esc(name)}</th>"
        for name in ("expert", "label", "mean on examples", "background mean", "ratio", "active tokens", "examples")
    )
    more = len(found.experts) - len(shown)
    tail = f'<p class="hint">… and {more:,} more (all of them are in the set).</p>' if more > 0 else ""
    return (
        f'<table class="expert-table concept-experts"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{tail}'
    )


CONCEPT_HELP = (
    f"An expert is proposed when its mean weight over the examples' tokens is at least the ratio times its mean"
    f" weight on the background (the counter-examples, or by default the whole indexed corpus), weights below the"
    f" index's activity threshold counting as 0, and it is active on at least {concept_rules.MIN_SUPPORT_TOKENS}"
    f" tokens of at least {concept_rules.MIN_SUPPORT_TEXTS} examples; at most {concept_rules.MAX_CONCEPT_EXPERTS}"
    f" are kept, those carrying the most weight above the background. Every {concept_rules.HELD_OUT_EVERY}th"
    f" example (and counter-example) is held out: the preview switches the experts off in every layer of their"
    f" group and measures the loss on the held-out examples and on the background's texts."
)


def concept_html(explorer: Explorer, found: Concept) -> str:
    preview = found.preview
    figures = _change_figure(preview.held_out, "the held-out examples", "held-out") + _change_figure(
        preview.background, preview.background_source, "background"
    )
    if preview.specificity is not None:
        figures += (
            '<div class="figure"><span class="figure-value concept-specificity">'
            f"{html.esc(_times(preview.specificity))}</span>"
            '<span class="figure-label">loss rise on the held-out examples / on the background</span></div>'
        )
    note = html.notice(preview.note, "warning") if preview.note else ""
    experts = _experts_html(explorer, found) if found.experts else ""
    return (
        '<div class="concept-result"><div class="delta-title">Preview: the loss with these experts switched off in'
        f' every layer of their group</div><div class="effect-summary">{figures}</div>{note}'
        f"{_domains_html(preview.domains)}{experts}"
        f'<p class="hint">{html.esc(CONCEPT_HELP)}</p></div>'
    )


@reports_errors("", "")
def concept_view(
    explorer: Explorer, examples: str, upload: str | None, counter_examples: str, ratio: float | None
) -> tuple[str, str, str]:
    """The concept's experts and preview, the set as text (kept in a gr.State for "use as the set"), then the
    status line."""
    texts = "\n\n".join(part for part in (examples or "", read_upload(upload)) if part.strip())
    found = explorer.concept(texts, counter_examples or "", concept_rules.CONCEPT_RATIO if ratio is None else ratio)
    kind = "info" if found.experts else "warning"
    return concept_html(explorer, found), found.ablate, messages.status(found.summary(), kind)
