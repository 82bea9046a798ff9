"""Expert scores: the table agrees with the definitions recomputed one window at a time, a killed run keeps what it
wrote, --scores-for picks the experts it names, and the command prints the cost per expert."""

import shutil

import duckdb
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from explorer.index.embedding import embed_texts
from explorer.index.reader import ExpertIndex
from explorer.model.naming import ExpertRef, ModelShape
from precompute.cli import main
from precompute.indexing import scores
from precompute.indexing.job import run_index
from precompute.indexing.options import IndexJobError


def _table(path) -> dict[tuple[int, int], tuple]:
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT grp, expert, contexts_scored, contexts_active, causal_effect, coherence FROM expert_scores"
        ).fetchall()
    return {(g, e): tuple(rest) for g, e, *rest in rows}


@torch.no_grad()
def _causal_effect_by_definition(model, index: ExpertIndex, ref: ExpertRef) -> tuple[float, int]:
    """Mean KL(plain || switched off) at the last token of each top context's window max(0, p - C) .. p, each window
    run alone, plain and through the public ablation path; and how many windows the switch changed at all."""
    kls, changed = [], 0
    for example in index.top_examples(ref.group, ref.flat):
        ids = torch.tensor([example.token_ids[: example.highlight + 1]])  # the stored window up to the position
        assert ids.shape[1] == min(example.position, index.context) + 1
        log_p = F.log_softmax(model(ids).logits[0, -1].float(), -1)
        log_q = F.log_softmax(model(ids, ablate=[str(ref)]).logits[0, -1].float(), -1)
        kls.append(float((log_p.exp() * (log_p - log_q)).sum()))
        changed += not torch.equal(log_p, log_q)
    return float(np.mean(kls)), changed


def test_causal_effects_equal_the_definition(app_index, vd_tiny):
    table = _table(app_index)
    model = vd_tiny.load_model()
    shape = ModelShape.of(model.config)
    with ExpertIndex(app_index) as index:
        assert len(table) == len(index.rows("SELECT * FROM experts"))  # the job scores every expert by default
        by_effect = sorted(table, key=lambda k: table[k][2])
        partly_active = [k for k in by_effect if 0 < table[k][1] < table[k][0]]
        picks = [by_effect[-1], by_effect[-2], by_effect[len(by_effect) // 2], by_effect[0], partly_active[0]]
        picks += [next(k for k in reversed(by_effect) if k[0] == 1)]  # the strongest of G2 (layers 2-3)
        for group, expert in picks:
            ref = ExpertRef.from_flat(group, expert, shape.experts_per_side)
            contexts, active, effect, _ = table[group, expert]
            expected, changed = _causal_effect_by_definition(model, index, ref)
            assert contexts == len(index.top_examples(group, expert))
            assert effect == pytest.approx(expected, abs=1e-6, rel=1e-3), ref
            assert changed <= active  # where the expert has no weight in the window, switching it off changes nothing
    assert table[by_effect[-1]][2] > 1e-4, "no expert moves the next token: the comparison would check nothing"


def test_coherence_equals_the_definition(app_index):
    table = _table(app_index)
    with ExpertIndex(app_index) as index:
        baseline = index.meta().coherence_baseline
        assert index.meta().coherence_seed == scores.COHERENCE_SEED and -1 < baseline < 1
        ranked = sorted((k for k in table if table[k][3] is not None), key=lambda k: table[k][3])
        for group, expert in [ranked[0], ranked[len(ranked) // 2], ranked[-1]]:
            vectors = embed_texts([e.text for e in index.top_examples(group, expert)]).astype(np.float64)
            n = len(vectors)
            pairs = [vectors[a] @ vectors[b] for a in range(n) for b in range(n) if a != b]
            assert table[group, expert][3] == pytest.approx(np.mean(pairs) - baseline, abs=1e-5)
    assert ranked[-1] != ranked[0] and table[ranked[-1]][3] > table[ranked[0]][3] + 0.05


@pytest.fixture
def unscored_index(tmp_path, vd_tiny, index_options, tiny_corpus_file):
    """The tiny corpus indexed without scores (they are added by the test)."""
    return run_index(index_options(vd_tiny.checkpoint, tiny_corpus_file, tmp_path / "plain.duckdb", scores_for="none"))


def test_an_index_built_with_scores_for_none_has_an_empty_table(unscored_index):
    assert _table(unscored_index) == {}
    with ExpertIndex(unscored_index) as index:
        assert index.meta().scores_for is None and index.meta().coherence_baseline is None


def test_a_killed_run_keeps_its_scores_and_a_rerun_finishes(unscored_index, vd_tiny, tmp_path, monkeypatch):
    model = vd_tiny.load_model()
    whole = tmp_path / "whole.duckdb"
    shutil.copy(unscored_index, whole)
    scores.score_index(whole, model, "all", batch=16, coherence=False)
    monkeypatch.setattr(scores, "BATCHES_PER_WRITE", 2)  # writes every 2 * 16 // 4 = 8 experts
    real, calls = scores.switched_off_kl, []

    def killed_in_the_third_chunk(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(scores, "switched_off_kl", killed_in_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        scores.score_index(unscored_index, model, "all", batch=16, coherence=False)
    kept = _table(unscored_index)
    assert len(kept) == 16
    monkeypatch.setattr(scores, "switched_off_kl", real)
    report = scores.score_index(unscored_index, model, "all", batch=16, coherence=False)
    finished, expected = _table(unscored_index), _table(whole)
    assert report.experts == len(expected) - 16
    assert {k: finished[k] for k in kept} == kept  # written once, never recomputed
    assert finished.keys() == expected.keys()
    for key, (contexts, active, effect, coherence) in expected.items():
        assert finished[key][:2] == (contexts, active) and finished[key][3] is coherence is None
        assert finished[key][2] == pytest.approx(effect, abs=1e-6)  # other batches: float32 rounding differs
    assert scores.score_index(unscored_index, model, "all", coherence=False).experts == 0  # nothing left to do


def test_coherence_is_added_to_rows_that_lack_it(unscored_index, vd_tiny):
    model = vd_tiny.load_model()
    scores.score_index(unscored_index, model, "G1/3, G2/7", coherence=False)
    before = _table(unscored_index)
    assert before.keys() == {(0, 3), (1, 7)} and all(row[3] is None for row in before.values())
    report = scores.score_index(unscored_index, model, "G1/3, G1/5", coherence=True)
    after = _table(unscored_index)
    assert report.experts == 2 and report.contexts == 4  # G1/3 kept its causal effect; only G1/5 ran the model
    assert after[0, 3][:3] == before[0, 3][:3] and after[0, 3][3] is not None and after[1, 7] == before[1, 7]
    with ExpertIndex(unscored_index) as index:
        assert index.meta().scores_for == "G1/3, G2/7; G1/3, G1/5"
        assert index.meta().scores_dtype == "float32" and index.meta().coherence_baseline is not None


def test_scores_for_names_groups_experts_and_the_most_active(unscored_index, vd_tiny):
    shape = ModelShape.of(vd_tiny.load_model().config)
    with duckdb.connect(str(unscored_index), read_only=True) as conn:
        top = scores.chosen_experts(conn, "top 3", shape)
        assert [g for g, _ in top.tolist()] == [0, 0, 0, 1, 1, 1]
        busiest = conn.execute("SELECT expert FROM experts WHERE grp = 0 ORDER BY active_count DESC LIMIT 3").fetchall()
        assert sorted(e for (e,) in busiest) == [e for g, e in top.tolist() if g == 0]
        assert scores.chosen_experts(conn, "G2 (1, 2), G1/5", shape).tolist() == [[0, 5], [1, 18]]
        group = scores.chosen_experts(conn, "G2", shape)
        assert len(group) == conn.execute("SELECT count(*) FROM experts WHERE grp = 1").fetchone()[0]
        for bad in ("G3", "G1/999", "most", ""):
            with pytest.raises(IndexJobError, match="scores-for"):
                scores.chosen_experts(conn, bad, shape)


def test_the_command_scores_a_file_and_prints_the_cost_per_expert(unscored_index, vd_tiny, capsys):
    code = main(["scores", str(unscored_index), "--model", str(vd_tiny.checkpoint), "--scores-for", "top 2"])
    code += main(["scores", str(unscored_index), "--model", str(vd_tiny.checkpoint), "--scores-for", "top 2"])
    shown = capsys.readouterr().out
    assert code == 0 and "scored 4 experts in" in shown and "s/expert" in shown and "nothing to score" in shown
    assert len(_table(unscored_index)) == 4


def test_a_model_of_another_shape_is_refused(unscored_index, hd_tiny):
    with pytest.raises(IndexJobError, match="moe_decompose"):
        scores.score_index(unscored_index, hd_tiny.load_model(), "G1/3")


def test_a_merged_index_holds_no_scores_of_its_shards(tmp_path, vd_tiny, index_options, tiny_corpus_file):
    from precompute.indexing.shards import merge_indexes

    shards = [
        run_index(index_options(vd_tiny.checkpoint, tiny_corpus_file, tmp_path / f"s{k}.duckdb", shard=f"{k}/2"))
        for k in range(2)
    ]
    assert all(_table(shard) for shard in shards)
    merged = merge_indexes(shards, tmp_path / "merged.duckdb", embed=False)
    assert _table(merged) == {}  # the top contexts changed: the shards' scores would be wrong
    with ExpertIndex(merged) as index:
        assert index.meta().scores_for is None and index.meta().scores_model is None
