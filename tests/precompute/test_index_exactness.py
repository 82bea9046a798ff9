"""The index against brute force: dense weights over every token, top-K per expert with the same dedupe rule,
ties broken by the place key, shown each document's first context of a weight before any document's second."""

import duckdb
import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from explorer.model.sparse import dense_expert_weights
from precompute.indexing.job import run_index
from precompute.indexing.topk import make_address, place_key, sample_priority


def brute_force(model, tokenizer, options, documents):
    """Every activation >= min_weight, from a dense einsum per forward window: one row each."""
    L, C = options.seq_len, options.context
    E, G = model.config.moe_experts, model.config.moe_groups
    rows = []
    for doc, document in enumerate(documents):
        domain, ids = document.domain, tokenizer(document.text)["input_ids"]
        for start in range(0, len(ids), L):
            chunk = ids[start : start + L]
            with torch.no_grad():
                output = model.model(torch.tensor([chunk]), use_cache=False, output_router_probs=True)
            for layer, probs in enumerate(output.router_probs):
                if probs is None:
                    continue
                dense = dense_expert_weights(*probs)[0].numpy()  # [T, E*E]
                padded = np.pad(dense, ((C, C), (0, 0)))  # the same forward window only, 0 beyond it
                for t, expert in zip(*(dense >= options.min_weight).nonzero(), strict=True):
                    position = start + t
                    window = tuple(ids[p] if 0 <= p < len(ids) else -1 for p in range(position - C, position + C + 1))
                    rows.append(
                        (
                            layer // G * E * E + expert,
                            doc,
                            position,
                            dense[t, expert],
                            window,
                            domain,
                            padded[t : t + 2 * C + 1, expert],
                        )
                    )
    frame = pd.DataFrame(rows, columns=["slot", "doc", "position", "weight", "window", "domain", "window_weights"])
    frame["address"] = make_address(
        torch.tensor(frame["doc"].to_numpy()), torch.tensor(frame["position"].to_numpy())
    ).numpy()
    return frame


def expected_top(frame, k):
    """The K best contexts per slot, one per window text, by (weight desc, place key), in display order."""
    frame = frame.assign(tie=place_key(frame["address"].to_numpy()))
    best = frame.sort_values(["slot", "window", "weight", "tie"], ascending=[True, True, False, True]).drop_duplicates(
        ["slot", "window"]
    )
    best = best.sort_values(["slot", "weight", "tie"], ascending=[True, False, True]).groupby("slot").head(k)
    return display_order(best)


def display_order(top):
    """Of equal weight, each document's first context (by place key) before any document's second."""
    top = top.assign(tie=place_key(make_address(top["doc"].to_numpy(), top["position"].to_numpy())))
    top = top.sort_values(["slot", "weight", "tie"], ascending=[True, False, True])
    top["repeat"] = top.groupby(["slot", "weight", "doc"]).cumcount()
    return top.sort_values(["slot", "weight", "repeat", "tie"], ascending=[True, False, True, True])


def test_index_matches_brute_force(conformance, tiny_documents, tiny_corpus, index_options, tmp_path):
    fixture = conformance
    options = index_options(fixture.checkpoint, tiny_corpus, tmp_path / "index.duckdb")
    run_index(options)
    model = fixture.load_model()
    tokenizer = AutoTokenizer.from_pretrained(fixture.checkpoint)
    truth = brute_force(model, tokenizer, options, tiny_documents)
    E = model.config.moe_experts
    conn = duckdb.connect(str(options.out), read_only=True)
    examples = conn.execute(
        "SELECT grp * $ee + expert AS slot, kind, rank, doc, position, weight, window_max,"
        " window_weights, window_hash FROM examples ORDER BY slot, kind, rank",
        {"ee": E * E},
    ).df()

    # top-K: the same contexts in the same order, with the same weights, no duplicate windows
    top = examples[examples["kind"] == "top"]
    want = expected_top(truth, options.top_k)
    assert len(top) == len(want) > 100
    # Repeated text gets weights equal up to float rounding (windows of different lengths), so near-ties may
    # swap: each stored context must be the best of its window text, and every context clearly above the
    # K-th weight must be stored.
    windows = {doc: tokenizer(d.text)["input_ids"] for doc, d in enumerate(tiny_documents)}
    C = options.context
    got = top[["slot", "weight"]].assign(
        window=[
            tuple(windows[d][p] if 0 <= p < len(windows[d]) else -1 for p in range(q - C, q + C + 1))
            for d, q in zip(top["doc"], top["position"], strict=True)
        ]
    )
    best = truth.groupby(["slot", "window"], as_index=False)["weight"].max()
    matched = got.merge(best, on=["slot", "window"], suffixes=("", "_best"))
    assert len(matched) == len(got)
    np.testing.assert_allclose(matched["weight"], matched["weight_best"], rtol=1e-5, atol=1e-6)
    kth = want.groupby("slot")["weight"].transform("min")
    clear = want[want["weight"] > kth + 1e-5]
    assert len(clear.merge(got, on=["slot", "window"])) == len(clear)
    # the same weights in the same order; places differ only where weights tie up to rounding (checked above)
    np.testing.assert_allclose(top["weight"], want["weight"], rtol=1e-5, atol=1e-6)
    same_place = (top[["slot", "doc", "position"]].to_numpy() == want[["slot", "doc", "position"]].to_numpy()).all(1)
    assert same_place.mean() > 0.95
    assert not top.duplicated(["slot", "window_hash"]).any()
    assert (
        top[["slot", "doc", "position"]].values.tolist()
        == display_order(top)[["slot", "doc", "position"]].values.tolist()
    )
    assert truth.duplicated(["slot", "window"]).any(), "the corpus should repeat contexts"

    # window weights: the expert's weight on each window token of the same forward window, 8-bit
    at_place = top.merge(truth, on=["slot", "doc", "position"], suffixes=("", "_truth"))
    assert len(at_place) == len(top)
    for stored, expected in zip(at_place.itertuples(), at_place["window_weights_truth"], strict=True):
        np.testing.assert_allclose(
            np.asarray(stored.window_weights) / 255 * stored.window_max, expected, atol=stored.window_max / 255 + 1e-6
        )

    # the uniform sample: bottom-L by the priority hash
    truth["priority"] = sample_priority(
        torch.tensor(truth["address"].to_numpy()), torch.tensor(truth["slot"].to_numpy())
    ).numpy()
    want_sample = truth.sort_values(["slot", "priority", "address"]).groupby("slot").head(options.samples)
    sample = examples[examples["kind"] == "sample"]
    assert sorted(map(tuple, sample[["slot", "doc", "position"]].to_numpy().tolist())) == sorted(
        map(tuple, want_sample[["slot", "doc", "position"]].to_numpy().tolist())
    )

    # statistics
    experts = conn.execute(
        "SELECT grp * $ee + expert AS slot, active_count, weight_sum, weight_max, histogram FROM experts ORDER BY slot",
        {"ee": E * E},
    ).df()
    per_slot = truth.groupby("slot")["weight"]
    assert experts["slot"].tolist() == sorted(truth["slot"].unique())
    assert experts["active_count"].tolist() == per_slot.size().tolist()
    np.testing.assert_allclose(experts["weight_sum"], per_slot.sum(), rtol=1e-5)
    np.testing.assert_allclose(experts["weight_max"], per_slot.max(), rtol=1e-5)
    edges = np.asarray(
        conn.execute("SELECT value FROM meta WHERE key = 'histogram_edges'").fetchone()[0].strip("[]").split(","),
        dtype=float,
    )
    bins = np.clip(np.searchsorted(edges, truth["weight"], side="right") - 1, 0, len(edges) - 2)
    want_hist = np.zeros((len(experts), len(edges) - 1), dtype=int)
    np.add.at(want_hist, (np.searchsorted(experts["slot"], truth["slot"]), bins), 1)
    assert np.stack(experts["histogram"].to_numpy()).tolist() == want_hist.tolist()
    domains = conn.execute(
        "SELECT grp * $ee + expert AS slot, domain, weight_sum FROM expert_domains ORDER BY slot, domain", {"ee": E * E}
    ).df()
    want_domains = truth.groupby(["slot", "domain"])["weight"].sum().reset_index()
    assert domains[["slot", "domain"]].to_numpy().tolist() == want_domains[["slot", "domain"]].to_numpy().tolist()
    np.testing.assert_allclose(domains["weight_sum"], want_domains["weight"], rtol=1e-5)
    tokens = conn.execute("SELECT domain, n_tokens FROM domains ORDER BY domain").fetchall()
    lengths = {}
    for d in tiny_documents:
        lengths[d.domain] = lengths.get(d.domain, 0) + len(tokenizer(d.text)["input_ids"])
    assert tokens == sorted(lengths.items())

    # every token the model ran on, counted by id
    counts = conn.execute("SELECT corpus_count FROM vocab ORDER BY token_id").df()["corpus_count"].to_numpy()
    ran_on = np.concatenate([tokenizer(d.text)["input_ids"] for d in tiny_documents])
    assert counts.tolist() == np.bincount(ran_on, minlength=len(counts)).tolist()
