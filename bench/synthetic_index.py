"""A synthetic expert index with the real schema, at any scale (the published one by default).

Every expert of every group gets full top-K and sample banks, random statistics and domains,
pointing into a synthetic corpus; the file is written by the real writer (precompute.indexing.writer),
so its size and write time are those of a real index of that shape. The app's benchmarks reuse it.

    python -m bench.synthetic_index --out /tmp/synthetic.duckdb [--groups 6 --experts-per-side 512] [--tokens 100M]

--tokens sets the corpus (documents of 1,000 tokens each; 10M by default, today's bench): nearly every token
lies in some example's window, so the token store holds about that many. At 100M the file is about 7 GB and
its writing takes a while: build it once (under `nice`) and reuse it.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from explorer.index import schema
from precompute.indexing.topk import ExpertState, make_address
from precompute.indexing.writer import DOCUMENT_COLUMNS, TOKEN_COLUMNS, IndexContents, write_index

DOMAINS = ["prose", "code", "german", "spanish", "science", "law"]
DOC_TOKENS = 1_000  # tokens per synthetic document


def synthetic_state(
    groups: int,
    experts_per_side: int,
    top_k: int,
    samples: int,
    context: int,
    corpus_docs: int,
    doc_tokens: int,
    seed=0,
    first_doc=0,
) -> ExpertState:
    """A state whose every expert is full: sorted random weights at random (doc, position) addresses, the
    documents numbered from `first_doc` (a shard's)."""
    gen = torch.Generator().manual_seed(seed)
    n_slots = groups * experts_per_side**2
    edges = torch.logspace(-2, np.log10(8), 17, dtype=torch.float64)
    state = ExpertState(n_slots, top_k, samples, 2 * context + 1, edges)
    for bank in (state.top, state.sample):
        capacity = bank.capacity
        bank.weight[:] = torch.rand((n_slots, capacity), generator=gen).sort(dim=1, descending=True).values
        doc = first_doc + torch.randint(0, corpus_docs, (n_slots, capacity), generator=gen)
        position = torch.randint(0, doc_tokens, (n_slots, capacity), generator=gen)
        bank.address[:] = make_address(doc, position)
        bank.key[:] = torch.randint(0, 1 << 62, (n_slots, capacity), generator=gen)
        bank.window[:] = torch.randint(0, 256, bank.window.shape, generator=gen, dtype=torch.uint8)
        bank.window_max[:] = bank.weight
    state.tokens_processed = corpus_docs * doc_tokens
    state.histogram[:] = torch.randint(0, 5_000, state.histogram.shape, generator=gen, dtype=torch.int32)
    state.weight_sum[:] = state.active_count * 0.05
    state.weight_max[:] = state.top.weight[:, 0]
    for domain in DOMAINS:
        column = state.domain_index(domain)
        state.domain_tokens[column] = state.tokens_processed // len(DOMAINS)
    state.domain_weight_sum[:] = torch.rand(state.domain_weight_sum.shape, generator=gen, dtype=torch.float64)
    return state


def synthetic_contents(
    state, groups, experts_per_side, top_k, samples, context, corpus_docs, doc_tokens, vocab_size, shard=(0, 1)
):
    """The documents, tokens and meta of the synthetic corpus; shard (k, n): the k-th of n disjoint shards of one
    job, its documents numbered from k * corpus_docs."""
    k, n = shard
    gen = np.random.default_rng(k)
    docs = k * corpus_docs + np.arange(corpus_docs)
    n_tokens = corpus_docs * doc_tokens
    tokens = pl.DataFrame(
        {
            "doc": np.repeat(docs, doc_tokens),
            "position": np.tile(np.arange(doc_tokens), corpus_docs),
            "token_id": gen.integers(0, vocab_size, n_tokens),
        },
        schema=TOKEN_COLUMNS,
    )
    documents = pl.DataFrame(
        {
            "doc": docs,
            "source_id": [f"doc{d}" for d in docs],
            "domain": [DOMAINS[d % len(DOMAINS)] for d in docs],
            "n_tokens": np.full(corpus_docs, doc_tokens),
        },
        schema=DOCUMENT_COLUMNS,
    )
    meta = schema.IndexMeta(
        model="synthetic",
        config_hash="synthetic",
        tokenizer=f"synthetic ({vocab_size} tokens)",
        corpus="synthetic",
        shards=[f"{k}/{n}"],
        documents_processed=corpus_docs,
        tokens_processed=n_tokens,
        seq_len=doc_tokens,
        top_k=top_k,
        samples=samples,
        context=context,
        min_weight=0.01,
        histogram_edges=state.histogram_edges.tolist(),
        num_layers=groups * 4,
        moe_groups=4,
        num_groups=groups,
        moe_experts=experts_per_side,
        moe_heads=8,
        moe_decompose="vertical",
        dtype="bfloat16",
    )
    vocab = [f"tok{t}" for t in range(vocab_size)]
    # the corpus is these tokens: their counts are the labels' background
    state.token_counts = torch.from_numpy(np.bincount(tokens["token_id"].to_numpy(), minlength=vocab_size))
    return IndexContents(meta, documents, tokens, vocab)


def build_synthetic_index(
    out,
    groups=6,
    experts_per_side=512,
    top_k=32,
    samples=8,
    context=8,
    corpus_docs=10_000,
    doc_tokens=DOC_TOKENS,
    vocab_size=32_000,
    show_progress=False,
    shard=(0, 1),
) -> dict:
    """Write the synthetic index to `out` (shard (k, n): the k-th of n disjoint shards of one job, each with its
    own `corpus_docs` documents and random draws); returns timings (s), file bytes and state bytes."""
    started = time.perf_counter()
    first_doc = shard[0] * corpus_docs
    state = synthetic_state(
        groups, experts_per_side, top_k, samples, context, corpus_docs, doc_tokens, seed=shard[0], first_doc=first_doc
    )
    contents = synthetic_contents(
        state, groups, experts_per_side, top_k, samples, context, corpus_docs, doc_tokens, vocab_size, shard
    )
    built = time.perf_counter()
    Path(out).unlink(missing_ok=True)
    write_index(out, state, contents, embed=False, show_progress=show_progress)
    written = time.perf_counter()
    return {
        "experts": groups * experts_per_side**2,
        "build_s": built - started,
        "write_s": written - built,
        "file_bytes": Path(out).stat().st_size,
        "state_bytes": state.memory_bytes(),
    }


def token_count(text: str) -> int:
    """'100M', '10M', '250k' or '5000' -> a number of tokens."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokens", type=token_count, default=10_000_000, help="corpus tokens: 10M (default), 100M")
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--experts-per-side", type=int, default=512)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--context", type=int, default=8)
    args = parser.parse_args()
    figures = build_synthetic_index(
        args.out,
        args.groups,
        args.experts_per_side,
        args.top_k,
        args.samples,
        args.context,
        corpus_docs=max(1, args.tokens // DOC_TOKENS),
        show_progress=True,
    )
    print(figures)


if __name__ == "__main__":
    main()
