"""Expert labels (explorer.index.labels): the tokens that distinguish an expert from the corpus, its domain first."""

import duckdb
import numpy as np
import polars as pl
import pytest

from explorer.index import labels
from explorer.index.domains import specialised_experts
from explorer.index.reader import ExpertIndex


@pytest.mark.parametrize(
    ("token", "word"),
    [(" Hund", "Hund"), ("\n\t\t", "↵⇥⇥"), (" ", "␣"), (" \n", "↵"), ("a\x07", "a⟨BEL⟩"), ("\ufffd", None), ("", None)],
)
def test_a_token_as_a_label_word(token, word):
    assert labels.label_word(token) == word


def test_visible_draws_whitespace_and_control_characters():
    assert labels.visible(" the") == "␣the" and labels.visible("") == "∅"
    assert labels.visible(" a b\n\x07", spaces=False) == " a b↵⟨BEL⟩"
    assert labels.visible("\u200b\x7f") == "⟨U+200B⟩⟨DEL⟩"


def scores(rows: list[tuple[int, int, int]], corpus: list[int]) -> dict[tuple[int, int], float]:
    counts = pl.DataFrame(rows, schema={"slot": pl.Int64, "token_id": pl.Int64, "count": pl.Int64}, orient="row")
    scored = labels.token_scores(counts, np.array(corpus))
    return {(slot, token): score for slot, token, score in scored.select("slot", "token_id", "score").iter_rows()}


def test_the_score_weighs_the_corpus_and_the_evidence():
    corpus = [100_000, 200, 1, 5_000]  # token 0 is everywhere (think "."), 2 is rare
    score = scores([(0, 0, 10), (0, 1, 10), (0, 2, 1), (0, 3, 2)], corpus)
    assert score[0, 1] > score[0, 0]  # as often at the expert, much rarer in the corpus: more distinctive
    assert score[0, 1] > score[0, 2]  # seen once, however rare, does not beat a token the expert returns to
    assert score[0, 3] < 1.96  # seen at 2 of 23 examples, 2.5% of the corpus: not clearly over-represented


def test_label_texts_pick_recurring_distinctive_words_once():
    vocab = ["x", " Hund", "Hund", " Katze", "\ufffd", " Maus", "\n"]
    scored = pl.DataFrame(
        {
            "slot": [0, 0, 0, 0, 0, 0, 1, 1],
            "token_id": [1, 2, 4, 3, 5, 6, 0, 6],
            "count": [9, 5, 8, 4, 1, 3, 1, 1],
            "score": [9.0, 8.0, 7.5, 7.0, 12.0, 1.0, 3.0, 5.0],
        }
    )
    texts = labels.label_texts(scored, vocab)
    # "Hund" once (" Hund" and "Hund" are one word), no part of a character, " Maus" seen once, "\n" not distinctive
    assert texts[0] == "Hund · Katze"
    assert texts[1] == "↵"  # nothing recurs: the best-scored word alone
    assert labels.with_domain("german", texts[0]) == "german: Hund · Katze" and labels.with_domain("code", "") == "code"


def test_the_written_labels_are_readable_and_led_by_the_domain_rule(app_index):
    with ExpertIndex(app_index) as index:
        specialised = {(v.group, v.expert): v.top_domain for v in specialised_experts(index)}
        written = dict(((g, e), label) for g, e, label in index.rows("SELECT grp, expert, label FROM experts"))
        domains = set(index.domain_tokens())
    assert specialised and len(specialised) < len(written)
    for key, label in written.items():
        assert label and "\ufffd" not in label and not any(ch < " " for ch in label), label
        if key in specialised:
            assert label.startswith(specialised[key] + ": ")
        else:
            assert label.split(": ")[0] not in domains


def test_the_corpus_counts_add_up_to_the_tokens_processed(app_index):
    with duckdb.connect(str(app_index), read_only=True) as conn:
        total, entries = conn.execute("SELECT sum(corpus_count), count(*) FROM vocab").fetchone()
        processed = ExpertIndex(app_index).meta().tokens_processed
    assert total == processed and entries > 100
