"""Token postings of the token store: which documents can hold a phrase, found without reading their text.

`text_postings` (schema.TEXT_POSTINGS) has one row per stored token whose searchable piece (its text,
lowercased, as `doc_text` holds it) is not empty: (token_id, next_id, doc, position), where next_id is the
token whose piece comes right after it in `doc_text` (the next stored token with a piece, no gap between),
or NO_NEXT. Rows are ordered by token, so the rows of a few tokens are a few row groups.

Why the documents found are exact. Take any character N[c] of the phrase N. In a document holding N, that
character lies in some token piece x, placed at an offset s of N that it agrees with (x[k] = N[s + k] wherever
both exist). If x reaches N's end, the document has a row of x. If not, N goes on in the very next piece y,
which starts at N[s + len(x)] and agrees with the rest of N: the document has a row (x, y). So for one chosen
c, the documents with a row of some such x (or x followed by such a y) include every document holding N
(`candidates`); the search then reads their text, which decides. c is chosen where these pieces have the
fewest rows (a piece's corpus count estimates its rows). A row proves an occurrence when x starts at or before
N's start and reaches its end (alone, or with y): documents with such a row need no reading to be counted.
"""

import bisect
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from explorer.index import schema

NO_NEXT = 2**32 - 1  # next_id of a token that ends its run of stored tokens (a gap or the document's end follows)
ANY_NEXT = -1  # a probe whose token alone is enough, whatever follows it
COMMON_ROWS = (
    2_000_000  # a phrase whose cheapest character has more rows than this is common: read documents heaviest first
)
LAST_CHAR = "\U0010ffff"


def searchable(text: str) -> str:
    """The searchable form of a token's text or of a phrase: lowercased, without DOC_TEXT_GAP (doc_text's rule)."""
    return text.lower().replace(schema.DOC_TEXT_GAP, "")


# -- writing ------------------------------------------------------------------------------------------------
def write_text_postings(conn, vocab: list[str], context: int) -> None:
    """Fill `text_postings` from `tokens` and `examples_by_location`, in its order (`context`: meta.context).

    A stored token's next piece is adjacent in doc_text when every position between the two is stored: the
    positions then advance by as many as the stored rows do."""
    import pyarrow as pa

    pieces = pa.table(
        {
            "token_id": pa.array(np.arange(len(vocab)), pa.uint32()),
            "visible": pa.array([searchable(text) != "" for text in vocab], pa.bool_()),
        }
    )
    conn.register("searchable_vocab", pieces)
    try:
        conn.execute(
            f"""
            INSERT INTO {schema.TEXT_POSTINGS.name}
            WITH heaviest_at AS (
                SELECT doc, position, max(weight) AS weight FROM {schema.EXAMPLES_BY_LOCATION.name}
                GROUP BY doc, position
            ), numbered AS (
                SELECT t.doc, t.position, t.token_id, v.visible,
                       row_number() OVER (PARTITION BY t.doc ORDER BY t.position) AS stored_rank,
                       max(h.weight) OVER (
                           PARTITION BY t.doc ORDER BY t.position::BIGINT
                           RANGE BETWEEN {int(context)} PRECEDING AND {int(context)} FOLLOWING
                       ) AS cover_max
                FROM {schema.TOKENS.name} t JOIN searchable_vocab v USING (token_id)
                LEFT JOIN heaviest_at h ON h.doc = t.doc AND h.position = t.position
            ), linked AS (
                SELECT token_id, doc, position, cover_max,
                       lead(token_id) OVER next_piece AS next_token,
                       lead(position) OVER next_piece - position AS step,
                       lead(stored_rank) OVER next_piece - stored_rank AS stored_step
                FROM numbered WHERE visible
                WINDOW next_piece AS (PARTITION BY doc ORDER BY position)
            ), adjacent AS (
                SELECT *, step IS NOT NULL AND step = stored_step AS has_next FROM linked
            )
            SELECT token_id,
                   CASE WHEN has_next THEN next_token ELSE {NO_NEXT} END AS next_id,
                   CASE WHEN has_next THEN step ELSE 0 END AS next_step,
                   doc, position, coalesce(cover_max, 0) AS cover_max
            FROM adjacent
            ORDER BY token_id, next_id, doc, position
            """
        )
    finally:
        conn.unregister("searchable_vocab")


# -- the vocabulary, searchable -----------------------------------------------------------------------------
class Pieces:
    """Every token's searchable piece, sorted forwards and backwards for prefix and suffix look-ups, and an
    estimate of its rows in text_postings."""

    def __init__(self, vocab: list[str], estimated_rows: np.ndarray):
        self.pieces = [searchable(text) for text in vocab]
        self.estimated_rows = estimated_rows.astype(np.int64)
        self.lengths = np.array([len(piece) for piece in self.pieces], dtype=np.int64)
        visible = [token for token, piece in enumerate(self.pieces) if piece]
        forwards = sorted(visible, key=lambda token: self.pieces[token])
        backwards = sorted(visible, key=lambda token: self.pieces[token][::-1])
        self._forwards = ([self.pieces[t] for t in forwards], np.array(forwards, dtype=np.int64))
        self._backwards = ([self.pieces[t][::-1] for t in backwards], np.array(backwards, dtype=np.int64))

    @staticmethod
    def _range(table, low: str, high: str) -> np.ndarray:
        keys, tokens = table
        return tokens[bisect.bisect_left(keys, low) : bisect.bisect_left(keys, high)]

    def equal_to(self, text: str) -> np.ndarray:
        keys, tokens = self._forwards
        return tokens[bisect.bisect_left(keys, text) : bisect.bisect_right(keys, text)]

    def longer_starting_with(self, prefix: str) -> np.ndarray:
        found = self._range(self._forwards, prefix, prefix + LAST_CHAR)
        return found[self.lengths[found] > len(prefix)]

    def longer_ending_with(self, suffix: str) -> np.ndarray:
        found = self._range(self._backwards, suffix[::-1], suffix[::-1] + LAST_CHAR)
        return found[self.lengths[found] > len(suffix)]

    def containing(self, text: str) -> np.ndarray:
        return np.array([t for t, piece in enumerate(self.pieces) if text in piece], dtype=np.int64)


_pieces_of: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_pieces_lock = threading.Lock()


def pieces_of(index) -> Pieces:
    """The index's Pieces, made once per open index (a tenth of a second for a 32,000-token vocabulary)."""
    with _pieces_lock:
        if index not in _pieces_of:
            rows = index.rows("SELECT text, corpus_count FROM vocab ORDER BY token_id")
            counts = np.array([count or 0 for _, count in rows], dtype=np.int64)
            _pieces_of[index] = Pieces([text for text, _ in rows], counts)
        return _pieces_of[index]


# -- a phrase's probes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Tokens whose piece agrees with the phrase when it starts at the phrase's offset `start` and ends at `end`
    (either may lie outside the phrase); `follow`: ANY_NEXT when they reach the phrase's end, else the offset
    where the next piece must start."""

    tokens: np.ndarray
    start: int
    end: int
    follow: int
    proves: bool  # the piece starts at or before the phrase's start (with a next piece that reaches its end)

    def covers(self, char: int) -> bool:
        return self.start <= char < self.end


@dataclass(frozen=True)
class Probes:
    """What to look up for a phrase: (token, follow, proves) rows and, per follow offset, the next tokens that
    may come there (with whether they reach the phrase's end)."""

    token: np.ndarray
    follow: np.ndarray
    proves: np.ndarray
    follow_offset: np.ndarray
    next_token: np.ndarray
    reaches: np.ndarray
    estimated_rows: int


def probes(pieces: Pieces, phrase: str) -> Probes:
    """The probes of the phrase's cheapest character (see the module doc); `phrase` is searchable already."""
    placements = _placements(pieces, phrase)
    cost = [
        sum(int(pieces.estimated_rows[p.tokens].sum()) for p in placements if p.covers(char))
        for char in range(len(phrase))
    ]
    char = int(np.argmin(cost))
    chosen = [p for p in placements if p.covers(char)]
    alone = {}  # token -> proves, for tokens enough alone
    paired = []  # (token, follow offset, proves when the next piece reaches the end)
    for placement in chosen:
        for token in placement.tokens.tolist():
            if placement.follow == ANY_NEXT:
                alone[token] = alone.get(token, False) or placement.proves
            else:
                paired.append((token, placement.follow, placement.proves))
    paired = sorted({row for row in paired if row[0] not in alone})
    follow_offsets = sorted({offset for _, offset, _ in paired})
    nexts = [_next_pieces(pieces, phrase, offset) for offset in follow_offsets]
    return Probes(
        token=np.array(list(alone) + [t for t, _, _ in paired], dtype=np.int64),
        follow=np.array([ANY_NEXT] * len(alone) + [offset for _, offset, _ in paired], dtype=np.int64),
        proves=np.array(list(alone.values()) + [proves for _, _, proves in paired], dtype=bool),
        follow_offset=np.concatenate(
            [np.full(len(tokens), offset) for offset, (tokens, _) in zip(follow_offsets, nexts, strict=True)]
            + [np.zeros(0, np.int64)]
        ),
        next_token=np.concatenate([tokens for tokens, _ in nexts] + [np.zeros(0, np.int64)]),
        reaches=np.concatenate([reach for _, reach in nexts] + [np.zeros(0, bool)]),
        estimated_rows=cost[char],
    )


def _placements(pieces: Pieces, phrase: str) -> list[Placement]:
    """Every way a token's piece can hold part of the phrase (see Placement), grouped by offsets."""
    n = len(phrase)
    found = [Placement(pieces.containing(phrase), -1, n + 1, ANY_NEXT, True)]  # the whole phrase inside one piece
    for start in range(n):
        for end in range(start + 1, n + 1):
            if (start, end) != (0, n):  # inside the phrase; the whole of it is `containing`'s
                follow = ANY_NEXT if end == n else end
                found.append(Placement(pieces.equal_to(phrase[start:end]), start, end, follow, start == 0))
    for end in range(1, n):  # starting before the phrase, ending inside it
        found.append(Placement(pieces.longer_ending_with(phrase[:end]), -1, end, end, True))
    for start in range(1, n):  # starting inside the phrase, ending after it
        found.append(Placement(pieces.longer_starting_with(phrase[start:]), start, n + 1, ANY_NEXT, False))
    return [placement for placement in found if len(placement.tokens)]


def _next_pieces(pieces: Pieces, phrase: str, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens whose piece can start at the phrase's `offset` and agree with the rest of it, and whether each
    reaches the phrase's end."""
    rest = phrase[offset:]
    exact = [pieces.equal_to(rest[:length]) for length in range(1, len(rest) + 1)]
    longer = pieces.longer_starting_with(rest)
    tokens = np.concatenate(exact + [longer])
    reaches = [np.full(len(t), length == len(rest)) for length, t in enumerate(exact, 1)]
    reaches = np.concatenate(reaches + [np.ones(len(longer), bool)])
    return tokens, reaches


# -- reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Places:
    """The places a phrase may occur at (stored tokens that can hold one chosen character of it, see the module
    doc), heaviest bound first."""

    doc: np.ndarray
    position: np.ndarray
    last: np.ndarray  # where every probe the place matched proves an occurrence: the position of the token holding
    # the last character of the one ending first (the token here holds the first); -1: the text must decide
    bound: np.ndarray  # no top context whose window holds the token here is heavier (text_postings.cover_max)
    proven: np.ndarray  # some probe the place matched proves an occurrence: its document holds the phrase
    estimated_rows: int


def has_postings(index) -> bool:
    return schema.TEXT_POSTINGS.name in index.tables


def places(index, phrase: str) -> Places | None:
    """The places `phrase` (searchable already, not empty) may occur at, heaviest bound first; None when the phrase
    is common (its cheapest probes have more than COMMON_ROWS rows): then nearly every document holds it."""
    found = probes(pieces_of(index), phrase)
    if found.estimated_rows > COMMON_ROWS:
        return None
    if not len(found.token):  # no token can hold the chosen character: no document holds the phrase
        empty = np.zeros(0, np.int64)
        return Places(empty, empty, empty, np.zeros(0), np.zeros(0, bool), 0)
    import pyarrow as pa  # the probes travel as arrow tables: a long Python list parameter costs a microsecond a value

    probe = pa.table({"token_id": pa.array(found.token, pa.uint32()), "follow": found.follow, "proves": found.proves})
    next_piece = pa.table(
        {"follow": found.follow_offset, "next_id": pa.array(found.next_token, pa.uint32()), "reaches": found.reaches}
    )
    with index.cursor() as conn:
        conn.register("probe", probe)
        conn.register("next_piece", next_piece)
        rows = conn.execute(
            f"""
            WITH matched AS (
                SELECT p.doc, p.position, p.cover_max,
                       probe.proves AND (probe.follow = {ANY_NEXT} OR n.reaches) AS proof,
                       p.position + CASE WHEN probe.follow = {ANY_NEXT} THEN 0 ELSE p.next_step END AS last
                FROM probe JOIN {schema.TEXT_POSTINGS.name} p USING (token_id)
                LEFT JOIN next_piece n ON n.follow = probe.follow AND n.next_id = p.next_id
                WHERE probe.follow = {ANY_NEXT} OR n.next_id IS NOT NULL
            )
            SELECT doc, position, any_value(cover_max) AS bound, bool_or(proof) AS proven,
                   CASE WHEN bool_and(proof) THEN min(last) ELSE -1 END AS last
            FROM matched
            GROUP BY doc, position
            ORDER BY bound DESC, doc, position
            """
        ).fetchnumpy()
    return Places(
        rows["doc"].astype(np.int64),
        rows["position"].astype(np.int64),
        rows["last"].astype(np.int64),
        rows["bound"].astype(np.float64),
        rows["proven"].astype(bool),
        found.estimated_rows,
    )
