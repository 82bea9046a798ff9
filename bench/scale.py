"""Issue 13's figures against their goals, measured in one run on this machine, printed, never asserted.

  2. ablation whose cost follows the active entries: a routing group's MoE forward at the 1.4B shapes with
     1,000 experts off (goal <= 1.05x plain) and 20,000 (the per-layer cap; goal <= 1.15x) (bench.model b).
  3. text search that does not scan: median of phrase searches on synthetic full-scale indexes whose token
     store holds 10M tokens (goal <= 50 ms) and 100M (goal <= 200 ms), both built by bench.synthetic_index: a
     pass with the file as the OS cache holds it, and one after reading it once.
  4. cold start: the top-k update from an empty state over a whole 10M-token synthetic run at the published
     shapes (goal >= 1M tokens/min) (bench.index e: one end-to-end run, every batch timed).
  5. merge at scale: 4 full-scale synthetic shards merged by `precompute merge` (a child process: its wall time
     and peak memory, inside this machine's 24 GiB); and the state part alone (the 4 shard states absorbed in
     memory) for comparison.
  6. the whole index job against a plain decoder forward over the same windows (goal >= 0.95) (bench.job).
  7. generation on a CPU at the 1.4B shapes: bfloat16 against float32 tokens/s (goal >= 1.8) and ablated /
     plain in each (goal >= 0.95) (bench.model e).

Each part is skipped with a line saying why when what it needs is missing (an index file not built yet). The
large files are built once and reused:

    python -m bench.synthetic_index --out /tmp/monet-bench/synthetic-10m.duckdb
    python -m bench.synthetic_index --out /tmp/monet-bench/synthetic-100m.duckdb --tokens 100M
    python -m bench.scale --build-shards        # the 4 shard files of part 5, then every part

Run: python -m bench.scale [--skip 2,3,4,5,6,7] [--index-10m PATH] [--index-100m PATH] [--shard-dir DIR]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.synthetic_index import build_synthetic_index

BENCH_DIR = Path("/tmp/monet-bench")
SHARDS = 4
SHARD_DOCS = 2_500  # documents of 1,000 tokens per shard: the 4 shards hold the 10M-token corpus of today's bench

results: list[tuple[str, str, str, bool | None]] = []  # (item, figure, goal, met); None: not measured


def record(item: str, figure: str, goal: str, met: bool | None) -> None:
    results.append((item, figure, goal, met))
    verdict = {True: "met", False: "MISSED", None: "not measured"}[met]
    print(f"  {item}: {figure}   (goal {goal}: {verdict})", flush=True)


# -- 2. ablation --------------------------------------------------------------------------------------------
def ablation() -> None:
    from bench.model import bench_sparse_and_ablation

    r = bench_sparse_and_ablation(2048)
    ratio, at_cap = (
        r["ablated_moe_forward_s"] / r["moe_forward_s"],
        r["ablated_at_cap_moe_forward_s"] / r["moe_forward_s"],
    )
    print(f"2. one routing group at the 1.4B shapes, 2,048 tokens: plain {1e3 * r['moe_forward_s']:.0f} ms")
    record("2. 1,000 experts off / plain", f"{ratio:.3f}", "<= 1.05", ratio <= 1.05)
    record("2. 20,000 off (the cap) / plain", f"{at_cap:.3f}", "<= 1.15", at_cap <= 1.15)


# -- 3. text search -----------------------------------------------------------------------------------------
def text_search(path: Path, goal_ms: float, label: str, repeats: int = 40) -> None:
    """Median wall time of phrase searches (`tokNtok`: a token's text and the start of the next one's, all
    groups, and one group) on a synthetic index, each phrase new, in two passes: first with the file as the OS
    cache holds it (a server's first queries: a file just built or copied is warm, one not read since is cold),
    then with new phrases after the whole file was read once (a server that has served it a while). Checking the
    answers exact is the tests' job (tests/index/test_text_search.py)."""
    from explorer.index import postings
    from explorer.index.reader import ExpertIndex
    from explorer.index.text_search import search_text

    if not path.exists():
        record(f"3. text search, {label}", f"{path} not built", f"<= {goal_ms:g} ms", None)
        return
    for cached in (False, True):
        if cached:
            with open(path, "rb") as file:  # through the OS cache, the way the server's reads will come
                while file.read(1 << 24):
                    pass
        with ExpertIndex(path) as index:
            tokens = index.meta().tokens_processed
            if not postings.has_postings(index):
                record(f"3. text search, {label}", f"{path} has no text_postings", f"<= {goal_ms:g} ms", None)
                return
            search_text(index, "tok1tok")  # warm-up: the vocabulary's pieces, DuckDB's first reads
            times, docs = [], []
            for n in range(repeats):
                started = time.perf_counter()
                phrase = f"tok{3000 + n + (repeats if cached else 0)}tok"
                found = search_text(index, phrase, group=None if n % 2 else 0)
                times.append(1e3 * (time.perf_counter() - started))
                docs.append(found.documents_searched)
        median = statistics.median(times)
        when = "after the file was read once" if cached else "the file as the OS cache held it"
        print(
            f"3. {path.name}: {tokens / 1e6:.0f}M tokens, {repeats} new phrases, {when}: median {median:.1f} ms,"
            f" max {max(times):.1f} ms; documents searched per phrase: median {statistics.median(docs):.0f}"
        )
        record(
            f"3. text search, {label}, {'read once' if cached else 'as cached'}",
            f"{median:.1f} ms median",
            f"<= {goal_ms:g} ms",
            median <= goal_ms,
        )


# -- 4. cold start ------------------------------------------------------------------------------------------
def cold_start(tokens: int) -> None:
    from bench.index import print_whole_run

    print("4.", end=" ")
    f = print_whole_run(tokens, 4096)
    rate, with_extraction = f["tokens_per_min"], f["with_extraction_tokens_per_min"]
    record("4. top-k update, one whole run", f"{rate:,.0f} tokens/min", ">= 1,000,000", rate >= 1e6)
    record(
        "4. extraction + update, one whole run",
        f"{with_extraction:,.0f} tokens/min",
        ">= 1,000,000",
        with_extraction >= 1e6,
    )


# -- 5. merge -----------------------------------------------------------------------------------------------
def shard_paths(folder: Path) -> list[Path]:
    return [folder / f"synthetic-shard{k}of{SHARDS}.duckdb" for k in range(SHARDS)]


def build_shards(folder: Path) -> None:
    """The 4 full-scale shard files (every expert of 6 x 512^2 full in each), written by the real writer."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(shard_paths(folder)):
        if not path.exists():
            print(f"building {path} ...", flush=True)
            figures = build_synthetic_index(path, corpus_docs=SHARD_DOCS, shard=(k, SHARDS))
            print(f"   written in {figures['write_s']:.0f} s, {figures['file_bytes'] / 2**30:.2f} GiB", flush=True)


def in_child(code: str) -> tuple[float, float, str]:
    """Run Python `code` in a child process (its own memory, so its peak is its own): its wall time in s, its
    peak RSS in GiB and what it printed."""
    report = "import resource; print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the child failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - started
    printed, peak = done.stdout.rsplit("peak", 1)
    return wall, float(peak), printed


def merge_in_memory() -> None:
    """The state part of the merge alone: 4 full-scale shard states made and absorbed into one, in a child."""
    make = f"synthetic_state(6, 512, 32, 8, 8, {SHARD_DOCS}, 1_000, seed={{k}}, first_doc={{k}} * {SHARD_DOCS})"
    code = (
        "import time\nfrom bench.synthetic_index import synthetic_state\n"
        f"merged, seconds = {make.format(k=0)}, 0.0\n"
        f"for k in range(1, {SHARDS}):\n"
        f"    other = {make.format(k='k')}\n"
        "    started = time.perf_counter(); merged.absorb(other); seconds += time.perf_counter() - started\n"
        "    del other\n"
        "print(seconds)"
    )
    _, peak, printed = in_child(code)
    print(
        f"5. in memory: {SHARDS - 1} absorbs of a full-scale shard state into one: {float(printed):.1f} s;"
        f" peak {peak:.1f} GiB with the states made in the same process"
    )


def merge_files(folder: Path) -> None:
    """`python -m precompute merge` of the 4 shard files, in a child process: wall time and its peak memory."""
    paths = shard_paths(folder)
    if not all(path.exists() for path in paths):
        record("5. merge of 4 full-scale shards", f"shards not built in {folder}", "inside 24 GiB", None)
        return
    out = folder / "merged.duckdb"
    args = [*map(str, paths), "--out", str(out), "--no-embeddings", "--force", "--quiet"]
    wall, peak, _ = in_child(f"from precompute.cli import main\nmain(['merge', *{args!r}])")
    size = out.stat().st_size / 2**30
    out.unlink()
    inputs = sum(path.stat().st_size for path in paths) / 2**30
    print(f"5. merge of {SHARDS} shard files ({inputs:.1f} GiB) into one of {size:.1f} GiB: {wall / 60:.1f} min")
    record(
        "5. merge of 4 full-scale shards, peak memory", f"{peak:.1f} GiB, {wall / 60:.1f} min", "<= 24 GiB", peak <= 24
    )


# -- 6. the whole job ---------------------------------------------------------------------------------------
def whole_job() -> None:
    from bench.job import whole_job_figures

    f = whole_job_figures()
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in f["breakdown"].items())
    print(f"6. index job {f['job_s']:.1f} s against the plain decoder forward {f['forward_s']:.1f} s: {parts}")
    record("6. forward / whole index job", f"{f['ratio']:.3f}", ">= 0.95", f["ratio"] >= 0.95)


# -- 7. generation on a CPU ---------------------------------------------------------------------------------
def cpu_generation(layers: int, new_tokens: int) -> None:
    from bench.model import bench_cpu_generation

    figures = bench_cpu_generation(layers, new_tokens)
    for name, f in figures.items():
        ratio = f["ablated_tokens_per_s"] / f["plain_tokens_per_s"]
        print(
            f"7. {name}, {layers} layers: plain {f['plain_tokens_per_s']:.2f} tokens/s, 1,000 experts of every group"
            f" off {f['ablated_tokens_per_s']:.2f}; peak RSS {f['peak_rss_gib']:.1f} GiB"
        )
        record(f"7. {name} generation, ablated / plain", f"{ratio:.3f}", ">= 0.95", ratio >= 0.95)
    speedup = figures["bfloat16"]["plain_tokens_per_s"] / figures["float32"]["plain_tokens_per_s"]
    record("7. bfloat16 / float32 tokens/s", f"{speedup:.2f}", ">= 1.8", speedup >= 1.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="items to skip, e.g. 4,5")
    parser.add_argument("--index-10m", type=Path, default=BENCH_DIR / "synthetic-10m.duckdb")
    parser.add_argument("--index-100m", type=Path, default=BENCH_DIR / "synthetic-100m.duckdb")
    parser.add_argument("--shard-dir", type=Path, default=BENCH_DIR / "shards")
    parser.add_argument("--build-shards", action="store_true", help="build part 5's shard files first (once)")
    parser.add_argument("--cold-tokens", type=int, default=10_000_000, help="tokens of part 4's run")
    parser.add_argument("--layers", type=int, default=24, help="layers of part 7's 1.4B-shaped model")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens each decoding run of part 7 writes")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if args.build_shards:
        build_shards(args.shard_dir)
    parts = {
        "2": ablation,
        "3": lambda: (
            text_search(args.index_10m, 50, "10M tokens"),
            text_search(args.index_100m, 200, "100M tokens"),
        ),
        "4": lambda: cold_start(args.cold_tokens),
        "5": lambda: (merge_in_memory(), merge_files(args.shard_dir)),
        "6": whole_job,
        "7": lambda: cpu_generation(args.layers, args.new_tokens),
    }
    for item, part in parts.items():
        if item not in skip:
            part()
    print("\nissue 13, figure by figure:")
    for item, figure, goal, met in results:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[met]
        print(f"  {item:<48} {figure:<28} goal {goal:<14} {verdict}")


if __name__ == "__main__":
    main()
