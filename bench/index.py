"""Index benchmarks (issue 4): figures measured in one run on this machine, printed, never asserted.

  a. index throughput against the plain forward on the same batches: the embedded model when it is
     shipped (or --model), else a random Monet scaled up from the conformance VD config (router
     BatchNorm statistics calibrated on random tokens); cold (empty banks: the first batches of a
     run) and warm (banks as a 10M-token run leaves them, as in b); goal >= 0.8.
  b. at the published shapes (E 512, H 8, 6 routing groups, K 32, moe_topk 32) with synthetic router
     outputs: sparse extraction, and the streaming top-k + stats update from an empty state (cold:
     every activation enters) and with banks as a 10M-token run leaves them (warm: the steady state);
     goal >= 1M tokens/min for the update; plus the state's memory.
  c. DuckDB write time and bytes per expert of a full-scale synthetic index (bench/synthetic_index.py).
  e. the update's average rate over one whole 10M-token run from an empty state, measured end to end (goal >= 1M
     tokens/min, issue 13), with the rate over each stretch of the run.

Run: python -m bench.index [--model FOLDER] [--skip a,b,c,e] [--b-warm-tokens 10000000] [--c-groups 6]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.synthetic_index import build_synthetic_index
from explorer.model.sparse import sparse_expert_weights
from explorer.paths import EMBEDDED_CORPUS, EMBEDDED_MODEL_DIR, REPO_DIR
from precompute.indexing.candidates import BatchCandidates, window_hashes
from precompute.indexing.job import Cursor, IndexJob, retain_freed_memory
from precompute.indexing.options import IndexOptions
from precompute.indexing.topk import ExpertState, make_address

CONFORMANCE_VD = REPO_DIR / "tests" / "fixtures" / "conformance" / "monet-vd-tiny" / "checkpoint"
SCALED_VD = dict(
    hidden_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=64,
    moe_dim=64,
    moe_experts=128,
    moe_heads=4,
    moe_topk=16,
    moe_groups=4,
)
WARM_TOKENS = 10_000_000
PUBLISHED = dict(experts=512, heads=8, groups=6, topk=32, top_k=32, samples=8, context=8)


def scaled_model_folder(folder: Path) -> Path:
    """A random Monet scaled up from the conformance VD config, its tokenizer, router statistics calibrated."""
    import shutil

    from explorer.model.monet import MonetConfig, MonetForCausalLM

    config = MonetConfig.from_pretrained(CONFORMANCE_VD)
    for key, value in SCALED_VD.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = MonetForCausalLM(config)
    norms = [m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randint(3, config.vocab_size, (8, 128)), use_cache=False)
    model.eval()
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CONFORMANCE_VD / name, folder / name)
    return folder


def bench_index_vs_forward(model: str, batches: int, seq_len: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        options = IndexOptions(
            model=model,
            corpus=str(EMBEDDED_CORPUS),
            out=str(Path(tmp) / "bench.duckdb"),
            seq_len=seq_len,
            batch_size=batch_size,
            device="auto",
            quiet=True,
            no_embeddings=True,
        )
        job = IndexJob(options)
        state, _ = job._resume()
        work = []
        for batch in job._batches(state, Cursor()):
            work.append(batch)
            if len(work) == batches + 1:
                break
        lm = job.model

        def forward(batch, model):
            ids = torch.zeros((len(batch), max(len(c.token_ids) for c in batch)), dtype=torch.long)
            for row, chunk in enumerate(batch):
                ids[row, : len(chunk.token_ids)] = torch.tensor(chunk.token_ids)
            with torch.no_grad():
                model(ids.to(job.device), use_cache=False)

        def plain(batch):
            forward(batch, lm)

        def decoder(batch):  # what the index job runs: no LM head (for a small model a large share of the forward)
            forward(batch, lm.model)

        def timed(index_step) -> tuple[float, float, float]:
            """(plain, decoder, index) seconds over the batches, interleaved so a shared machine's load hits all."""
            seconds = [0.0, 0.0, 0.0]
            for batch in work[1:]:
                for kind, step in enumerate((plain, decoder, index_step)):
                    started = time.perf_counter()
                    step(batch)
                    if job.device.type == "cuda":
                        torch.cuda.synchronize()
                    seconds[kind] += time.perf_counter() - started
            return seconds[0], seconds[1], seconds[2]

        plain(work[0])  # warm-up
        job._process(work[0], state)
        timings = {"cold": timed(lambda b: job._process(b, state))}
        # warm: the banks as a long run leaves them (see bench b), so few activations still enter
        config = lm.config
        active = state.active_count.sum().item() / state.tokens_processed / job.shape.num_groups
        per_expert = max(state.top.capacity, round(WARM_TOKENS * active / job.experts_per_group))
        prefill(state, state.top.weight[state.top.address != -1], per_expert, torch.Generator().manual_seed(0))
        timings["warm"] = timed(lambda b: job._process(b, state))
        tokens = sum(len(c.token_ids) for batch in work[1:] for c in batch)
        print(
            f"(a) model {model}: hidden {config.hidden_size}, {config.num_hidden_layers} layers,"
            f" E {config.moe_experts}, H {config.moe_heads}, device {job.device};"
            f" {tokens} tokens in {batches} batches of {batch_size}x{seq_len}, {active:.0f} active experts/token/group"
        )
        for name, (plain_s, decoder_s, index_s) in timings.items():
            print(
                f"    {name}: plain forward {tokens / plain_s:6.0f} tokens/s, decoder only {tokens / decoder_s:6.0f},"
                f" index {tokens / index_s:6.0f} tokens/s; ratio {plain_s / index_s:.2f} (vs decoder only"
                f" {decoder_s / index_s:.2f})"
            )
        print(
            f"    (warm: banks prefilled as after {WARM_TOKENS / 1e6:.0f}M tokens, {per_expert} activations per expert)"
        )


class SyntheticRouting:
    """Router-like (g1, g2) [1, T, H, E], drawn fast enough for a whole 10M-token run: per (token, head) `topk`
    entries drawn at random (with replacement, so about one fewer distinct) weighted by a softmax of normal scores,
    as a router's softmax over the entries it keeps. Two dense buffers are reused: each draw clears the entries
    of the one before (a draw's tensors are valid until the next draw), so no T x H x E randoms or memsets."""

    def __init__(self, gen, tokens: int, heads: int, experts: int, topk: int):
        self.gen, self.topk = gen, topk
        self.buffers = [torch.zeros(1, tokens, heads, experts) for _ in range(2)]
        self.drawn: list[torch.Tensor | None] = [None, None]

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        for side, buffer in enumerate(self.buffers):
            rows = buffer.view(-1, buffer.shape[-1])  # [T*H, E]
            if self.drawn[side] is not None:
                rows.scatter_(1, self.drawn[side], 0.0)
            entry = torch.randint(0, rows.shape[1], (rows.shape[0], self.topk), generator=self.gen)
            weight = torch.softmax(torch.randn(rows.shape[0], self.topk, generator=self.gen), dim=-1)
            rows.scatter_add_(1, entry, weight)
            self.drawn[side] = entry
        return self.buffers[0], self.buffers[1]


def prefill(state: ExpertState, weights: torch.Tensor, activations_per_expert: int, gen) -> None:
    """Fill every bank as a long run would have: per expert, about the top-K of `activations_per_expert`
    weights drawn from `weights` (drawn from their top 4K / n tail, which holds them), a uniform sample,
    at addresses no batch will reuse."""
    K, n_slots = state.top.capacity, state.n_slots
    ranked = weights.sort(descending=True).values
    tail = ranked[: max(1, round(len(ranked) * min(1.0, 4 * K / activations_per_expert)))]
    state.top.weight[:] = tail[torch.randint(0, len(tail), (n_slots, 4 * K), generator=gen)].topk(K, dim=1).values
    state.sample.weight[:] = weights[torch.randint(0, len(weights), state.sample.weight.shape, generator=gen)]
    for bank in (state.top, state.sample):
        slots, capacity = bank.address.shape
        bank.address[:] = make_address(
            torch.full((slots, capacity), 1 << 30), torch.arange(slots * capacity).view(slots, -1)
        )
        bank.key[:] = torch.randint(0, 1 << 62, (slots, capacity), generator=gen)
    # bottom-k of activations_per_expert uniform priorities: the k-th smallest is about k / n of the range
    state.sample.key[:] = (state.sample.key // activations_per_expert).sort(dim=1).values
    for bank in (state.top, state.sample):
        bank.refresh_bar()


class PublishedUpdate:
    """The streaming top-k + sample + stats update at the published shapes, fed synthetic routing batch by batch
    (part b and part e): the state, and one batch's extraction and update timed (the routing's drawing is not)."""

    def __init__(self, batch_tokens: int):
        E, H, G, K = PUBLISHED["experts"], PUBLISHED["heads"], PUBLISHED["groups"], PUBLISHED["top_k"]
        C = PUBLISHED["context"]
        edges = torch.logspace(-2, torch.log10(torch.tensor(float(H))).item(), 17, dtype=torch.float64)
        self.state = ExpertState(G * E * E, K, PUBLISHED["samples"], 2 * C + 1, edges)
        self.gen = torch.Generator().manual_seed(0)
        self.batch_tokens, self.lengths = batch_tokens, torch.tensor([batch_tokens])
        self.position_hash = window_hashes(torch.randint(0, 32000, (1, batch_tokens + 2 * C), generator=self.gen), C)
        self.routing = SyntheticRouting(self.gen, batch_tokens, H, E, PUBLISHED["topk"])
        self.next_doc = 0

    def run_batch(self) -> tuple[float, float, int]:
        """(extraction s, update s, activations) of one batch of every group, at a document no batch used."""
        E, G, C = PUBLISHED["experts"], PUBLISHED["groups"], PUBLISHED["context"]
        doc, self.next_doc = self.next_doc, self.next_doc + 1
        extract_s = update_s = 0.0
        active = 0
        for group in range(G):
            g1, g2 = self.routing.draw()
            started = time.perf_counter()
            row, position, expert, weight = sparse_expert_weights(g1, g2, min_weight=0.01)
            extracted = time.perf_counter()
            candidates = BatchCandidates(g1, g2, row, position, expert, self.lengths, self.position_hash, C)
            address = make_address(torch.full_like(row, doc), position)
            self.state.add(group * E * E + expert, weight, address, torch.full_like(row, -1), candidates)
            extract_s += extracted - started
            update_s += time.perf_counter() - extracted
            active += len(weight)
        return extract_s, update_s, active

    def activations_per_expert(self, tokens: int, active_per_batch: int) -> int:
        slots = PUBLISHED["groups"] * PUBLISHED["experts"] ** 2
        return round(tokens * active_per_batch / slots / self.batch_tokens)


def bench_topk_update(batch_tokens: int, warm_tokens: int, warm_batches: int) -> None:
    """Cold: one batch per group into an empty state (every activation enters). Warm: the next
    `warm_batches` batches once the banks hold what `warm_tokens` tokens of the same routing would have
    left there."""
    E, H, G, K = PUBLISHED["experts"], PUBLISHED["heads"], PUBLISHED["groups"], PUBLISHED["top_k"]
    C = PUBLISHED["context"]
    update = PublishedUpdate(batch_tokens)
    state = update.state
    top_bytes = sum(t.numel() * t.element_size() for t in state.top.tensors().values())
    sample_bytes = sum(t.numel() * t.element_size() for t in state.sample.tensors().values())
    print(
        f"(b) published shapes E {E}, H {H}, {G} groups, K {K}, {PUBLISHED['samples']} samples, window {2 * C + 1}:"
        f" state {state.memory_bytes() / 2**30:.2f} GiB"
        f" (top-K {top_bytes / 2**30:.2f}, sample {sample_bytes / 2**30:.2f})"
    )
    extract_s, cold_s, active = update.run_batch()
    per_expert = update.activations_per_expert(warm_tokens, active)
    prefill(state, state.top.weight[state.top.address != -1], per_expert, update.gen)
    warm_s = sum(update.run_batch()[1] for _ in range(warm_batches)) / warm_batches
    per_min = batch_tokens * 60
    print(f"    synthetic routing: {active / batch_tokens / G:.1f} active experts per token and group (weight >= 0.01)")
    print(f"    sparse extraction (explorer.model.sparse), 6 groups: {per_min / extract_s:,.0f} tokens/min")
    print(f"    top-k + sample + stats update, cold: {per_min / cold_s:,.0f} tokens/min (empty banks: all enter)")
    print(
        f"    top-k + sample + stats update, warm: {per_min / warm_s:,.0f} tokens/min"
        f" (banks as after {warm_tokens / 1e6:.0f}M tokens: {per_expert} activations per expert;"
        f" mean of {warm_batches} batches of {batch_tokens} tokens)"
    )


RUN_POINTS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # part e: the rate over each stretch ending here


def whole_run_figures(tokens: int = WARM_TOKENS, batch_tokens: int = 4096) -> dict:
    """One end-to-end run of the sparse extraction and the top-k + sample + stats update over `tokens` of synthetic
    routing from an empty state (part e): every batch of the run, then the final flush of what the banks staged,
    timed (the routing's drawing is not). Returns tokens_per_min of the update and of extraction + update, the
    update's rate over each stretch of the run (RUN_POINTS), its wall time, and the peak RSS."""
    import resource

    update = PublishedUpdate(batch_tokens)
    batches = max(1, tokens // batch_tokens)
    marks = {max(1, round(fraction * batches)): fraction for fraction in RUN_POINTS}
    extract_s = update_s = 0.0
    stretch, last_batch, last_s = {}, 0, 0.0
    for n in range(1, batches + 1):
        e, u, _ = update.run_batch()
        extract_s, update_s = extract_s + e, update_s + u
        if n == batches:
            started = time.perf_counter()
            update.state.flush()
            update_s += time.perf_counter() - started
        if n in marks:
            stretch[marks[n]] = (n - last_batch) * batch_tokens / (update_s - last_s) * 60
            last_batch, last_s = n, update_s
    run = batches * batch_tokens
    return {
        "tokens": run,
        "tokens_per_min": run / update_s * 60,
        "with_extraction_tokens_per_min": run / (update_s + extract_s) * 60,
        "update_min": update_s / 60,
        "extraction_min": extract_s / 60,
        "rate_over": stretch,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def bench_write(groups: int, experts_per_side: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures = build_synthetic_index(Path(tmp) / "synthetic.duckdb", groups, experts_per_side)
    n = figures["experts"]
    print(
        f"(c) synthetic index, {groups} groups x {experts_per_side**2} experts, K 32, 8 samples, window 17:"
        f" write {figures['write_s']:.1f} s ({figures['write_s'] / n * 1e6:.1f} us/expert),"
        f" file {figures['file_bytes'] / 2**30:.2f} GiB = {figures['file_bytes'] / n:.0f} bytes/expert"
        f" (10M-token corpus in the token store included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: embedded model, else scaled VD)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a, b, c")
    parser.add_argument("--a-batches", type=int, default=8)
    parser.add_argument("--a-seq-len", type=int, default=256)
    parser.add_argument("--a-batch-size", type=int, default=8)
    parser.add_argument("--b-batch-tokens", type=int, default=4096)
    parser.add_argument("--b-warm-tokens", type=int, default=WARM_TOKENS)
    parser.add_argument("--b-warm-batches", type=int, default=4)
    parser.add_argument("--c-groups", type=int, default=6)
    parser.add_argument("--c-experts-per-side", type=int, default=512)
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    retain_freed_memory()  # as the index job does
    if "a" not in skip:
        if args.model:
            bench_index_vs_forward(args.model, args.a_batches, args.a_seq_len, args.a_batch_size)
        elif (EMBEDDED_MODEL_DIR / "config.json").exists():
            bench_index_vs_forward(str(EMBEDDED_MODEL_DIR), args.a_batches, args.a_seq_len, args.a_batch_size)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                folder = scaled_model_folder(Path(tmp))
                bench_index_vs_forward(str(folder), args.a_batches, args.a_seq_len, args.a_batch_size)
    if "b" not in skip:
        bench_topk_update(args.b_batch_tokens, args.b_warm_tokens, args.b_warm_batches)
    if "c" not in skip:
        bench_write(args.c_groups, args.c_experts_per_side)
    if "e" not in skip:
        print_whole_run(args.b_warm_tokens, args.b_batch_tokens)


def print_whole_run(tokens: int, batch_tokens: int) -> dict:
    f = whole_run_figures(tokens, batch_tokens)
    print(
        f"(e) one end-to-end run of {f['tokens'] / 1e6:.1f}M tokens from empty banks, in batches of {batch_tokens}:"
        f" update {f['update_min']:.1f} min, sparse extraction {f['extraction_min']:.1f} min;"
        f" peak RSS {f['peak_rss_gib']:.1f} GiB"
    )
    previous, stretches = 0.0, []
    for fraction, rate in f["rate_over"].items():
        stretches.append(f"{previous:.1%}-{fraction:.1%} {rate / 1e3:,.0f}k")
        previous = fraction
    print(f"    the update's tokens/min over each stretch of the run: {', '.join(stretches)}")
    print(
        f"    whole-run average: update {f['tokens_per_min']:,.0f} tokens/min, extraction + update"
        f" {f['with_extraction_tokens_per_min']:,.0f}   (goal >= 1,000,000)"
    )
    return f


if __name__ == "__main__":
    main()
