"""Finding experts: by id, by a token they fire on, by text inside their top contexts, or by meaning; and the
leaderboards of a group by their scores (most and least causal, most coherent).

`search` checks the query, answers in the first mode that finds something (auto) or in the mode
asked for, and gives every result row its density, label and scores; the rows come in the order the
mode found them, or sorted by a score (SORT_ORDERS). Groups are 0-based; None is every group.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from explorer.app.expert_page import scores_note
from explorer.app.tokens import RequestRejected
from explorer.index import scores
from explorer.index.reader import ExpertIndex, IndexUnavailable
from explorer.index.semantic import search_semantic
from explorer.index.text_search import search_text
from explorer.model.naming import ExpertRef, ModelShape, group_name, parse_expert_ref

MAX_QUERY_CHARS = 200
MAX_RESULTS = 100
SEARCH_MODES = {
    "auto": "an expert id if it is one, else a token, else text inside top contexts",
    "id": "expert id: G<group>/<id>, G<group> (i, j), or a flat id / (i, j) with the group selector",
    "token": "experts whose top contexts most often highlight this token",
    "text": "experts with this text inside their top contexts",
    "meaning": "experts whose label and contexts are closest in meaning (sentence embeddings)",
}

SORT_ORDERS = {
    "match": "in the order the search found them",
    "causal": "largest causal effect first (KL when switched off); experts without scores last",
    "coherence": "most coherent top contexts first; experts without scores last",
}


@dataclass(frozen=True)
class SearchRow:
    name: str
    group: int  # 0-based
    expert: int
    label: str
    density: float
    evidence: str  # why it matched
    causal_effect: float | None = None  # None: not scored
    coherence: float | None = None


@dataclass(frozen=True)
class SimilarExpert:
    """An expert near another by embedding (explorer.index.semantic.similar), with its density."""

    name: str
    group: int  # 0-based
    expert: int
    label: str
    score: float  # cosine similarity of the embeddings
    density: float


@dataclass(frozen=True)
class SearchResult:
    mode: str  # the mode that answered
    rows: list[SearchRow]
    message: str


def expert_ref(spec: str, shape: ModelShape) -> ExpertRef:
    """The expert a name ("G5/147040", "G5 (287, 96)") denotes, or RequestRejected saying what is valid."""
    spec = (spec or "").strip()
    if not spec:
        raise RequestRejected("Name an expert, e.g. G1/17 or G1 (1, 1).")
    try:
        return parse_expert_ref(spec[:MAX_QUERY_CHARS], shape)
    except ValueError as error:
        raise RequestRejected(str(error)) from None


def check_group(group: int, shape: ModelShape | None) -> None:
    if shape is None or not 0 <= group < shape.num_groups:
        raise RequestRejected(f"Group {group_name(group)} is outside the model.")


def _id_query(query: str, group: int | None, shape: ModelShape) -> list[ExpertRef] | None:
    """Expert refs named by the query, or None when it is not an id (RequestRejected when it is a bad one)."""
    E = shape.experts_per_side
    if re.match(r"^\s*[GgLl]\s*\d", query):
        return [expert_ref(query, shape)]
    groups = [group] if group is not None else range(shape.num_groups)
    if re.fullmatch(r"\s*\d+\s*", query):
        flat = int(query)
        if not 0 <= flat < E * E:
            raise RequestRejected(f"Expert id {flat} is outside the model (valid: 0..{E * E - 1}).")
        return [ExpertRef.from_flat(g, flat, E) for g in groups]
    pair = re.fullmatch(r"\s*\(?\s*(\d+)\s*,\s*(\d+)\s*\)?\s*", query)
    if pair:
        i, j = int(pair.group(1)), int(pair.group(2))
        if not (0 <= i < E and 0 <= j < E):
            raise RequestRejected(f"({i}, {j}) is outside the model: i and j run 0..{E - 1}.")
        return [ExpertRef(g, i, j, E) for g in groups]
    return None


def search(
    index: ExpertIndex,
    shape: ModelShape,
    density_map: Callable[[int], np.ndarray],
    query: str,
    mode: str = "auto",
    group: int | None = None,
    limit: int = 20,
    sort: str = "match",
) -> SearchResult:
    """Experts matching `query` (see SEARCH_MODES), ordered by `sort` (SORT_ORDERS); `density_map(group)` gives a
    group's [E, E] densities."""
    if sort not in SORT_ORDERS:
        raise RequestRejected(f"Unknown order {sort!r}: choose one of {', '.join(SORT_ORDERS)}.")
    found = _search(index, shape, density_map, query, mode, group, limit)
    if sort == "match":
        return found
    key = {"causal": lambda row: row.causal_effect, "coherence": lambda row: row.coherence}[sort]
    ordered = sorted(found.rows, key=lambda row: (key(row) is None, -(key(row) or 0.0)))  # stable: ties keep order
    return SearchResult(found.mode, ordered, found.message)


def _search(
    index: ExpertIndex,
    shape: ModelShape,
    density_map: Callable[[int], np.ndarray],
    query: str,
    mode: str,
    group: int | None,
    limit: int,
) -> SearchResult:
    query = (query or "").strip()
    if not query:
        raise RequestRejected("Type something to search for: an expert id, a token, a word or a phrase.")
    if len(query) > MAX_QUERY_CHARS:
        raise RequestRejected(f"The query is {len(query)} characters long: the limit is {MAX_QUERY_CHARS}.")
    if mode not in SEARCH_MODES:
        raise RequestRejected(f"Unknown search mode {mode!r}: choose one of {', '.join(SEARCH_MODES)}.")
    if group is not None:
        check_group(group, shape)
    limit = max(1, min(int(limit), MAX_RESULTS))
    rows = _Rows(index, shape, density_map)
    if mode in ("auto", "id"):
        refs = _id_query(query, group, shape)
        if refs is not None:
            return SearchResult("id", rows.of([(r.group, r.flat, None, r.pair_label) for r in refs]), f"Expert {query}")
        if mode == "id":
            raise RequestRejected(f"{query!r} is not an expert id: {SEARCH_MODES['id']}.")
    if mode in ("auto", "token"):
        found = index.experts_for_token(query, group, limit)
        if found or mode == "token":
            evidence = "{!r} at {} of its stored contexts, mean weight {:.3f}"
            title = (
                f"Experts firing most on the token {query!r}"
                if found
                else f"No token of the vocabulary reads {query!r} (spaces trimmed); try text search."
            )
            return SearchResult(
                "token",
                rows.of(
                    [(f.group, f.expert, f.label, evidence.format(f.token, f.count, f.mean_weight)) for f in found]
                ),
                title,
            )
    if mode in ("auto", "text"):
        return _text_result(index, rows, query, group, limit)
    try:
        found = search_semantic(index, query, group, limit)
    except IndexUnavailable as error:
        raise RequestRejected(str(error)) from None
    return SearchResult(
        "meaning",
        rows.of([(f.group, f.expert, f.label, f"similarity {f.score:.2f}") for f in found]),
        f"Experts closest in meaning to {query!r}",
    )


def _text_result(index: ExpertIndex, rows: "_Rows", query: str, group: int | None, limit: int) -> SearchResult:
    """One row per expert (its heaviest context holding the text), from the heaviest contexts containing it."""
    found = search_text(index, query, group, limit * 4)
    first_hit: dict[tuple[int, int], str] = {}
    for hit in found.hits:
        first_hit.setdefault((hit.group, hit.expert), f"{hit.weight:.3f} · {hit.text}")
    picked = list(first_hit.items())[:limit]
    searched, containing = found.documents_searched, found.documents_containing
    scope = (
        f" (searched the {searched:,} of {containing:,} documents containing it with the heaviest contexts)"
        if searched < containing
        else ""
    )
    title = (
        f"Experts with {query!r} in their top contexts{scope}"
        if picked
        else f"No top context contains {query!r}{scope}."
    )
    return SearchResult("text", rows.of([(g, e, None, evidence) for (g, e), evidence in picked]), title)


class _Rows:
    """Result rows with each expert's density (from the cached density maps) and label (one query for all)."""

    def __init__(self, index: ExpertIndex, shape: ModelShape, density_map: Callable[[int], np.ndarray]):
        self.index, self.shape, self.density_map = index, shape, density_map

    def of(self, found: list[tuple[int, int, str | None, str]]) -> list[SearchRow]:
        """Rows of (group, expert, label or None to look it up, evidence)."""
        E = self.shape.experts_per_side
        labels = self.index.labels([(g, e) for g, e, label, _ in found if label is None])
        scored = scores.scores_of(self.index, [(g, e) for g, e, _, _ in found])
        return [
            SearchRow(
                self.index.expert_name(g, e),
                g,
                e,
                labels.get((g, e), "") if label is None else label,
                float(self.density_map(g)[e // E, e % E]),
                evidence,
                *scored.get((g, e), (None, None)),
            )
            for g, e, label, evidence in found
        ]


@dataclass(frozen=True)
class ScoreBoards:
    """A group's experts ranked by their scores (empty lists and a note saying how to add them when unscored)."""

    most_causal: list[SearchRow]
    least_causal: list[SearchRow]
    most_coherent: list[SearchRow]
    note: str  # "" when the index has scores


def score_boards(
    index: ExpertIndex, shape: ModelShape, density_map: Callable[[int], np.ndarray], group: int, n: int = 10
) -> ScoreBoards:
    rows = _Rows(index, shape, density_map)

    def board(by: str, lowest: bool = False) -> list[SearchRow]:
        found = scores.leaderboard(index, group, by, n, lowest)
        return rows.of([(f.group, f.expert, f.label, score_text(f.causal_effect, f.coherence, by)) for f in found])

    note = "" if scores.coverage(index).scored else scores_note(index)
    return ScoreBoards(board("causal"), board("causal", lowest=True), board("coherence"), note)


def score_text(causal_effect: float | None, coherence: float | None, which: str = "both") -> str:
    """A score as the page writes it: "0.0123 nats" (causal effect), "+0.084" (coherence), "—" where none."""
    causal = "—" if causal_effect is None else f"{causal_effect:.3g} nats"
    coherent = "—" if coherence is None else f"{coherence:+.3f}"
    return {"causal": causal, "coherence": coherent, "both": f"{causal} · {coherent}"}[which]
