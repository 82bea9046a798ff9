"""Finding experts: by id, by a token they fire on, by text inside their top contexts, or by meaning.

`search` checks the query, answers in the first mode that finds something (auto) or in the mode
asked for, and gives every result row its density and label. Groups are 0-based; None is every group.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from explorer.app.tokens import RequestRejected
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


@dataclass(frozen=True)
class SearchRow:
    name: str
    group: int  # 0-based
    expert: int
    label: str
    density: float
    evidence: str  # why it matched


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
) -> SearchResult:
    """Experts matching `query` (see SEARCH_MODES); `density_map(group)` gives a group's [E, E] densities."""
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
        return [
            SearchRow(
                self.index.expert_name(g, e),
                g,
                e,
                labels.get((g, e), "") if label is None else label,
                float(self.density_map(g)[e // E, e % E]),
                evidence,
            )
            for g, e, label, evidence in found
        ]
