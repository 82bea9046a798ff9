"""What each page shows: an Explorer's answers rendered (explorer.web.html, explorer.web.charts) into component values.

The tab modules (explorer.web.tabs) wire these functions to components; they never touch Gradio layout.
A handler's last output is the status line of its panel: failures (bad input, no index, a corrupt file)
become a sentence there (explorer.web.messages), never a stack trace or an error overlay, and the app
keeps serving. Every text that came from a user is escaped (html.esc, messages.status) before it is HTML.
"""

import csv
import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import gradio as gr

from explorer.app import ablation_set
from explorer.app.explorer import SEARCH_MODES, ExpertPage, Explorer
from explorer.app.generation import GenerationSettings
from explorer.app.inspector import ACTIVE_WEIGHT, PromptInspection
from explorer.app.search import SORT_ORDERS, score_text
from explorer.app.tokens import RequestRejected
from explorer.index.reader import ExpertStats, IndexUnavailable
from explorer.model.naming import group_name, group_number
from explorer.web import charts, concept_views, html, messages
from explorer.web.messages import reports_errors

ALL_GROUPS = "all groups"
EXPERTS_SHOWN_PER_GROUP = 25


def group_choices(explorer: Explorer) -> list[tuple[str, int]]:
    if explorer.shape is None:
        return []
    return [
        (f"{group_name(g)} · layers {r[0]}-{r[-1]}", g)
        for g in range(explorer.shape.num_groups)
        for r in [explorer.shape.group_layers(g)]
    ]


# -- header and overview --------------------------------------------------------------------------------
def problems_html(explorer: Explorer) -> str:
    return "".join(html.notice(problem, "warning") for problem in explorer.problems)


def _fact(label: str, value) -> str:
    return (
        f'<div class="fact"><span class="fact-label">{html.esc(label)}</span>'
        f'<span class="fact-value">{html.esc(value)}</span></div>'
    )


def shown_path(text: str | None) -> str | None:
    """A file path as the page shows it: relative to the working directory when inside it, "~/..." inside the
    home folder, otherwise as given (hub ids and dataset names are not paths and stay as they are)."""
    if not text or not os.path.isabs(text):
        return text
    path = Path(text)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base)) if path != base else prefix or "."
    return text


def facts_html(explorer: Explorer) -> str:
    facts = explorer.facts()
    model = facts.model
    if model is None:
        return html.notice("No model loaded.", "warning")
    model_rows = [
        _fact("model", shown_path(facts.model_id)),
        _fact("decomposition", model.decomposition),
        _fact("layers", model.layers),
        _fact("hidden size", f"{model.hidden_size:,}"),
        _fact(
            "experts per layer",
            f"{model.experts_per_side} × {model.experts_per_side} = {model.experts_per_layer:,}",
        ),
        _fact("router heads", model.router_heads),
        _fact("running on", f"{model.device} · {model.dtype}"),
    ]
    groups = []
    for group in model.groups:
        active = group.experts_ever_active
        fired = "" if active is None else f" · {active:,} experts ever active ({active / model.experts_per_layer:.1%})"
        layers = f"layers {group.layers[0]}-{group.layers[-1]}"
        groups.append(f"<li><b>G{group_number(group.group)}</b> = {html.esc(layers + fired)}</li>")
    cards = [
        f'<div class="card"><h3>Model</h3>{"".join(model_rows)}</div>',
        f'<div class="card"><h3>Routing groups</h3><p class="hint">Groups count from 1, layers from 0. '
        f"The layers of a group share its router, so an expert fires in all of them.</p>"
        f'<ul class="groups">{"".join(groups)}</ul></div>',
    ]
    index = facts.index
    if index is not None:
        rows = [
            _fact("tokens indexed", f"{index.tokens_processed:,}"),
            _fact("documents", f"{index.documents_processed:,}"),
            _fact("index file", shown_path(index.path)),
            _fact("corpus", shown_path(index.corpus)),
            _fact("domains", ", ".join(index.domains) or "none"),
            _fact("contexts kept per expert", index.top_k),
            _fact("active when weight ≥", index.min_weight),
            _fact("built", index.created),
        ]
        cards.append(f'<div class="card"><h3>Expert index</h3>{"".join(rows)}</div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def density_chart(explorer: Explorer):
    if explorer.index is None:
        return None
    return charts.density_histogram(
        {group_name(g): explorer.group_density(g).ravel() for g in range(explorer.shape.num_groups)}
    )


def _expert_rows_html(experts: list[ExpertStats], empty: str) -> str:
    columns = [("name", "expert", str), ("label", "label", str), ("density", "density", html.percent)]
    return html.table_html([asdict(e) for e in experts], columns, empty)


@reports_errors("", "", "")
def overview_group(explorer: Explorer, group: int) -> tuple[str, str, str, str]:
    """The group's E x E map, its most and least active experts, then the status line."""
    if explorer.index is None:
        return "", "", "", messages.status("The E x E map and the activity lists need an expert index.", "warning")
    most, least = explorer.most_and_least_active(group)
    return (
        html.density_map_html(explorer.group_density(group), group),
        _expert_rows_html(most, "No active expert in this group."),
        _expert_rows_html(least, "No active expert in this group."),
        "",
    )


@reports_errors("")
def score_boards_view(explorer: Explorer, group: int) -> tuple[str, str]:
    """The group's most and least causal and most coherent experts, side by side, then the status line."""
    if explorer.index is None:
        return "", messages.status("The score leaderboards need an expert index.", "warning")
    boards = explorer.score_boards(group)
    if boards.note:
        return html.notice(boards.note), ""
    columns = [("name", "expert", str), ("label", "label", str), ("evidence", "score", str)]
    parts = [
        ("Most causal", boards.most_causal),
        ("Least causal", boards.least_causal),
        ("Most coherent", boards.most_coherent),
    ]
    tables = [
        f"<div><h4>{html.esc(title)}</h4>{html.table_html([asdict(r) for r in rows], columns, 'None scored.')}</div>"
        for title, rows in parts
    ]
    return f'<div class="score-boards">{"".join(tables)}</div>', ""


def spec_from_event(data: dict) -> str:
    """An expert name from a click on a page (see ui.CLICK_JS): {kind: expert, value} or {kind: cell, group, i, j}."""
    if data.get("kind") == "cell":
        return f"G{int(data['group']) + 1} ({int(data['i'])}, {int(data['j'])})"
    return str(data.get("value", ""))


# -- expert page ------------------------------------------------------------------------------------------
def _expert_header(page: ExpertPage) -> str:
    s, ref = page.stats, page.ref
    layers = f"{page.layers[0]}-{page.layers[-1]}" if len(page.layers) > 1 else f"{page.layers[0]}"
    label = f'<div class="expert-label">{html.esc(html.visible(s.label, spaces=False))}</div>' if s.label else ""
    verdict_kind = "specialised" if page.verdict.specialised_in else "plain"
    facts = (
        f"routing group G{ref.group + 1} = layers {layers} · density {html.percent(s.density)} "
        f"({s.active_count:,} tokens) · mean active weight {s.mean_active_weight:.3f} · max {s.max_weight:.3f}"
    )
    return (
        f'<div class="expert-head"><div class="expert-title"><span class="expert-name">{html.esc(ref)}</span>'
        f'<span class="expert-pair">{html.esc(ref.pair_label)}</span></div>{label}'
        f'<div class="expert-facts">{html.esc(facts)}</div>{html.expert_scores_html(page.scores, page.scores_note)}'
        f'<div class="verdict verdict-{verdict_kind}">{html.esc(page.verdict.text)}</div>'
        f'<div class="deep-link">Link to this page: <code>?expert={html.esc(ref)}</code></div></div>'
    )


def _siblings_html(page: ExpertPage) -> str:
    columns = [("name", "expert", str), ("label", "label", str), ("density", "density", html.percent)]
    row = html.table_html([asdict(e) for e in page.same_row], columns, "No other active expert in this row.")
    column = html.table_html([asdict(e) for e in page.same_column], columns, "No other active expert in this column.")
    return (
        f'<div class="siblings"><div><h4>Same row i = {page.ref.i} (first routing side)</h4>{row}</div>'
        f"<div><h4>Same column j = {page.ref.j} (second routing side)</h4>{column}</div></div>"
    )


EXPORT_DIR = Path(tempfile.gettempdir()) / "monet-explorer-exports"


def _write_atomically(path: Path, write) -> str:
    """Write through a private temporary name, so concurrent users opening the same expert never see half a file."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    write(partial)
    os.replace(partial, path)
    return str(path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _export_files(page: ExpertPage) -> tuple[str, str]:
    """The page as JSON and its contexts as CSV, one file pair per expert (the content depends on the expert only)."""
    EXPORT_DIR.mkdir(exist_ok=True)
    stem = str(page.ref).replace("/", "-")
    data = page.to_json()
    json_path = _write_atomically(
        EXPORT_DIR / f"{stem}.json", lambda path: path.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    )
    contexts = [
        {
            "kind": kind,
            "rank": e["rank"],
            "weight": e["weight"],
            "domain": e["domain"],
            "source": e["source"],
            "token": e["tokens"][e["highlight"]],
            "text": e["text"],
            "quantile": e["quantile"],
        }
        for kind in ("top_contexts", "quantile_samples")
        for e in data[kind]
    ]
    csv_path = _write_atomically(EXPORT_DIR / f"{stem}-contexts.csv", lambda path: _write_csv(path, contexts))
    return json_path, csv_path


EXPERT_HINT = "Open an expert from the map, a search, the inspector or by name."

# The parts of an expert page, as expert_view returns them; a failed open clears them all (no stale page).
NO_EXPERT = {
    "name": "",
    "header": html.notice(EXPERT_HINT),
    "contexts": "",
    "samples": "",
    "histogram": None,
    "domains": None,
    "top_tokens": "",
    "siblings": "",
    "json": None,
    "csv": None,
}


def expert_view(explorer: Explorer, spec: str) -> dict:
    """Everything of the expert page that comes from the index (fast), by the keys of NO_EXPERT plus "status".

    See expert_extras for the rest. Never raises: a failure clears every part and "status" says why.
    """
    try:
        return {**_expert_parts(explorer, spec), "status": ""}
    except Exception as error:
        return {**NO_EXPERT, "status": messages.error_status(error)}


CONTEXTS_OPEN = 12  # top contexts shown at first; the rest (up to the index's K) behind "Show all"


def _top_contexts_html(explorer: Explorer, page: ExpertPage) -> str:
    """Every stored top context (the first CONTEXTS_OPEN open), after a notice when several tie at the top."""
    kept = explorer.index.meta().top_k if explorer.index is not None else len(page.top)
    ties = html.ties_at_top([e.weight for e in page.top], kept)
    pieces = [explorer.window_pieces(e.token_ids) for e in page.top]
    return ties + html.context_rows_html(page.top, pieces=pieces, shown=CONTEXTS_OPEN)


def _expert_parts(explorer: Explorer, spec: str) -> dict:
    ref = explorer.expert_ref(spec)
    page = explorer.expert_page(ref, contexts=None)  # all K top contexts: shown behind "Show all", exported
    json_path, csv_path = _export_files(page)
    token_texts = explorer.token_texts([t.token_id for t in page.top_tokens])
    top_tokens = "".join(html.chip(text, str(t.count)) for text, t in zip(token_texts, page.top_tokens, strict=True))
    samples = [explorer.window_pieces(e.token_ids) for e in page.samples]
    return {
        "name": str(ref),
        "header": _expert_header(page),
        "contexts": _top_contexts_html(explorer, page),
        "samples": html.context_rows_html(page.samples, show_quantile=True, pieces=samples),
        "histogram": charts.weight_histogram(page.histogram),
        "domains": charts.domain_bars(page.domains, page.verdict.specialised_in) if page.domains else None,
        "top_tokens": f'<div class="chips">{top_tokens}</div>' if top_tokens else html.notice("No top tokens."),
        "siblings": _siblings_html(page),
        "json": json_path,
        "csv": csv_path,
    }


def expert_extras(explorer: Explorer, name: str) -> tuple[str, str]:
    """The slower parts of an opened expert's page: tokens it promotes/suppresses (a model pass), similar experts.

    name: the expert expert_view opened ("" when it failed: both parts cleared). Never raises: a failure is
    said in place of the effects.
    """
    if not name:
        return "", ""
    try:
        return _expert_extras(explorer, name)
    except Exception as error:
        return messages.error_status(error), ""


def _expert_extras(explorer: Explorer, name: str) -> tuple[str, str]:
    ref = explorer.expert_ref(name)
    effects, _, _ = explorer.token_effects(ref)
    if effects.contexts:
        promoted = explorer.token_texts([t for t, _ in effects.promoted])
        suppressed = explorer.token_texts([t for t, _ in effects.suppressed])
        up = "".join(html.chip(t, f"{v:+.3g}") for t, (_, v) in zip(promoted, effects.promoted, strict=True))
        down = "".join(html.chip(t, f"{v:+.3g}") for t, (_, v) in zip(suppressed, effects.suppressed, strict=True))
        effects_html = (
            f'<div class="effects"><div><h4>Promotes</h4><div class="chips chips-up">{up}</div></div>'
            f'<div><h4>Suppresses</h4><div class="chips chips-down">{down}</div></div></div>'
            f'<p class="hint">Its mean output at its top {effects.contexts} contexts, summed over the '
            f"layers of its group, read through the final norm and the unembedding (direct effect on "
            f"the next-token logits per unit weight; later layers ignored).</p>"
        )
    else:
        effects_html = html.notice("No stored contexts to measure its output on.")
    try:
        similar = [asdict(s) for s in explorer.similar_experts(ref)]
        columns = [
            ("name", "expert", str),
            ("label", "label", str),
            ("score", "similarity", lambda v: f"{v:.2f}"),
            ("density", "density", html.percent),
        ]
        similar_html = html.table_html(similar, columns, "No similar experts.")
    except IndexUnavailable as error:
        similar_html = html.notice(str(error))
    return effects_html, similar_html


# -- search ----------------------------------------------------------------------------------------------
@reports_errors("")
def search_view(explorer: Explorer, query: str, mode: str, group: int | None, sort: str = "match") -> tuple[str, str]:
    """The results table (with the experts' scores when the index has some), then the status line (what was
    searched, how, how many found)."""
    result = explorer.search(query, mode, group, sort=sort)
    columns = [
        ("name", "expert", str),
        ("label", "label", str),
        ("density", "density", html.percent),
        ("evidence", "why it matched", str),
    ]
    if any(row.causal_effect is not None for row in result.rows):
        columns += [
            ("causal_effect", "causal effect", lambda v: score_text(v, None, "causal")),
            ("coherence", "coherence", lambda v: score_text(None, v, "coherence")),
        ]
    order = "" if sort == "match" else f" · sorted: {SORT_ORDERS[sort].split(';')[0]}"
    status = messages.status(
        f"{result.message} · {len(result.rows)} result(s) · searched by {result.mode} ({SEARCH_MODES[result.mode]})"
        + order
    )
    return html.table_html([asdict(row) for row in result.rows], columns, "No expert matches."), status


# -- prompt inspector ------------------------------------------------------------------------------------
def inspector_tokens_html(inspection: PromptInspection, selected: int | None) -> str:
    counts = inspection.active_counts()
    totals = counts.sum(1)

    def label(t: int, _):
        per_group = ", ".join(f"{group_name(g)} {n}" for g, n in enumerate(counts[t]))
        return f"{totals[t]} active experts ({per_group}) · click to list them"

    return html.tokens_html(
        inspection.tokens, totals.tolist(), label=label, clickable=True, selected=selected, break_lines=True
    )


def token_experts_html(explorer: Explorer, inspection: PromptInspection, t: int) -> str:
    by_group = [inspection.experts_at(t, g) for g in range(inspection.shape.num_groups)]
    labels = explorer.labels([(e.group, e.expert) for experts in by_group for e in experts[:EXPERTS_SHOWN_PER_GROUP]])
    columns = []
    for g, experts in enumerate(by_group):
        layers = inspection.shape.group_layers(g)
        heaviest = experts[0].weight if experts else 1.0
        rows = "".join(
            f'<div class="active-expert" data-expert="{html.esc(e.name)}">{html.expert_link(e.name)}'
            f'<span class="bar" style="--w:{e.weight / heaviest:.3f}"></span>'
            f'<span class="weight">{e.weight:.3f}</span><span class="heads">{html.esc(e.heads_text())}</span>'
            f"{html.expert_label(labels.get((e.group, e.expert), ''))}</div>"
            for e in experts[:EXPERTS_SHOWN_PER_GROUP]
        )
        more = len(experts) - EXPERTS_SHOWN_PER_GROUP
        rows += f'<div class="hint">… and {more} more</div>' if more > 0 else ""
        columns.append(
            f'<div class="group-column"><h4>{group_name(g)} · layers {layers[0]}-{layers[-1]} · '
            f"{len(experts)} active</h4>{rows or html.notice('none above the threshold')}</div>"
        )
    return (
        f'<div class="token-experts"><div class="token-title">Token {t}: '
        f"{html.chip(explorer.token_texts([inspection.token_ids[t]])[0])} · "
        f"weight ≥ {inspection.min_weight:g}, heads carrying it</div>"
        f'<div class="group-columns">{"".join(columns)}</div></div>'
    )


@reports_errors(None, "", "")
def inspect_view(explorer: Explorer, text: str, min_weight: float) -> tuple[PromptInspection, str, str, str]:
    """The inspection (kept in a gr.State), its tokens, the experts at its busiest token, then the status line."""
    inspection = explorer.inspect(text, min_weight)
    counts = inspection.active_counts().sum(1)
    busiest = int(counts.argmax())
    tokens = inspector_tokens_html(inspection, busiest)
    return inspection, tokens, token_experts_html(explorer, inspection, busiest), ""


@reports_errors(gr.skip(), gr.skip())
def token_view(explorer: Explorer, inspection: PromptInspection | None, t: int) -> tuple[str, str, str]:
    if inspection is None or not 0 <= t < len(inspection.tokens):
        raise RequestRejected("Inspect a text first, then click one of its tokens.")
    # The status stays: it may say that the text changed since this inspection.
    return inspector_tokens_html(inspection, t), token_experts_html(explorer, inspection, t), gr.skip()


def busiest_token(inspection: PromptInspection) -> int:
    """The token with the most active experts: the one the inspector opens on."""
    return int(inspection.active_counts().sum(1).argmax())


def why_view(explorer: Explorer, inspection: PromptInspection | None, t: int | None) -> str:
    """Which experts pushed the token after token t (None: the busiest). Never raises: a failure is said in place."""
    if inspection is None:
        return ""
    try:
        t = busiest_token(inspection) if t is None else t
        return why_html(explorer, inspection, explorer.why_next_token(inspection.token_ids, t))
    except Exception as error:
        return messages.error_status(error)


def _pushes_html(pushes, labels: dict, empty: str) -> str:
    if not pushes:
        return html.notice(empty)
    strongest = max(abs(push.logit) for push in pushes) or 1.0
    return "".join(
        f'<div class="active-expert push" data-expert="{html.esc(push.ref)}">{html.expert_link(str(push.ref))}'
        f'<span class="bar" style="--w:{abs(push.logit) / strongest:.3f}"></span>'
        f'<span class="weight" title="its push on the logit">{push.logit:+.3f}</span>'
        f'<span class="heads" title="its weight at the token">weight {push.weight:.3f}</span>'
        f"{html.expert_label(labels.get((push.ref.group, push.ref.flat), ''))}</div>"
        for push in pushes
    )


def why_html(explorer: Explorer, inspection: PromptInspection, why) -> str:
    """The experts that pushed one next-token logit up and down (explorer.app.inspector.TokenWhy)."""
    token = explorer.token_texts([why.token_id])[0]
    after_text = why.position + 1 >= len(inspection.token_ids)
    which = "the model's top prediction after the text" if after_text else "the text's next token"
    labels = explorer.labels([(push.ref.group, push.ref.flat) for push in (*why.up, *why.down)])
    layers = " · ".join(f"L{layer} {logit:+.2f}" for layer, logit in enumerate(why.layer_logits))
    return (
        f'<div class="why"><div class="token-title">Why {html.chip(token)} after token {why.position}? '
        f"({which}; its logit {why.logit:.2f})</div>"
        f'<div class="group-columns"><div class="group-column"><h4>Pushed it up</h4>'
        f"{_pushes_html(why.up, labels, 'No expert pushed it up.')}</div>"
        f'<div class="group-column"><h4>Pushed it down</h4>'
        f"{_pushes_html(why.down, labels, 'No expert pushed it down.')}</div></div>"
        f'<p class="hint">Each of the {why.experts:,} active experts pushes this logit by its exact output at the '
        f"token, read through the final norm and the unembedding (the direct path), summed over the layers of its "
        f"group. Each layer's experts together: {html.esc(layers)}. Attention and what later layers make of an "
        f"expert's output are not counted.</p></div>"
    )


@reports_errors("")
def expert_test_view(explorer: Explorer, name: str, text: str) -> tuple[str, str]:
    """The opened expert's exact weight on each token of a pasted text, then the status line."""
    if not name:
        raise RequestRejected("Open an expert first, then test it on your text.")
    tested = explorer.expert_on_text(explorer.expert_ref(name), text)
    weights = tested.weights
    heaviest = max(range(len(weights)), key=weights.__getitem__)
    threshold = explorer.index.meta().min_weight if explorer.index is not None else ACTIVE_WEIGHT
    active = sum(1 for w in weights if w >= threshold)
    reference = tested.index_max_weight or 0.0
    scale = max(reference, weights[heaviest], 1e-9)
    summary = (
        f"{tested.ref} is active (weight ≥ {threshold:g}) on {active} of {len(weights)} tokens; its heaviest weight "
        f"here is {weights[heaviest]:.3f}, at token {heaviest} “{html.visible(tested.pieces[heaviest])}”."
        + (f" Full colour = {scale:.3f}, its heaviest weight in the index." if scale == reference else "")
    )
    tokens = html.tokens_html(tested.pieces, weights, scale=scale, label=lambda t, w: f"weight {w:.4f}")
    return f'<div class="expert-test">{html.notice(summary)}{tokens}</div>', ""


def stale_status(results, message: str):
    """The status line once an input changed after a run (`results` not empty): the page dims the stale results."""
    return messages.status(message, "stale") if results else gr.skip()


# -- switching experts off -------------------------------------------------------------------------------
def ablation_summary(explorer: Explorer, text: str) -> str:
    """The switched-off set in words: the status line beside its box (a failure names the wrong item)."""
    try:
        resolved = explorer.resolve_ablation(text)
        return messages.status(resolved.summary()) + _named_experts_html(explorer, resolved.items)
    except Exception as error:
        return messages.error_status(error)


NAMED_EXPERTS_SHOWN = 12


def _named_experts_html(explorer: Explorer, items: list[str]) -> str:
    """The single experts named in a set (not rows, columns or domains), each with its label."""
    refs = []
    for item in items:
        try:
            refs.append(explorer.expert_ref(item))
        except RequestRejected:  # a row, a column, a domain or one layer's expert: no single label
            continue
    if not refs:
        return ""
    labels = explorer.labels([(ref.group, ref.flat) for ref in refs[:NAMED_EXPERTS_SHOWN]])
    named = "".join(
        f"<li><code>{html.esc(ref)}</code>{html.expert_label(labels.get((ref.group, ref.flat), ''))}</li>"
        for ref in refs[:NAMED_EXPERTS_SHOWN]
    )
    more = len(refs) - NAMED_EXPERTS_SHOWN
    named += f'<li class="hint">… and {more} more</li>' if more > 0 else ""
    return f'<ul class="named-experts">{named}</ul>'


def add_to_set(text: str, items: list[str]) -> str:
    return ablation_set.add_items(text, items)


# The add_* handlers return the new set's text, then their status line; a failure keeps the set as it was.
@reports_errors(gr.skip())
def add_line(explorer: Explorer, text: str, group: int, side: str, number: float | None) -> tuple[str, str]:
    if number is None:
        raise RequestRejected("Give the row or column number.")
    item = f"G{group + 1} ({int(number)}, *)" if side == "row" else f"G{group + 1} (*, {int(number)})"
    explorer.resolve_ablation(item)  # checks the range
    return add_to_set(text, [item]), messages.status(f"Added {item} to the set.")


@reports_errors(gr.skip())
def add_expert(explorer: Explorer, text: str, spec: str) -> tuple[str, str]:
    ref = explorer.expert_ref(spec)
    added = messages.status(f"{ref} is in the switched-off set (every layer of G{ref.group + 1}).")
    return add_to_set(text, [str(ref)]), added


@reports_errors(gr.skip())
def add_domain(explorer: Explorer, text: str, domain: str | None) -> tuple[str, str]:
    if not domain:
        raise RequestRejected("Pick a domain.")
    found = explorer.domain_experts(domain)
    if not found:
        raise RequestRejected(f"No expert is skewed toward {domain} by the 2x rule.")
    return add_to_set(text, [f"domain:{domain}"]), messages.status(f"Added domain:{domain} = {len(found):,} experts.")


@reports_errors(gr.skip())
def add_firing(explorer: Explorer, text: str, pasted: str, n: float) -> tuple[str, str]:
    experts = explorer.experts_on_text(pasted, int(n or 20))
    return add_to_set(text, experts), messages.status(f"Added the {len(experts)} experts firing most on the text.")


def _panels(prompt: str, baseline: str, ablated: str, finished: bool) -> tuple[str, str]:
    return (
        html.continuation_html("Plain model", prompt, baseline, finished, "baseline"),
        html.continuation_html("Experts switched off", prompt, ablated, finished, "ablated"),
    )


@dataclass(frozen=True)
class GenerationRun:
    """What a generation has shown so far (kept in a gr.State), so that Stop can turn it into a stopped state."""

    prompt: str
    baseline: str
    ablated: str
    finished: bool
    ablation: str = ""  # the switched-off set it ran with (a later change of the box marks it stale only if it differs)


@reports_errors("", "", "", None)
def generate_view(
    explorer: Explorer, prompt: str, ablation_text: str, max_new_tokens: float, temperature: float, seed: float
):
    """Yields the two panels, the effect, the run so far (a GenerationRun), then the status line."""
    settings = GenerationSettings(int(max_new_tokens), float(temperature), 1.0, int(seed or 0))
    plain = explorer.resolve_ablation(ablation_text).ablation is None
    note, kind = (
        (" The switched-off set is empty: both sides run the plain model.", "warning") if plain else ("", "info")
    )
    for update in explorer.generate(prompt, ablation_text, settings):
        baseline, ablated = _panels(prompt, update.baseline_text, update.ablated_text, update.finished)
        run = GenerationRun(prompt, update.baseline_text, update.ablated_text, update.finished, ablation_text)
        effect_html = ""
        status = messages.status(("Done." if update.finished else "Generating…") + note, kind)
        if update.effect is not None:
            e = update.effect
            effect_html = (
                html.effect_summary_html(
                    e.baseline_perplexity,
                    e.ablated_perplexity,
                    e.removed_mass_share,
                    len(e.token_ids),
                    "the plain continuation",
                )
                + '<div class="delta-title">Each token of the plain continuation, shaded by how much less '
                "(red) or more (blue) likely the ablated model finds it (full colour: 2 nats or more); "
                "hover for Δ log p.</div>"
                + html.delta_tokens_html(update.effect_pieces, e.deltas)
                + concept_views.control_html(e, update.effect_pieces)
            )
            done = f"Done: {len(e.token_ids):,} new tokens on the plain side; their effect is below."
            status = messages.status(done + note, kind)
        yield baseline, ablated, effect_html, run, status


def stopped_view(run: GenerationRun | None) -> tuple:
    """After Stop: the panels as far as they got, without a cursor, and a status line that says so."""
    if run is None or run.finished:  # nothing was running, or it finished before the click
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    baseline, ablated = _panels(run.prompt, run.baseline, run.ablated, finished=True)
    stopped = "Stopped: the texts below are as far as they got. The effect is measured only on a finished run."
    return baseline, ablated, "", messages.status(stopped, "warning")


@reports_errors("")
def measure_view(explorer: Explorer, text: str, ablation_text: str) -> tuple[str, str]:
    """The perplexities with and without, each token's change, then the status line."""
    measured = explorer.measure_text(text, ablation_text)
    e = measured.effect
    return (
        html.effect_summary_html(
            e.baseline_perplexity, e.ablated_perplexity, e.removed_mass_share, len(e.token_ids), "the given text"
        )
        + html.notice(measured.summary)
        + html.delta_tokens_html(measured.pieces, e.deltas)
        + concept_views.control_html(e, measured.pieces),
        "",
    )
