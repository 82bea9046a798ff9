"""Text search through the token postings (explorer.index.postings) against the scan it replaces, which reads every
document's text: the same contexts, counts and flags for any phrase, on the tiny index and on a synthetic one whose
vocabulary is made to be hard (overlapping short pieces, empty pieces, case, gaps in the token store)."""

import shutil
import string

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.synthetic_index import synthetic_contents, synthetic_state
from explorer.index import postings, schema, text_search
from explorer.index.reader import ExpertIndex
from explorer.index.text_search import search_text
from precompute.cli import main as cli
from precompute.indexing.writer import write_index

# pieces that overlap each other every way, an empty piece, case and the doc_text gap marker inside a piece
HARD_VOCAB = ["a", "b", "ab", "ba", "aa", "bab", "A", "B", "Ab", " ", " a", "a ", "", "c", "abc", "x\x00y", "bb", "ca"]


def without_postings(path, folder):
    """A copy of an index as written before text_postings existed."""
    old = folder / "old.duckdb"
    shutil.copy(path, old)
    with duckdb.connect(str(old)) as conn:
        conn.execute("DROP TABLE text_postings")
    return old


@pytest.fixture(scope="module")
def tiny(app_index, tmp_path_factory):
    """(the tiny index, its copy without postings), opened."""
    with (
        ExpertIndex(app_index) as fast,
        ExpertIndex(without_postings(app_index, tmp_path_factory.mktemp("old"))) as old,
    ):
        yield fast, old


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """(a small synthetic index over HARD_VOCAB, its copy without postings), opened."""
    folder = tmp_path_factory.mktemp("hard")
    shape = dict(groups=2, experts_per_side=4, top_k=4, samples=2, context=2, corpus_docs=40, doc_tokens=30)
    state = synthetic_state(**shape, seed=3)
    contents = synthetic_contents(state, **shape, vocab_size=len(HARD_VOCAB))
    contents.vocab = HARD_VOCAB
    token_ids = np.random.default_rng(3).integers(0, len(HARD_VOCAB), len(contents.tokens))
    contents.tokens = contents.tokens.with_columns(token_id=pl.Series(token_ids))
    path = write_index(folder / "hard.duckdb", state, contents)
    with ExpertIndex(path) as fast, ExpertIndex(without_postings(path, folder)) as old:
        yield fast, old


def doc_texts(index) -> dict[int, str]:
    return dict(index.rows("SELECT doc, text FROM doc_text"))


def same_search(fast, old, phrase: str, limit: int, group=None) -> text_search.TextSearch:
    """Search both ways; everything but the note must agree. Returns the fast search."""
    found, scanned = search_text(fast, phrase, group, limit), search_text(old, phrase, group, limit)
    place = [(h.group, h.expert, h.rank, h.weight, h.doc, h.position, h.text) for h in found.hits]
    assert place == [(h.group, h.expert, h.rank, h.weight, h.doc, h.position, h.text) for h in scanned.hits], phrase
    assert (found.documents_containing, found.exact) == (scanned.documents_containing, scanned.exact), phrase
    if limit > 10**5:  # visited everything: the same documents searched
        assert found.documents_searched == scanned.documents_searched == found.documents_containing, phrase
    assert found.note == "" and ("python -m precompute upgrade" in scanned.note or not postings.searchable(phrase))
    return found


def substrings(index):
    """A strategy of phrases cut from the stored text (found somewhere), with random case."""
    texts = [text.replace(schema.DOC_TEXT_GAP, "") for text in doc_texts(index).values()]
    return st.builds(
        lambda text, start, length, upper: text[start : start + length].upper() if upper else text[start:][:length],
        st.sampled_from(texts),
        st.integers(0, 200),
        st.integers(1, 14),
        st.booleans(),
    ).filter(bool)


@pytest.mark.parametrize("first_batch", [1, 32])
def test_the_tiny_index_searched_through_postings_equals_the_scan(tiny, monkeypatch, first_batch):
    monkeypatch.setattr(text_search, "TEXT_SEARCH_FIRST_BATCH", first_batch)
    fast, old = tiny
    phrases = ["e", "QUICK", "the ", " ", "zzqx", "%", "q_ick", "\u00df", "ick th"]
    phrases += [text[i : i + n] for text in list(doc_texts(fast).values())[:4] for i, n in ((3, 5), (10, 2), (0, 12))]
    for phrase in phrases:
        for limit in (1, 3, 10**6):
            same_search(fast, old, phrase, limit)
        same_search(fast, old, phrase, 5, group=1)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_phrase_of_the_hard_index_gives_what_the_scan_gives(hard, data):
    fast, old = hard
    phrase = data.draw(st.one_of(substrings(fast), st.text(alphabet="abcABC x\x00y", min_size=1, max_size=6)))
    limit = data.draw(st.sampled_from([1, 2, 7, 10**6]))
    default = text_search.TEXT_SEARCH_FIRST_BATCH
    text_search.TEXT_SEARCH_FIRST_BATCH = data.draw(st.sampled_from([1, 3, default]))
    try:
        same_search(fast, old, phrase, limit, group=data.draw(st.sampled_from([None, 0, 1])))
    finally:
        text_search.TEXT_SEARCH_FIRST_BATCH = default


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_places_hold_every_occurrence_and_prove_only_real_ones(hard, data):
    """Every document holding the phrase has a place; a proven place's document holds it; a settled place (its
    first and last token known) is an occurrence spelt by exactly those tokens."""
    fast, _ = hard
    phrase = postings.searchable(data.draw(st.one_of(substrings(fast), st.text(alphabet="abcAB ", min_size=1))))
    if not phrase:
        return
    texts = doc_texts(fast)
    places = postings.places(fast, phrase)
    assert {doc for doc, text in texts.items() if phrase in text} <= set(places.doc.tolist())
    assert {doc for doc, proven in zip(places.doc, places.proven, strict=True) if proven} <= {
        doc for doc, text in texts.items() if phrase in text
    }
    pieces = postings.pieces_of(fast).pieces
    stored = {(doc, position): token for doc, position, token in fast.rows("SELECT * FROM tokens")}
    for doc, first, last in zip(places.doc, places.position, places.last, strict=True):
        if last < 0:
            continue
        spelt = [pieces[stored[doc, p]] for p in range(first, last + 1)]  # every position between is stored
        text = "".join(spelt)
        starts = [i for i in range(len(text)) if text.startswith(phrase, i)]
        ends_in_last = len(text) - len(spelt[-1])
        assert any(i < len(spelt[0]) and i + len(phrase) > ends_in_last for i in starts), (phrase, spelt)
    assert list(places.bound) == sorted(places.bound, reverse=True)


def test_text_postings_are_what_the_token_store_says(hard):
    """Every stored token with a piece has its row; next_id is the next piece's token when no gap lies between;
    cover_max the heaviest top context whose window holds the token."""
    fast, _ = hard
    pieces, context = postings.pieces_of(fast).pieces, fast.context
    stored = fast.rows("SELECT doc, position, token_id FROM tokens ORDER BY doc, position")
    contexts = fast.rows("SELECT doc, position, weight FROM examples_by_location")
    places = {(doc, position) for doc, position, _ in stored}
    want = []
    for k, (doc, position, token) in enumerate(stored):
        if not pieces[token]:
            continue
        following = next(((p, t) for d, p, t in stored[k + 1 :] if d == doc and pieces[t]), None)
        adjacent = following is not None and all((doc, q) in places for q in range(position, following[0] + 1))
        next_id, step = (following[1], following[0] - position) if adjacent else (postings.NO_NEXT, 0)
        cover = max((w for d, p, w in contexts if d == doc and abs(p - position) <= context), default=0.0)
        want.append((token, next_id, step, doc, position, pytest.approx(cover)))
    got = fast.rows("SELECT token_id, next_id, next_step, doc, position, cover_max FROM text_postings")
    assert sorted(got) == sorted(want, key=lambda row: row[:5])
    assert got == sorted(got, key=lambda row: (row[0], row[1], row[3], row[4]))  # the table's order
    assert any(row[1] == postings.NO_NEXT for row in got) and any(row[2] > 1 for row in got)  # gaps, empty pieces


def test_common_phrases_read_whole_documents_heaviest_first(tiny, monkeypatch):
    """Past COMMON_ROWS, the documents are read heaviest first as before the postings: same contexts; the count of
    documents holding the phrase is given only when every one was read."""
    fast, old = tiny
    monkeypatch.setattr(postings, "COMMON_ROWS", 0)
    monkeypatch.setattr(text_search, "TEXT_SEARCH_FIRST_BATCH", 1)
    everything = search_text(fast, "e", limit=10**6)
    assert everything.documents_containing == search_text(old, "e", limit=10**6).documents_containing
    heaviest = search_text(fast, "e", limit=2)  # stops before the last documents (every one holds an "e")
    assert [h.weight for h in heaviest.hits] == [h.weight for h in search_text(old, "e", limit=2).hits]
    assert heaviest.documents_searched < everything.documents_searched
    assert heaviest.exact and heaviest.documents_containing is None and heaviest.note == ""


def test_the_document_cap_still_holds(tiny, monkeypatch):
    fast, old = tiny
    everything = {(h.group, h.expert, h.rank) for h in search_text(old, "e", limit=10**6).hits}
    monkeypatch.setattr(text_search, "TEXT_SEARCH_DOCUMENTS", 2)
    monkeypatch.setattr(text_search, "TEXT_SEARCH_FIRST_BATCH", 1)
    capped = search_text(fast, "e", limit=10**6)  # which two documents differs from the scan's: by place bound
    assert capped.documents_searched == 2 < capped.documents_containing and not capped.exact
    assert capped.hits and {(h.group, h.expert, h.rank) for h in capped.hits} < everything
    assert len({h.doc for h in capped.hits}) == 2


def test_upgrade_adds_the_postings_to_a_file_without_them(app_index, tmp_path, capsys):
    old = without_postings(app_index, tmp_path)
    with ExpertIndex(old) as index:
        assert "upgrade" in search_text(index, "the").note
    assert cli(["upgrade", str(old), "--out", str(tmp_path / "new.duckdb"), "--quiet"]) == 0
    with duckdb.connect(str(app_index), read_only=True) as a, duckdb.connect(str(tmp_path / "new.duckdb")) as b:
        tables = [name for (name,) in a.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        assert tables == [name for (name,) in b.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        for table in tables:
            query = f"SELECT * FROM {table} ORDER BY ALL"
            assert a.execute(query).fetchall() == b.execute(query).fetchall(), table
    with ExpertIndex(tmp_path / "new.duckdb") as index:
        assert search_text(index, "the").note == ""


def test_phrases_no_token_can_hold(hard):
    fast, old = hard
    for phrase in ["z", "abz", "\u00e9", string.digits]:
        assert same_search(fast, old, phrase, 10).hits == []
    assert search_text(fast, "").hits == [] and search_text(fast, "\x00").hits == []
