"""Text search: the top contexts whose window text contains a phrase (case-insensitive), heaviest first.

`doc_text` holds the searchable text (explorer.index.postings.searchable) of every stored token run, and
`text_postings` the places in it where a phrase may occur (explorer.index.postings: the stored tokens that can
hold one chosen character of it, found without reading any text), each with a bound: no top context whose window
holds that token is heavier. The places are visited by that bound, heaviest first, in growing batches (once
`limit` contexts are found, a batch holds only the places whose bound reaches the lightest of them). A place
the postings prove (its tokens spell the whole phrase) gives its occurrence directly; any other place's document
has its text read, which gives every occurrence in it. Each occurrence gives the windows that cover it whole, and
`examples_by_location` the top contexts there. The visit stops, exactly, once `limit` contexts are found that
outweigh the bound of every place left; or, not exactly, after TEXT_SEARCH_DOCUMENTS documents (the result says
how many it searched).

Two cases read whole documents instead, heaviest first (by their heaviest top context): a phrase so common that
nearly every document holds it (its places would be too many to list), and a file written before the postings
existed, whose documents holding the phrase are found by reading every document's text (the result's note says
how to add the postings).
"""

import re
from dataclasses import dataclass

import numpy as np

from explorer.index import postings
from explorer.index.reader import ExpertIndex

# places in a text search's first batch; each next at most doubles. A batch's query costs about 8 ms for 32 places
# and 13 for 128 on a full-scale index: 128 finds a one-group search's contexts in one query where 32 took three
TEXT_SEARCH_FIRST_BATCH = 128
TEXT_SEARCH_DOCUMENTS = 1_000  # at most this many documents per text search, those with the heaviest contexts first
COUNTED_DOCUMENTS = 1_000  # documents not visited whose text is read to count those holding the phrase, at most
NO_POSTINGS_NOTE = (
    "this index has no text postings, so the text of every document was read; add them without rerunning the"
    " model: python -m precompute upgrade {path} --out NEW"
)


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
    documents_searched: int  # documents holding the phrase whose top contexts around it were searched
    documents_containing: int | None  # documents whose stored text holds it; None: too many to count quickly
    exact: bool  # False when the search stopped at TEXT_SEARCH_DOCUMENTS documents
    note: str = ""  # what kept the search from its fast path (a file without postings), for the page


def search_text(index: ExpertIndex, substring: str, group: int | None = None, limit: int = 50) -> TextSearch:
    """Top contexts whose window text contains `substring` (case-insensitive), heaviest first (see the module doc)."""
    needle = postings.searchable(substring)  # doc_text's own rule, token by token
    if not needle:
        return TextSearch([], 0, 0, True)
    places, note = _places(index, needle)
    found: dict[tuple, tuple] = {}  # (group, expert, rank) -> (group, expert, rank, weight, doc, position)
    read: set[int] = set()  # documents whose text was read: every occurrence in them is found
    holding: set[int] = set()  # visited documents known to hold the phrase
    visited, batch, exact = 0, TEXT_SEARCH_FIRST_BATCH, True
    while visited < len(places.doc):
        end = visited + batch
        if len(found) == limit:  # only places whose bound reaches the lightest context found can change the result
            end = min(end, visited + int(np.sum(places.bound[visited:] >= list(found.values())[-1][3])))
        end = _batch_end(places.doc, visited, end, read | holding)
        if end == visited:
            exact = False  # TEXT_SEARCH_DOCUMENTS documents visited
            break
        chosen = slice(visited, end)
        visited, batch = end, 2 * batch
        doc, last, position = places.doc[chosen], places.last[chosen], places.position[chosen]
        to_read = sorted(set(doc[last < 0].tolist()) - read)
        ranges = _occurrences(index, to_read, needle)
        read.update(to_read)
        holding.update(ranges[0])
        holding.update(doc[places.proven[chosen]].tolist())
        settled = (last >= 0) & ~np.isin(doc, list(read))  # proven places: their first and last token are known
        ranges[0].extend(doc[settled].tolist())
        ranges[1].extend(np.maximum(last[settled] - index.context, 0).tolist())
        ranges[2].extend((position[settled] + index.context).tolist())
        for hit in _top_contexts_in(index, ranges, group, limit):
            found[hit[:3]] = hit
        found = dict(sorted(found.items(), key=lambda item: (-item[1][3], item[0]))[:limit])
        heaviest_left = places.bound[visited] if visited < len(places.doc) else -np.inf
        if len(found) == limit and list(found.values())[-1][3] > heaviest_left:
            break  # no context at the places left is that heavy: none of theirs can enter
    texts = index.window_texts([(doc, position) for *_, doc, position in found.values()])
    hits = [
        TextHit(g, e, index.expert_name(g, e), rank, weight, doc, position, text)
        for (g, e, rank, weight, doc, position), text in zip(found.values(), texts, strict=True)
    ]
    return TextSearch(hits, len(holding), _containing(index, places, visited, read, holding, needle), exact, note)


@dataclass(frozen=True)
class _Places:
    """Where to look, heaviest bound first: postings.Places, or whole documents (last -1: read them)."""

    doc: np.ndarray
    position: np.ndarray
    last: np.ndarray
    bound: np.ndarray
    proven: np.ndarray
    counted: bool  # documents with a proven place, and those whose text holds it, are every document holding it


def _places(index: ExpertIndex, needle: str) -> tuple[_Places, str]:
    """Where `needle` may occur, heaviest bound first (see the module doc), and a note for the page."""
    if not postings.has_postings(index):
        rows = index.rows(
            "SELECT doc, max_weight FROM doc_text WHERE contains(text, $needle) ORDER BY max_weight DESC, doc",
            {"needle": needle},
        )
        return _whole_documents(rows, holding=True), NO_POSTINGS_NOTE.format(path=index.path)
    found = postings.places(index, needle)
    if found is None:  # a common phrase: every document, heaviest first
        every = index.rows("SELECT doc, max_weight FROM doc_text ORDER BY max_weight DESC, doc")
        return _whole_documents(every, holding=False), ""
    return _Places(found.doc, found.position, found.last, found.bound, found.proven, counted=True), ""


def _whole_documents(rows: list[tuple], holding: bool) -> _Places:
    """Documents (doc, max_weight) to read whole; `holding`: each is known to hold the phrase."""
    doc = np.array([doc for doc, _ in rows], dtype=np.int64)
    bound = np.array([weight for _, weight in rows], dtype=np.float64)
    unknown = np.full(len(doc), -1, dtype=np.int64)
    return _Places(doc, unknown, unknown, bound, np.full(len(doc), holding), counted=holding)


def _batch_end(doc: np.ndarray, start: int, end: int, visited_docs: set[int]) -> int:
    """Where the batch of places from `start` ends: at `end`, or at the first place that would make more than
    TEXT_SEARCH_DOCUMENTS documents visited."""
    batch = doc[start:end]
    _, first = np.unique(batch, return_index=True)
    new = np.zeros(len(batch), dtype=np.int64)
    new[first] = ~np.isin(batch[first], list(visited_docs))
    over = np.flatnonzero(np.cumsum(new) > TEXT_SEARCH_DOCUMENTS - len(visited_docs))
    return start + int(over[0]) if len(over) else start + len(batch)


def _containing(
    index: ExpertIndex, places: _Places, visited: int, read: set[int], holding: set[int], needle: str
) -> int | None:
    """How many documents hold `needle`: those known to, and of the others that may, those whose text does (read
    for at most COUNTED_DOCUMENTS documents; None beyond)."""
    if not places.counted:  # every document may: counted only when every one was visited
        return len(holding) if visited == len(places.doc) else None
    known = holding | set(places.doc[places.proven].tolist())
    unknown = sorted(set(places.doc.tolist()) - known - read)
    if len(unknown) > COUNTED_DOCUMENTS:
        return None
    if not unknown:
        return len(known)
    (holding_too,) = index.rows(
        """
        SELECT count(*) FROM (SELECT unnest($docs)::UINTEGER AS doc) w JOIN doc_text t USING (doc)
        WHERE contains(t.text, $needle)
        """,
        {"docs": unknown, "needle": needle},
    )[0]
    return len(known) + holding_too


def _occurrences(index: ExpertIndex, docs: list[int], needle: str) -> tuple[list[int], list[int], list[int]]:
    """(doc, low, high): the positions where a window must be centred to hold a whole occurrence of
    `needle`, as merged ranges per document."""
    if not docs:
        return [], [], []
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
    given (doc, low, high) ranges, each once (ranges of one document may overlap)."""
    doc, low, high = places
    if not doc:
        return []
    return index.rows(
        """
        SELECT DISTINCT e.grp, e.expert, e.rank, e.weight, e.doc, e.position
        FROM (SELECT unnest($doc)::UINTEGER AS doc, unnest($low) AS low, unnest($high) AS high) h
        JOIN examples_by_location e ON e.doc = h.doc AND e.position BETWEEN h.low AND h.high
        WHERE $group IS NULL OR e.grp = $group::UTINYINT
        ORDER BY e.weight DESC, e.grp, e.expert, e.rank LIMIT $limit
        """,
        {"doc": doc, "low": low, "high": high, "group": group, "limit": limit},
    )
