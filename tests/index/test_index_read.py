"""The read API (explorer.index) on a small index of the VD conformance checkpoint, embeddings included."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pandas as pd
import pytest

from explorer.index.reader import ExpertIndex, IndexUnavailable
from precompute.cli import main
from precompute.indexing.job import run_index


@pytest.fixture(scope="module")
def index_path(tmp_path_factory, vd_tiny, index_options, tiny_corpus_file):
    folder = tmp_path_factory.mktemp("read")
    options = index_options(
        vd_tiny.checkpoint,
        tiny_corpus_file,
        folder / "index.duckdb",
        no_embeddings=False,
        samples=8,
    )
    return run_index(options)


@pytest.fixture(scope="module")
def index(index_path):
    with ExpertIndex(index_path) as opened:
        yield opened


def busiest(index, group=0):
    return int(index.most_active(group, 1)["expert"].iloc[0])


def test_meta_and_stats(index):
    meta = index.meta()
    assert (meta.moe_experts, meta.num_groups, meta.top_k, meta.schema_version) == (16, 2, 4, 2)
    expert = busiest(index)
    stats = index.stats(0, expert)
    assert stats.name == f"G1/{expert}" and (stats.i, stats.j) == divmod(expert, 16)
    assert stats.active_count > 0 and stats.density == pytest.approx(stats.active_count / meta.tokens_processed)
    assert stats.mean_weight <= stats.mean_active_weight <= stats.max_weight
    assert stats.label
    assert index.histogram(0, expert)["count"].sum() == stats.active_count


def test_top_examples_point_at_highlighted_tokens(index):
    expert = busiest(index)
    examples = index.top_examples(0, expert)
    assert 0 < len(examples) <= 4 and len(index.top_examples(0, expert, k=2)) == min(2, len(examples))
    assert [e.weight for e in examples] == sorted((e.weight for e in examples), reverse=True)
    assert examples[0].weight == pytest.approx(index.stats(0, expert).max_weight)
    for example in examples:
        assert len(example.tokens) == len(example.weights) == len(example.token_ids) <= 2 * 3 + 1
        assert example.weights[example.highlight] == pytest.approx(example.weight, abs=example.weight / 255 + 1e-6)
        assert example.domain in {"prose", "code", "german"}
        assert example.text == "".join(example.tokens)


def test_quantile_examples_lie_below_the_top(index):
    expert = busiest(index)
    top = {(e.doc, e.position) for e in index.top_examples(0, expert)}
    picks = index.quantile_examples(0, expert, n=3)
    assert 0 < len(picks) <= 3
    assert all((e.doc, e.position) not in top and e.kind == "sample" for e in picks)
    assert [e.quantile for e in picks] == sorted(e.quantile for e in picks)
    assert [e.weight for e in picks] == sorted((e.weight for e in picks), reverse=True)


def test_tokens_domains_and_density_map(index):
    expert = busiest(index)
    tokens = index.top_tokens(0, expert, n=5)
    assert list(tokens.columns) == ["token_id", "token", "count", "mean_weight"] and len(tokens) <= 5
    assert tokens["count"].is_monotonic_decreasing
    means = index.domain_means(0, expert)
    assert sorted(means["domain"]) == ["code", "german", "prose"]
    assert means["mean_weight"].sum() > 0
    token_id = int(tokens["token_id"].iloc[0])
    by_id = index.experts_for_token(token_id, group=0)
    assert expert in by_id["expert"].tolist() and (by_id["grp"] == 0).all()
    by_text = index.experts_for_token(index.token_text(token_id), group=0, limit=1000)
    assert set(by_id["expert"]) <= set(by_text["expert"])
    density = index.group_density_map(0)
    assert density.shape == (16, 16)
    assert density[divmod(expert, 16)] == pytest.approx(index.stats(0, expert).density)
    assert index.stats(0, 255).active_count == 0 or density[15, 15] > 0


def test_top_tokens_recounted_from_examples_equal_the_written_table(index, index_path):
    with duckdb.connect(str(index_path), read_only=True) as conn:
        table = conn.execute("SELECT grp, expert, token_id, count, mean_weight FROM expert_tokens").df()
    for (group, expert), written in list(table.groupby(["grp", "expert"]))[:40]:
        read = index.top_tokens(int(group), int(expert), n=16)
        written = written.sort_values(["count", "mean_weight", "token_id"], ascending=[False, False, True])
        assert read["token_id"].tolist() == written["token_id"].tolist()
        assert read["count"].tolist() == written["count"].tolist()
        np.testing.assert_allclose(read["mean_weight"], written["mean_weight"], rtol=1e-6)


def test_labels_of_many_experts_in_one_read(index):
    experts = [(0, int(e)) for e in index.most_active(0, 5)["expert"]] + [(1, busiest(index, 1))]
    labels = index.labels(experts + [(0, 255)] * (index.stats(0, 255).active_count == 0))
    assert labels == {(g, e): index.stats(g, e).label for g, e in experts}
    assert index.labels([]) == {}


def test_activity_rankings_and_siblings(index):
    most, least = index.most_active(1, 5), index.least_active(1, 5)
    assert most["active_count"].is_monotonic_decreasing and least["active_count"].is_monotonic_increasing
    assert (least["active_count"] > 0).all()
    siblings = index.siblings(1, i=3)
    assert len(siblings) and (siblings["i"] == 3).all()
    both = index.siblings(1, i=3, j=5)
    assert ((both["i"] == 3) | (both["j"] == 5)).all() and len(both) > len(siblings) - 1


def test_domain_experts_follow_the_two_x_rule(index, index_path):
    with duckdb.connect(str(index_path), read_only=True) as conn:
        means = conn.execute(
            "SELECT x.grp, x.expert, x.domain, x.weight_sum / d.n_tokens AS mean FROM expert_domains x"
            " JOIN domains d USING (domain)"
        ).df()
    table = means.pivot_table(index=["grp", "expert"], columns="domain", values="mean", fill_value=0.0)
    for domain in table.columns:
        others = table.drop(columns=domain).max(axis=1)
        want = table[(table[domain] > 0) & (table[domain] >= 2.0 * others)].index.tolist()
        got = index.experts_skewed_to_domain(domain)
        assert sorted(zip(got["grp"], got["expert"], strict=True)) == sorted(want)
    assert len(index.experts_skewed_to_domain("german", group=1)["grp"].unique()) <= 1


def test_search_text_is_parameterised(index):
    hits = index.search_text("QUICK")
    assert len(hits) and all("quick" in text.lower() for text in hits["text"])
    assert hits["weight"].is_monotonic_decreasing
    assert index.search_text("'; DROP TABLE experts; --").empty
    assert index.search_text("q_ick").empty and index.search_text("q%k").empty  # literals, not wildcards
    assert all("%" in text for text in index.search_text("%")["text"])
    assert index.most_active(0, 1).shape[0] == 1


@pytest.mark.parametrize("first_batch", [64, 1])  # 1: one document, then 2, 4, ...: the early stop is exercised
def test_search_text_finds_exactly_the_top_contexts_containing_it(index, monkeypatch, first_batch):
    """Against brute force: every top context's window text, searched with str.lower and `in`."""
    monkeypatch.setattr("explorer.index.reader.TEXT_SEARCH_FIRST_BATCH", first_batch)
    windows = {}
    for group in range(2):
        for expert in index.most_active(group, 256)["expert"]:
            for example in index.top_examples(group, int(expert)):
                windows[group, int(expert), example.rank] = (example.text, example.weight)
    busiest_text = max((text for text, _ in windows.values()), key=len)
    needles = ["e", "QUICK", busiest_text[3:11], busiest_text[-9:].upper(), "zzqx"]
    for needle in needles:
        hits = index.search_text(needle, limit=10**6)
        searched, containing = hits.attrs["documents"]
        assert searched == containing and hits.attrs["exact"]  # the tiny corpus stays under the document cap
        want = {key: weight for key, (text, weight) in windows.items() if needle.lower() in text.lower()}
        assert set(zip(hits["grp"], hits["expert"], hits["rank"], strict=True)) == set(want), needle
        assert all(needle.lower() in text.lower() for text in hits["text"])
        # a small limit stops early once no unvisited document can hold a heavier context: still exact
        heaviest = sorted(want, key=lambda key: (-want[key], key))[:3]
        top3 = index.search_text(needle, limit=3)
        assert list(zip(top3["grp"], top3["expert"], top3["rank"], strict=True)) == heaviest and top3.attrs["exact"]
    assert len(index.search_text("e", limit=10**6)) > 10  # a common letter: many contexts, all found
    assert index.search_text("").empty
    monkeypatch.setattr("explorer.index.reader.TEXT_SEARCH_DOCUMENTS", 2)
    capped = index.search_text("e", limit=10**6)
    assert capped.attrs["documents"][0] == 2 < capped.attrs["documents"][1] and not capped.attrs["exact"]


def test_semantic_search_and_similar(index):
    hits = index.search_semantic("python code", limit=5)
    assert len(hits) == 5 and hits["score"].is_monotonic_decreasing
    assert hits["score"].between(-1.0001, 1.0001).all()
    expert = busiest(index)
    near = index.similar(0, expert, n=3)
    assert len(near) == 3 and expert not in near["expert"].tolist() and (near["grp"] == 0).all()


def test_threads_share_one_index(index):
    experts = index.most_active(0, 16)["expert"].tolist()

    def read(expert):
        return index.stats(0, expert), [e.weight for e in index.top_examples(0, expert)]

    sequential = [read(e) for e in experts]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(read, experts * 1)) == sequential


def test_unavailable_indexes_say_what_to_do(tmp_path, index_path):
    with pytest.raises(IndexUnavailable, match="No expert index.*python -m precompute index"):
        ExpertIndex(tmp_path / "missing.duckdb")
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(IndexUnavailable, match="not a readable expert index"):
        ExpertIndex(garbage)
    old = tmp_path / "old.duckdb"
    shutil.copy(index_path, old)
    with duckdb.connect(str(old)) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(IndexUnavailable, match="schema version 0.*rebuild"):
        ExpertIndex(old)
    bare = tmp_path / "bare.duckdb"
    shutil.copy(index_path, bare)
    with duckdb.connect(str(bare)) as conn:
        conn.execute("UPDATE meta SET value = 'null' WHERE key = 'embedding_model'")
    with ExpertIndex(bare) as opened, pytest.raises(IndexUnavailable, match="no-embeddings"):
        opened.search_semantic("anything")
    assert np.isfinite(ExpertIndex(bare).group_density_map(0)).all()


def test_a_schema_1_index_upgrades_without_the_model(tmp_path, index_path):
    """Schema 1 = schema 2 without its lookup tables (expert_tokens was ordered by expert, same rows)."""
    old = tmp_path / "v1.duckdb"
    shutil.copy(index_path, old)
    with duckdb.connect(str(old)) as conn:
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute("DROP TABLE doc_text")
        conn.execute("DROP TABLE examples_by_location")
    with pytest.raises(IndexUnavailable, match="schema version 1.*precompute upgrade"):
        ExpertIndex(old)
    assert main(["upgrade", str(old), "--out", str(tmp_path / "new.duckdb")]) == 0
    assert main(["upgrade", str(old), "--out", str(tmp_path / "new.duckdb")]) == 1  # exists: not overwritten
    tables = ["experts", "examples", "examples_by_location", "expert_tokens", "doc_text", "tokens", "expert_domains"]
    with duckdb.connect(str(index_path), read_only=True) as a, duckdb.connect(str(tmp_path / "new.duckdb")) as b:
        for table in tables:
            query = f"SELECT * FROM {table} ORDER BY ALL"
            pd.testing.assert_frame_equal(a.execute(query).df(), b.execute(query).df(), obj=table)
    with ExpertIndex(tmp_path / "new.duckdb") as upgraded:
        assert upgraded.meta().schema_version == 2 and len(upgraded.search_text("quick"))
