"""The whole index job against the forward it is built on (issue 13, item 6): measured in one run, printed.

  1. `python -m precompute index` as a child process on the embedded model over the first --tokens tokens of its
     corpus (--no-embeddings and --scores-for none: the scores are their own figure, bench.scores), wall time from
     the command's start to its exit: start-up, model load, reading and tokenizing, the forward, the sparse
     extraction, the top-k update, checkpoints, the final corpus pass and the writing.
  2. A plain decoder forward (no LM head, no router outputs) over exactly the windows the job runs, batched as the
     job batches them, same threads and dtype: the floor the job is held against. Goal: forward / job >= 0.95.
  3. Where the job's time goes: the same job once more in this process with a timer around each stage (the
     interpreter's start-up and imports measured as a child that only imports the job's module).

Run: python -m bench.job [--tokens 150000]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from explorer.paths import REPO_DIR


def job_command(out: Path, tokens: int) -> list[str]:
    return [
        sys.executable,
        *("-m", "precompute", "index", "--out", str(out), "--max-tokens", str(tokens)),
        *("--no-embeddings", "--scores-for", "none", "--quiet", "--force"),
    ]


def timed_child(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO_DIR, capture_output=True)
    return time.perf_counter() - started


@torch.no_grad()
def plain_forward_s(tokens: int) -> float:
    """The plain decoder forward over the windows the job runs (its own batching), timed batch by batch, under
    the malloc setting the job runs under (retain_freed_memory), so that setting is not counted as the job's gain."""
    from precompute.indexing.job import Cursor, IndexJob, retain_freed_memory
    from precompute.indexing.options import IndexOptions

    with tempfile.TemporaryDirectory() as folder:
        job = IndexJob(IndexOptions(out=str(Path(folder) / "unused.duckdb"), max_tokens=tokens, quiet=True))
    state, _ = job._resume()
    base = getattr(job.model, "model", job.model)
    retain_freed_memory()
    seconds = 0.0
    for batch in job._batches(state, Cursor()):
        T = max(len(chunk.token_ids) for chunk in batch)
        input_ids = torch.zeros((len(batch), T), dtype=torch.long)
        for row, chunk in enumerate(batch):
            input_ids[row, : len(chunk.token_ids)] = torch.tensor(chunk.token_ids)
        started = time.perf_counter()
        base(input_ids.to(job.device), use_cache=False)
        seconds += time.perf_counter() - started
        state.tokens_processed += sum(len(chunk.token_ids) for chunk in batch)  # the job's --max-tokens budget
    return seconds


def stage_times(tokens: int) -> dict[str, float]:
    """The job run in this process, a timer around each stage (wrapped from outside: the job is unchanged)."""
    import precompute.indexing.job as job_module
    from precompute.indexing.options import IndexOptions
    from precompute.indexing.topk import ExpertState

    spent: dict[str, float] = defaultdict(float)
    nested = []  # a stage inside another (the tokenizing of the final pass) counts once, in the inner stage

    def timer(name, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            nested.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = nested.pop()
                took = time.perf_counter() - started
                spent[name] += took - inner
                if nested:
                    nested[-1] += took

        return timed

    @contextmanager
    def wrapped(owner, attribute, name):
        original = getattr(owner, attribute)
        setattr(owner, attribute, timer(name, original))
        try:
            yield
        finally:
            setattr(owner, attribute, original)

    IndexJob = job_module.IndexJob
    stages = [
        (IndexJob, "__init__", "model and tokenizer load"),
        (IndexJob, "_tokenize", "reading and tokenizing"),
        (job_module, "sparse_expert_weights", "sparse extraction"),
        (ExpertState, "add", "top-k and statistics update"),
        (IndexJob, "_save_checkpoint", "checkpoints"),
        (IndexJob, "_contents", "final corpus pass"),
        (job_module, "write_index", "writing"),
    ]
    with tempfile.TemporaryDirectory() as folder:
        options = IndexOptions(
            out=str(Path(folder) / "index.duckdb"), max_tokens=tokens, no_embeddings=True, scores_for="none", quiet=True
        )
        started = time.perf_counter()
        with ExitStack() as stack:
            for owner, attribute, name in stages:
                stack.enter_context(wrapped(owner, attribute, name))
            job = IndexJob(options)
            base = getattr(job.model, "model", job.model)
            base.forward = timer("forward", base.forward)
            job.run()
        total = time.perf_counter() - started
    spent["other (batching, bookkeeping)"] = total - sum(spent.values())
    return dict(spent)


def whole_job_figures(tokens: int = 150_000) -> dict:
    """{"ratio": forward / whole job, "job_s", "forward_s", "imports_s", "breakdown": {stage: s}}."""
    with tempfile.TemporaryDirectory() as folder:
        job_s = timed_child(job_command(Path(folder) / "index.duckdb", tokens))
    forward_s = plain_forward_s(tokens)
    imports_s = timed_child([sys.executable, "-c", "import precompute.indexing.job"])
    breakdown = {"start-up and imports (a child that only imports)": imports_s, **stage_times(tokens)}
    return {"ratio": forward_s / job_s, "job_s": job_s, "forward_s": forward_s, "breakdown": breakdown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=150_000)
    args = parser.parse_args()
    f = whole_job_figures(args.tokens)
    print(f"embedded model, {args.tokens:,} tokens, torch threads {torch.get_num_threads()}:")
    print(f"  python -m precompute index, whole run: {f['job_s']:.1f} s")
    print(f"  plain decoder forward over the same windows: {f['forward_s']:.1f} s")
    print(f"  forward / whole job = {f['ratio']:.3f}   (goal >= 0.95)")
    print("  where the job's time goes (a second run, in this process, stage by stage):")
    for name, seconds in f["breakdown"].items():
        print(f"    {name:<52} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
