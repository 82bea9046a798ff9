"""Expert score benchmarks (issue 11): the cost per expert, measured in one run on this machine, printed.

  a. the embedded model on a copy of its shipped index (in a temporary folder): the causal effect and the coherence
     of N experts drawn at random (seeded), each timed alone, in seconds per expert, with what the causal pass
     ran (distinct windows run plain, runs with an expert switched off, per top context) and the whole index's
     time at that rate.
  b. the 1.4B shapes (d 2048, E 512, H 8, m 16, vocabulary 32,000; random weights): the plain and the switched-off
     passes of precompute.indexing.scores on random 9-token windows, per window / row, for one routing group of
     layers (--layers, default 4: a 24-layer model does not fit this machine's memory next to the others);
     the cost per expert is K x (windows per context x plain + switched-off runs per context x switched off),
     with the shares part a measured, then scaled to 24 layers by the forward's multiply-adds per token.

Run: python -m bench.scores [--experts 64] [--batch 256] [--layers 4] [--skip a,b]
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import torch
from tqdm import tqdm

from bench.model import SHAPES_14B, best_of
from explorer.index.embedding import load_text_encoder
from explorer.model.device import load_model
from explorer.model.monet import MonetConfig, MonetForCausalLM
from explorer.model.naming import ExpertRef
from explorer.paths import EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR
from precompute.indexing.scores import plain_pass, score_index, switched_off_kl

LAYERS_14B = 24
EXPERTS_14B = 6 * 512 * 512
# multiply-adds per token of the 1.4B forward (bench/README.md): 54.5 M per layer, 65.5 M for the output layer
MACS_PER_LAYER, MACS_OUTPUT = 54.5e6, 65.5e6


def random_experts(path: Path, n: int, seed: int) -> list[str]:
    """Names of n experts with top contexts, drawn uniformly (seeded)."""
    with duckdb.connect(str(path), read_only=True) as conn:
        experts = conn.execute("SELECT grp, expert FROM experts ORDER BY grp, expert").fetchall()
        E = conn.execute("SELECT value FROM meta WHERE key = 'moe_experts'").fetchone()[0]
    picks = np.random.default_rng(seed).choice(len(experts), size=min(n, len(experts)), replace=False)
    return [str(ExpertRef.from_flat(*experts[p], int(E))) for p in sorted(picks)]


def part_a(n: int, batch: int) -> tuple[float, float]:
    """The embedded model's cost per expert; returns the causal pass's windows and switched-off runs per context."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "index.duckdb"
        shutil.copy(EMBEDDED_INDEX_PATH, copy)
        with duckdb.connect(str(copy)) as conn:  # the shipped file may already hold scores: start from none
            conn.execute("DROP TABLE IF EXISTS expert_scores")
            conn.execute("DELETE FROM meta WHERE key LIKE 'scores_%' OR key LIKE 'coherence_%'")
            total = conn.execute("SELECT count(*) FROM experts").fetchone()[0]
        model = load_model(EMBEDDED_MODEL_DIR, "cpu", "float32")
        names = ", ".join(random_experts(copy, n, seed=0))
        causal = score_index(copy, model, names, batch, coherence=False)
        load_text_encoder()  # loading the sentence model once is not a cost per expert
        coherence = score_index(copy, model, names, batch, coherence=True)
    per_context = causal.contexts
    windows, runs = causal.windows / per_context, causal.switched_off_runs / per_context
    whole = (causal.seconds_per_expert + coherence.seconds_per_expert) * total
    print(f"a. embedded model, {causal.experts} random experts of {total:,} (torch threads {torch.get_num_threads()}):")
    print(f"   causal effect: {causal.seconds_per_expert:.3f} s/expert ({per_context:,} top contexts:")
    print(f"      {windows:.2f} distinct windows run plain and {runs:.2f} switched-off runs per context)")
    print(f"   coherence:     {coherence.seconds_per_expert:.3f} s/expert")
    print(f"   whole index at that rate: {whole / 60:.1f} min for {total:,} experts")
    return windows, runs


@torch.no_grad()
def part_b(layers: int, batch: int, windows_per_context: float, runs_per_context: float, top_k: int = 32) -> None:
    torch.manual_seed(0)
    config = MonetConfig(**{**SHAPES_14B, "num_hidden_layers": layers})  # bench/model.py's 1.4B shapes
    model = MonetForCausalLM(config).eval()
    rng = np.random.default_rng(0)
    keys = rng.integers(3, config.vocab_size, size=(batch, 9))  # full 9-token windows (context 8), all distinct
    E = config.moe_experts
    flat = rng.integers(E * E, size=batch)
    rows = {"window": np.arange(batch), "grp": np.zeros(batch, dtype=np.int64), "i": flat // E, "j": flat % E}
    found = {}

    def plain_run():
        found["hidden"], found["active"] = plain_pass(model, keys, rows, batch, tqdm(disable=True))

    plain = best_of(plain_run) / batch
    # every row runs, active or not: the cost of one switched-off run
    off = best_of(lambda: switched_off_kl(model, keys, found["hidden"], rows, batch)) / batch
    active = found["active"]
    measured = top_k * (windows_per_context * plain + runs_per_context * off)
    scale = (LAYERS_14B * MACS_PER_LAYER + MACS_OUTPUT) / (layers * MACS_PER_LAYER + MACS_OUTPUT)
    per_expert = measured * scale
    print(f"b. 1.4B shapes, random weights, {layers} of {LAYERS_14B} layers, batch {batch} (this CPU):")
    print(f"   plain pass {1e3 * plain:.1f} ms/window, switched-off pass {1e3 * off:.1f} ms/row")
    print(f"   ({active.mean():.0%} of random (window, expert) pairs had weight in the window)")
    print(
        f"   per expert (K {top_k}, part a's shares): {measured:.2f} s measured, x{scale:.2f} for {LAYERS_14B} layers:"
    )
    print(f"      {per_expert:.1f} s/expert; all {EXPERTS_14B:,} experts {per_expert * EXPERTS_14B / 3600:,.0f} h,")
    print(f"      'top 100' (100 per group, 600 experts) {per_expert * 600 / 60:.0f} min")
    # on paper: an H100 at 40% of its 989 TFLOP/s bf16 peak (bench/README.md's assumption for large forwards)
    flops = 2 * (LAYERS_14B * MACS_PER_LAYER + MACS_OUTPUT) * 9 * top_k * (windows_per_context + runs_per_context)
    on_paper = flops / (0.4 * 989e12)
    whole = on_paper * EXPERTS_14B / 60
    print(f"   on paper, one H100 at 40% of peak: {1e3 * on_paper:.1f} ms/expert, all experts {whole:.0f} min")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=64, help="random experts scored in part a")
    parser.add_argument("--batch", type=int, default=256, help="windows or rows per forward in part a")
    parser.add_argument("--batch-b", type=int, default=32, help="windows or rows per forward in part b")
    parser.add_argument("--layers", type=int, default=4, help="layers of the 1.4B-shaped model in part b")
    parser.add_argument(
        "--shares", default="", help="part b without part a: 'W,R', windows run plain and switched-off runs per context"
    )
    parser.add_argument("--skip", default="", help="parts to skip, e.g. a or a,b")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if "a" not in skip:
        shares = part_a(args.experts, args.batch)
    elif "b" not in skip:
        if not args.shares:
            parser.error("part b takes its shares from part a: run both, or give --shares W,R")
        shares = tuple(float(v) for v in args.shares.split(","))
    if "b" not in skip:
        part_b(args.layers, args.batch_b, *shares)


if __name__ == "__main__":
    main()
