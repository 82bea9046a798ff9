"""The writer's derived tables: each equals what its source tables say, and doc_text marks its gaps."""

import duckdb
import numpy as np
import pytest
import torch

from explorer.index import schema
from precompute.indexing.topk import make_address, split_address
from precompute.indexing.writer import _write_doc_text


@pytest.fixture
def conn(app_index):
    with duckdb.connect(str(app_index), read_only=True) as opened:
        yield opened


def test_examples_by_location_is_the_top_examples_by_place(conn):
    by_location = conn.execute("SELECT * FROM examples_by_location").fetchall()  # storage order
    top = conn.execute(
        "SELECT doc, position, grp, expert, rank, weight FROM examples WHERE kind = 'top'"
        " ORDER BY doc, position, grp, expert"
    ).fetchall()
    assert by_location == top and len(top) > 100


def test_expert_tokens_are_the_exact_recount_of_the_examples(conn):
    """Count and mean weight per (expert, highlighted token) over its examples, each place once; the mean is
    the exact mean rounded to REAL, as the reader's recount (math.fsum) computes it."""
    recount = conn.execute(
        """
        WITH places AS (
            SELECT DISTINCT ON (grp, expert, doc, position) grp, expert, doc, position, weight FROM examples
        ), counted AS (
            SELECT grp, expert, token_id, count(*) AS count, avg(weight::DOUBLE)::REAL AS mean_weight
            FROM places JOIN tokens USING (doc, position) GROUP BY ALL
        )
        SELECT grp, expert, token_id, count, mean_weight FROM counted
        QUALIFY row_number() OVER (PARTITION BY grp, expert ORDER BY count DESC, mean_weight DESC, token_id) <= 16
        ORDER BY token_id, grp, expert
        """
    ).fetchall()
    assert conn.execute("SELECT * FROM expert_tokens").fetchall() == recount


def test_doc_text_holds_every_stored_token_at_its_offset(conn):
    vocab = [text.lower() for (text,) in conn.execute("SELECT text FROM vocab ORDER BY token_id").fetchall()]
    stored = dict(((doc, position), token) for doc, position, token in conn.execute("SELECT * FROM tokens").fetchall())
    for doc, text, positions, offsets, _ in conn.execute("SELECT * FROM doc_text").fetchall():
        assert [(doc, p) for p in positions] == sorted(key for key in stored if key[0] == doc)
        for position, offset in zip(positions, offsets, strict=True):
            piece = vocab[stored[doc, position]]
            assert text[offset : offset + len(piece)] == piece


def test_doc_text_marks_gaps_between_runs_of_stored_tokens():
    """Tokens 0-1 and 4 of doc 7 are stored: the text holds U+0000 between the runs, offsets skip it."""
    vocab = ["A", " b", "C"]
    with duckdb.connect() as conn:
        for statement in schema.create_statements():
            conn.execute(statement)
        conn.execute("INSERT INTO tokens VALUES (7, 0, 0), (7, 1, 1), (7, 4, 2), (8, 2, 1)")
        conn.execute("INSERT INTO examples_by_location VALUES (7, 1, 0, 5, 0, 0.5), (7, 4, 1, 5, 0, 0.25)")
        _write_doc_text(conn, vocab)
        rows = conn.execute("SELECT doc, text, positions, offsets, max_weight FROM doc_text").fetchall()
    gap = schema.DOC_TEXT_GAP
    assert rows == [(7, f"a b{gap}c", [0, 1, 4], [0, 1, 4], 0.5), (8, " b", [2], [0], 0.0)]


def test_addresses_round_trip_for_arrays_and_tensors():
    doc, position = np.array([0, 3, 70_000]), np.array([5, 0, 2**32 - 1])
    address = make_address(doc, position)
    assert (np.diff(address) > 0).all()  # one int64 ordered by (doc, position)
    assert [part.tolist() for part in split_address(address)] == [doc.tolist(), position.tolist()]
    tensor = make_address(torch.from_numpy(doc), torch.from_numpy(position))
    assert tensor.tolist() == address.tolist()
    assert [part.tolist() for part in split_address(tensor)] == [doc.tolist(), position.tolist()]
