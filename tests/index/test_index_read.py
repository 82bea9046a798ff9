"""The read API (explorer.index) on a small index of the VD conformance checkpoint, embeddings included."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pandas as pd
import pytest

from explorer.index import domains, text_search
from explorer.index.domains import DOMAIN_RATIO, MIN_ACTIVE_TOKENS, specialisation, specialised_experts
from explorer.index.reader import ExpertIndex, IndexUnavailable
from explorer.index.semantic import search_semantic, similar
from explorer.index.text_search import search_text
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
    return index.most_active(group, 1)[0].expert


def test_meta_and_stats(index):
    meta = index.meta()
    assert (meta.moe_experts, meta.num_groups, meta.top_k, meta.schema_version) == (16, 2, 4, 3)
    expert = busiest(index)
    stats = index.stats(0, expert)
    assert stats.name == f"G1/{expert}" and (stats.i, stats.j) == divmod(expert, 16)
    assert stats.active_count > 0 and stats.density == pytest.approx(stats.active_count / meta.tokens_processed)
    assert stats.mean_weight <= stats.mean_active_weight <= stats.max_weight
    assert stats.label
    histogram = index.histogram(0, expert)
    assert sum(b.count for b in histogram) == stats.active_count
    assert [b.low for b in histogram[1:]] == [b.high for b in histogram[:-1]] == meta.histogram_edges[1:-1]


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
    assert 0 < len(tokens) <= 5 and all(t.token == index.token_text(t.token_id) for t in tokens)
    assert [t.count for t in tokens] == sorted((t.count for t in tokens), reverse=True)
    means = index.domain_means(0, expert)
    assert sorted(m.domain for m in means) == ["code", "german", "prose"] == list(index.domain_tokens())
    assert sum(m.mean_weight for m in means) > 0
    assert [m.mean_weight for m in means] == sorted((m.mean_weight for m in means), reverse=True)
    assert {m.domain: m.n_tokens for m in means} == index.domain_tokens()
    token_id = tokens[0].token_id
    by_id = index.experts_for_token(token_id, group=0)
    assert expert in [f.expert for f in by_id] and {f.group for f in by_id} == {0}
    assert all(f.name == index.expert_name(0, f.expert) and f.token_id == token_id for f in by_id)
    by_text = index.experts_for_token(index.token_text(token_id), group=0, limit=1000)
    assert {f.expert for f in by_id} <= {f.expert for f in by_text}
    assert index.experts_for_token("no such token anywhere") == []
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
        assert [t.token_id for t in read] == written["token_id"].tolist()
        assert [t.count for t in read] == written["count"].tolist()
        np.testing.assert_allclose([t.mean_weight for t in read], written["mean_weight"], rtol=1e-6)


def test_labels_of_many_experts_in_one_read(index):
    experts = [(0, s.expert) for s in index.most_active(0, 5)] + [(1, busiest(index, 1))]
    labels = index.labels(experts + [(0, 255)] * (index.stats(0, 255).active_count == 0))
    assert labels == {(g, e): index.stats(g, e).label for g, e in experts}
    assert index.labels([]) == {}


def test_activity_rankings_and_siblings(index):
    most, least = [s.active_count for s in index.most_active(1, 5)], [s.active_count for s in index.least_active(1, 5)]
    assert len(most) == len(least) == 5
    assert most == sorted(most, reverse=True) and least == sorted(least) and least[0] > 0 and least[-1] <= most[-1]
    assert all(s == index.stats(1, s.expert) for s in index.most_active(1, 5))
    siblings = index.siblings(1, i=3)
    assert len(siblings) and all(s.i == 3 for s in siblings)
    both = index.siblings(1, i=3, j=5)
    assert all(s.i == 3 or s.j == 5 for s in both) and len(both) > len(siblings) - 1
    assert {s.expert for s in both} == {s.expert for s in siblings} | {s.expert for s in index.siblings(1, j=5)}


def _rule_by_hand(index_path, ratio: float) -> pd.DataFrame:
    """The paper's rule written again with pandas over the raw tables: per expert, its two heaviest domains."""
    with duckdb.connect(str(index_path), read_only=True) as conn:
        means = conn.execute(
            "SELECT x.grp, x.expert, x.domain, x.weight_sum / d.n_tokens AS mean FROM expert_domains x"
            " JOIN domains d USING (domain)"
        ).df()
        active = conn.execute("SELECT grp, expert, active_count FROM experts").df().set_index(["grp", "expert"])
    table = means.pivot_table(index=["grp", "expert"], columns="domain", values="mean", fill_value=0.0)
    ranked = pd.DataFrame(
        {
            "top_domain": table.idxmax(axis=1),
            "top_mean": table.max(axis=1),
            "next_mean": table.apply(lambda row: row.nlargest(2).iloc[-1], axis=1),
        }
    ).join(active)
    ranked["specialised"] = (
        (ranked.top_mean > 0)
        & (ranked.top_mean >= ratio * ranked.next_mean)
        & (ranked.active_count >= MIN_ACTIVE_TOKENS)
    )
    return ranked


@pytest.mark.parametrize("ratio", [DOMAIN_RATIO, 1.5, 4.0])
def test_domain_experts_follow_the_paper_rule(index, index_path, ratio):
    by_hand = _rule_by_hand(index_path, ratio)
    chosen = by_hand[by_hand.specialised]
    assert 0 < len(chosen) < len(by_hand)
    for domain in index.domain_tokens():
        want = sorted(chosen[chosen.top_domain == domain].index.tolist())
        got = specialised_experts(index, domain, ratio)
        assert sorted((s.group, s.expert) for s in got) == want
        assert all(
            s.specialised and s.top_domain == domain and s.name == index.expert_name(s.group, s.expert) for s in got
        )
    every = specialised_experts(index, ratio=ratio)
    assert sorted((s.group, s.expert) for s in every) == sorted(chosen.index.tolist())
    in_group = specialised_experts(index, ratio=ratio, group=1)
    assert [s for s in every if s.group == 1] == in_group
    # one expert's answer is the same statement's: it agrees with the whole-index one on every expert
    for (group, expert), row in by_hand.iterrows():
        found = specialisation(index, int(group), int(expert), ratio)
        assert (found.top_domain, found.specialised) == (row.top_domain, row.specialised)
        assert found.top_mean == pytest.approx(row.top_mean) and found.next_mean == pytest.approx(row.next_mean)
        assert found.ratio == (None if row.next_mean == 0 else pytest.approx(row.top_mean / row.next_mean))


def test_the_domain_rule_needs_support_and_a_ratio_above_one(index, index_path):
    by_hand = _rule_by_hand(index_path, DOMAIN_RATIO)
    rare = by_hand[(by_hand.active_count < MIN_ACTIVE_TOKENS) & (by_hand.top_mean >= DOMAIN_RATIO * by_hand.next_mean)]
    assert len(rare)  # the tiny index has rare one-sided experts: the support rule is what keeps them out
    group, expert = rare.index[0]
    found = specialisation(index, int(group), int(expert))
    assert found.active_count < MIN_ACTIVE_TOKENS and not found.specialised
    assert specialisation(index, 0, 255) is None or index.stats(0, 255).active_count > 0
    with pytest.raises(ValueError, match="must exceed 1"):
        specialised_experts(index, "code", ratio=1.0)


def test_top_context_purity_counts_the_domains_of_top_contexts(index):
    by_expert = {}
    for group in range(2):
        for stats in index.most_active(group, 256):
            domains_seen = [e.domain for e in index.top_examples(group, stats.expert)]
            by_expert[group, stats.expert] = domains_seen
    for min_contexts, min_share in [(1, 0.8), (4, 0.8), (4, 1.0), (2, 0.5)]:
        enough = [d for d in by_expert.values() if len(d) >= min_contexts]
        pure = [d for d in enough if max(d.count(x) for x in set(d)) >= min_share * len(d)]
        purity = domains.top_context_purity(index, min_contexts, min_share)
        assert (purity.experts, purity.pure) == (len(enough), len(pure)), (min_contexts, min_share)
    assert 0 < domains.top_context_purity(index, 4, 1.0).pure < domains.top_context_purity(index, 4, 1.0).experts


def test_search_text_is_parameterised(index):
    hits = search_text(index, "QUICK").hits
    assert len(hits) and all("quick" in hit.text.lower() for hit in hits)
    assert [hit.weight for hit in hits] == sorted((hit.weight for hit in hits), reverse=True)
    assert search_text(index, "'; DROP TABLE experts; --").hits == []
    assert search_text(index, "q_ick").hits == [] and search_text(index, "q%k").hits == []  # literals, not wildcards
    assert all("%" in hit.text for hit in search_text(index, "%").hits)
    assert len(index.most_active(0, 1)) == 1


@pytest.mark.parametrize("first_batch", [64, 1])  # 1: one document, then 2, 4, ...: the early stop is exercised
def test_search_text_finds_exactly_the_top_contexts_containing_it(index, monkeypatch, first_batch):
    """Against brute force: every top context's window text, searched with str.lower and `in`."""
    monkeypatch.setattr(text_search, "TEXT_SEARCH_FIRST_BATCH", first_batch)
    windows = {}
    for group in range(2):
        for stats in index.most_active(group, 256):
            for example in index.top_examples(group, stats.expert):
                windows[group, stats.expert, example.rank] = (example.text, example.weight)
    busiest_text = max((text for text, _ in windows.values()), key=len)
    needles = ["e", "QUICK", busiest_text[3:11], busiest_text[-9:].upper(), "zzqx"]
    for needle in needles:
        found = search_text(index, needle, limit=10**6)
        assert found.documents_searched == found.documents_containing and found.exact  # under the document cap
        want = {key: weight for key, (text, weight) in windows.items() if needle.lower() in text.lower()}
        assert {(hit.group, hit.expert, hit.rank) for hit in found.hits} == set(want), needle
        assert all(needle.lower() in hit.text.lower() for hit in found.hits)
        # a small limit stops early once no unvisited document can hold a heavier context: still exact
        heaviest = sorted(want, key=lambda key: (-want[key], key))[:3]
        top3 = search_text(index, needle, limit=3)
        assert [(hit.group, hit.expert, hit.rank) for hit in top3.hits] == heaviest and top3.exact
    assert len(search_text(index, "e", limit=10**6).hits) > 10  # a common letter: many contexts, all found
    assert search_text(index, "").hits == []
    monkeypatch.setattr(text_search, "TEXT_SEARCH_DOCUMENTS", 2)
    capped = search_text(index, "e", limit=10**6)
    assert capped.documents_searched == 2 < capped.documents_containing and not capped.exact


def test_semantic_search_and_similar(index):
    hits = search_semantic(index, "python code", limit=5)
    scores = [hit.score for hit in hits]
    assert len(hits) == 5 and scores == sorted(scores, reverse=True)
    assert all(-1.0001 <= score <= 1.0001 for score in scores)
    assert all(hit.label == index.stats(hit.group, hit.expert).label for hit in hits)
    expert = busiest(index)
    near = similar(index, 0, expert, n=3)
    assert len(near) == 3 and expert not in [hit.expert for hit in near] and {hit.group for hit in near} == {0}


def test_threads_share_one_index(index):
    experts = [s.expert for s in index.most_active(0, 16)]

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
    with ExpertIndex(bare) as opened:
        with pytest.raises(IndexUnavailable, match="no-embeddings"):
            search_semantic(opened, "anything")
        with pytest.raises(IndexUnavailable, match="no-embeddings"):
            similar(opened, 0, 1)
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
        assert upgraded.meta().schema_version == 3 and len(search_text(upgraded, "quick").hits)
