"""The index job's shards as Ray tasks, then their exact merge: `python -m precompute ray-index --shards N ...`.

Shard k/N is the index job with `--shard k/N` (precompute.indexing.job), run as one Ray task that writes its
file and checkpoint into --shard-dir. A task whose worker dies (killed, out of memory, a node lost) is run
again, up to --max-retries times, and resumes from its own checkpoint; a shard file already written by this
same job (same model, corpus and settings) is kept, so rerunning the command after the driver stopped
redoes only what was not finished. Once every shard is written, the driver merges them into --out
(precompute.indexing.shards.merge_indexes: exactly what one run over the whole corpus writes), with the
sentence embeddings, and the experts' scores are computed on the merged file by one more task
(precompute.indexing.scores, as `python -m precompute scores` does).

Without --address a local Ray cluster is started on this machine (or the one this process already joined is
used). With one, the shard directory must be storage that every node and this driver see at the same path;
the workers get this checkout's `explorer` and `precompute` packages from the driver (checkout_runtime_env), and
need its requirements installed.
Ray is an optional dependency: `pip install -r requirements-ray.txt`.
"""

import dataclasses
from pathlib import Path

from precompute.cli import option, required_option
from precompute.indexing.job import checkpoint_path
from precompute.indexing.options import IndexJobError, IndexOptions, refuse_to_overwrite

# The index job's own options, but --shard: each task gets its own.
_SHARED_OPTIONS = [spec for spec in dataclasses.fields(IndexOptions) if spec.name != "shard"]
RayIndexOptions = dataclasses.make_dataclass(
    "RayIndexOptions",
    [
        ("shards", int, required_option("how many shards (Ray tasks) to cut the corpus into; at least 2")),
        *[
            (spec.name, spec.type, dataclasses.field(default=spec.default, metadata=spec.metadata))
            for spec in _SHARED_OPTIONS
        ],
        (
            "address",
            str | None,
            option(None, "Ray cluster address (ray://HEAD:10001, HEAD:6379 or auto); default: a local cluster"),
        ),
        ("gpus_per_shard", float, option(0.0, "GPUs each shard task asks Ray for (1 on a GPU cluster)")),
        ("cpus_per_shard", float, option(1.0, "CPUs each shard task asks Ray for (its torch threads)")),
        ("max_retries", int, option(3, "times a shard task whose worker died is run again (from its checkpoint)")),
        (
            "shard_dir",
            str | None,
            option(None, "folder of the shard files and their checkpoints (default: beside --out)"),
        ),
    ],
)
RayIndexOptions.__doc__ = "Options of `python -m precompute ray-index`: the index job's, and how to run it on Ray."


def shard_paths(out: Path, shards: int, shard_dir: Path) -> list[Path]:
    """Where shard k of n writes its file (its checkpoint lies beside it)."""
    return [shard_dir / f"{out.stem}.shard{k}of{shards}{out.suffix}" for k in range(shards)]


def shard_options(options, paths: list[Path]) -> list[IndexOptions]:
    """The index job's options of each shard: its own --shard and --out, no embeddings and no scores (both are
    computed once, on the merged file), no progress bars (the driver shows the shards done)."""
    shared = {spec.name: getattr(options, spec.name) for spec in _SHARED_OPTIONS}
    own = {"no_embeddings": True, "scores_for": "none", "quiet": True, "force": False}
    return [
        IndexOptions(**{**shared, **own, "shard": f"{k}/{len(paths)}", "out": str(path)})
        for k, path in enumerate(paths)
    ]


def index_shard(options: IndexOptions) -> str:
    """Run one shard's index job (in a Ray worker): resume its checkpoint if an earlier attempt left one, keep
    its file if an earlier attempt of this same job finished it. Returns the file's path."""
    from explorer.index.reader import ExpertIndex
    from precompute.indexing.job import IndexJob

    out = Path(options.out)
    job = IndexJob(dataclasses.replace(options, force=True))  # a finished file is checked below, not overwritten
    if out.exists():
        with ExpertIndex(out) as finished:
            meta = finished.meta()
        if meta.config_hash == job.config_hash and meta.shards == [options.shard]:
            return str(out)
        raise IndexJobError(
            f"{out} holds shard(s) {', '.join(meta.shards)} of another job (other model, corpus or settings):"
            " delete it, choose another --shard-dir, or pass --force to start every shard over."
        )
    return str(job.run())


def score_merged(options) -> None:
    """The experts' scores on the merged file (in a Ray worker), as `python -m precompute scores` computes them."""
    from precompute.indexing.scores import ScoreOptions, run_scores

    run_scores(
        ScoreOptions(
            index=options.out,
            model=options.model,
            scores_for=options.scores_for,
            device=options.device,
            no_coherence=options.no_embeddings,
            quiet=options.quiet,
        )
    )


def run_ray_index(options, shard_task=index_shard) -> Path:
    """`python -m precompute ray-index`: every shard as a Ray task, then the merge (see the module doc).

    `shard_task` runs one shard in a worker; the tests pass one whose first attempt dies."""
    from precompute.indexing.shards import merge_indexes

    try:
        import ray
    except ModuleNotFoundError:
        raise IndexJobError("Ray is not installed: pip install -r requirements-ray.txt") from None
    if options.shards < 2:
        raise IndexJobError("--shards must be at least 2 (one shard is `python -m precompute index`).")
    out = Path(options.out)
    refuse_to_overwrite(out, options.force)
    shard_dir = Path(options.shard_dir) if options.shard_dir else out.parent
    shard_dir.mkdir(parents=True, exist_ok=True)
    paths = shard_paths(out, options.shards, shard_dir)
    if options.force:  # start every shard over
        for path in paths:
            path.unlink(missing_ok=True)
            checkpoint_path(path).unlink(missing_ok=True)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.address, runtime_env=checkout_runtime_env(), log_to_driver=not options.quiet)
    try:
        resources = dict(num_cpus=options.cpus_per_shard, num_gpus=options.gpus_per_shard)
        shard = ray.remote(shard_task).options(max_retries=options.max_retries, **resources)
        running = {shard.remote(job): job.shard for job in shard_options(options, paths)}
        _wait_for_shards(running, options.quiet)
        merge_indexes(paths, out, embed=not options.no_embeddings, force=options.force, show_progress=not options.quiet)
        if options.scores_for.strip().lower() != "none":
            _get(ray.remote(score_merged).options(**resources).remote(options), "the scores")
    finally:
        if started_here:
            ray.shutdown()
    if not options.quiet:
        print(f"wrote {out} from {options.shards} shards in {shard_dir}")
    return out


def _wait_for_shards(running: dict, quiet: bool) -> None:
    """Wait for every shard task, a progress bar counting those done; the first failure stops them all."""
    import ray
    from tqdm import tqdm

    left = list(running)
    with tqdm(total=len(left), unit="shard", desc="shards", disable=quiet) as bar:
        while left:
            done, left = ray.wait(left, num_returns=1)
            try:
                _get(done[0], f"shard {running[done[0]]}")
            except BaseException:
                for task in left:  # the others stop too; each keeps its last checkpoint
                    ray.cancel(task)
                raise
            bar.update()


def _get(task, what: str):
    """A task's result; its failure as an IndexJobError naming `what` (the shard's checkpoint is kept)."""
    import ray

    try:
        return ray.get(task)
    except ray.exceptions.RayTaskError as error:
        cause = error.cause if isinstance(error.cause, Exception) else error
        if isinstance(cause, IndexJobError):
            raise IndexJobError(f"{what}: {cause}") from None
        raise
    except ray.exceptions.WorkerCrashedError:
        raise IndexJobError(
            f"{what}: its worker died on every try (see --max-retries); what it had done is in its checkpoint:"
            " rerun the same command to resume it."
        ) from None


def checkout_runtime_env() -> dict:
    """Ray's runtime_env (for ray.init) shipping this checkout's packages to the workers, so every node runs the
    driver's code."""
    import explorer
    import precompute

    return {"py_modules": [str(Path(explorer.__file__).parent), str(Path(precompute.__file__).parent)]}
