"""Text search: the top contexts whose window text contains a phrase (case-insensitive), heaviest first.

`doc_text` holds the lowercased text of every stored token run. The documents containing the phrase
are visited heaviest first (by their heaviest top context) in growing batches; in each, the places it
occurs give the windows that cover one whole occurrence, and `examples_by_location` the top contexts
there. The visit stops, exactly, once `limit` contexts are found that outweigh every context of the
documents left; or, not exactly, after TEXT_SEARCH_DOCUMENTS documents (the result says how many it
searched).
"""

import re
from dataclasses import dataclass

import numpy as np

from explorer.index import schema
from explorer.index.reader import ExpertIndex

GAP = schema.DOC_TEXT_GAP
TEXT_SEARCH_FIRST_BATCH = 128  # documents in a text search's first batch; each next batch doubles
TEXT_SEARCH_DOCUMENTS = 1_000  # at most this many documents per text search, those with the heaviest contexts first


@dataclass(frozen=True)
class TextHit:
    """One top context whose window holds the phrase."""

    group: int
    expert: int
    name: str
    rank: int  # the context's rank among the expert's top contexts
    weight: float
    doc: int
    position: int
    text: str  # the window's text


@dataclass(frozen=True)
class TextSearch:
    hits: list[TextHit]  # heaviest first
    documents_searched: int
    documents_containing: int  # documents whose stored text contains the phrase
    exact: bool  # False when the search stopped at TEXT_SEARCH_DOCUMENTS documents


def search_text(index: ExpertIndex, substring: str, group: int | None = None, limit: int = 50) -> TextSearch:
    """Top contexts whose window text contains `substring` (case-insensitive), heaviest first (see the module doc)."""
    needle = substring.lower().replace(GAP, "")  # doc_text lowercases token by token; GAP marks a gap
    docs = index.rows(
        "SELECT doc, max_weight FROM doc_text WHERE contains(text, $needle) ORDER BY max_weight DESC, doc",
        {"needle": needle or GAP},  # an empty needle finds nothing
    )
    found: list[tuple] = []  # (group, expert, rank, weight, doc, position)
    searched, batch, exact = 0, TEXT_SEARCH_FIRST_BATCH, True
    while searched < len(docs):
        if searched == TEXT_SEARCH_DOCUMENTS:
            exact = False
            break
        chosen = [doc for doc, _ in docs[searched : min(searched + batch, TEXT_SEARCH_DOCUMENTS)]]
        searched, batch = searched + len(chosen), 2 * batch
        found += _top_contexts_in(index, _occurrences(index, chosen, needle), group, limit)
        found = sorted(found, key=lambda hit: (-hit[3], hit[0], hit[1], hit[2]))[:limit]
        heaviest_left = docs[searched][1] if searched < len(docs) else -np.inf
        if len(found) == limit and found[-1][3] > heaviest_left:
            break  # no context of the documents left is that heavy: none of theirs can enter
    texts = index.window_texts([(doc, position) for *_, doc, position in found])
    hits = [
        TextHit(g, e, index.expert_name(g, e), rank, weight, doc, position, text)
        for (g, e, rank, weight, doc, position), text in zip(found, texts, strict=True)
    ]
    return TextSearch(hits, searched, len(docs), exact)


def _occurrences(index: ExpertIndex, docs: list[int], needle: str) -> tuple[list[int], list[int], list[int]]:
    """(doc, low, high): the positions where a window must be centred to hold a whole occurrence of
    `needle`, as merged ranges per document."""
    with index.cursor() as conn:  # arrow: the lists arrive as flat arrays, no Python object per value
        rows = conn.execute(
            """
            SELECT t.doc, t.text, t.positions, t.offsets
            FROM (SELECT unnest($docs)::UINTEGER AS doc) w JOIN doc_text t USING (doc)
            """,
            {"docs": docs},
        ).fetch_arrow_table()
    positions, offsets = (rows[name].combine_chunks() for name in ("positions", "offsets"))
    bounds = positions.offsets.to_numpy()  # both lists have one entry per stored token: the same bounds
    all_positions, all_offsets = positions.flatten().to_numpy().astype(np.int64), offsets.flatten().to_numpy()
    context, pattern = index.context, re.compile(f"(?={re.escape(needle)})")  # overlapping too
    doc_of, low, high = [], [], []
    for row, (doc, text) in enumerate(zip(rows["doc"].to_pylist(), rows["text"].to_pylist(), strict=True)):
        starts = np.fromiter((m.start() for m in pattern.finditer(text)), dtype=np.int64)
        if not len(starts):
            continue
        span = slice(bounds[row], bounds[row + 1])
        first = np.searchsorted(all_offsets[span], starts, side="right") - 1  # token holding the first char
        last = np.searchsorted(all_offsets[span], starts + len(needle) - 1, side="right") - 1
        lo = np.maximum(all_positions[span][last] - context, 0)  # both non-decreasing
        hi = all_positions[span][first] + context
        opens = np.r_[True, lo[1:] > hi[:-1]]  # a range not overlapping the one before
        doc_of += [doc] * int(opens.sum())
        low += lo[opens].tolist()
        high += np.maximum.reduceat(hi, np.flatnonzero(opens)).tolist()
    return doc_of, low, high


def _top_contexts_in(
    index: ExpertIndex, places: tuple[list[int], list[int], list[int]], group: int | None, limit: int
) -> list[tuple]:
    """(group, expert, rank, weight, doc, position) of the heaviest `limit` top contexts centred inside the
    given (doc, low, high) ranges (disjoint per document, so no context is found twice)."""
    doc, low, high = places
    return index.rows(
        """
        SELECT e.grp, e.expert, e.rank, e.weight, e.doc, e.position
        FROM (SELECT unnest($doc)::UINTEGER AS doc, unnest($low) AS low, unnest($high) AS high) h
        JOIN examples_by_location e ON e.doc = h.doc AND e.position BETWEEN h.low AND h.high
        WHERE $group IS NULL OR e.grp = $group::UTINYINT
        ORDER BY e.weight DESC, e.grp, e.expert, e.rank LIMIT $limit
        """,
        {"doc": doc, "low": low, "high": high, "group": group, "limit": limit},
    )
