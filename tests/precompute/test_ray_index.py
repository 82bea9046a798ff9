"""`python -m precompute ray-index`: the index job's shards as tasks on a local Ray cluster of two workers, then
the merge; the result equals one plain run, also when a worker dies mid-shard and its task is retried."""

import dataclasses
import os
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import ray

from precompute.cli import main as cli
from precompute.indexing.job import checkpoint_path, run_index
from precompute.indexing.options import IndexJobError
from precompute.indexing.ray_index import RayIndexOptions, checkout_runtime_env, index_shard, run_ray_index
from tests.precompute.test_index_job import assert_same_index, run_killed_at_batch

KILLED_SHARD, KILLED_AT_BATCH = "1/2", 2


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of two CPUs (two shard tasks at once), shut down after the module's tests."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=checkout_runtime_env())
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, vd_tiny, index_options, tiny_corpus_file) -> Path:
    """One plain run of the index job over the whole tiny corpus, scores included."""
    out = tmp_path_factory.mktemp("plain") / "plain.duckdb"
    return run_index(index_options(vd_tiny.checkpoint, tiny_corpus_file, out, checkpoint_every=30))


def ray_options(index_options, vd_tiny, corpus, out: Path, **overrides):
    settings = dataclasses.asdict(index_options(vd_tiny.checkpoint, corpus, out, checkpoint_every=30))
    del settings["shard"]
    return RayIndexOptions(shards=2, **{**settings, **overrides})


def dies_once_mid_shard(options):
    """A shard task whose first attempt on KILLED_SHARD dies (os._exit: the worker is gone, as when it is killed)
    as batch KILLED_AT_BATCH starts, after checkpoints; the retry notes whether it found that checkpoint."""
    marker = Path(options.out + ".died")
    if options.shard == KILLED_SHARD and not marker.exists():
        marker.write_text("first attempt")
        with pytest.MonkeyPatch.context() as monkeypatch:
            run_killed_at_batch(options, KILLED_AT_BATCH, monkeypatch)
        os._exit(1)
    if options.shard == KILLED_SHARD:
        marker.write_text(f"retried, checkpoint found: {checkpoint_path(Path(options.out)).exists()}")
    return index_shard(options)


def scores_of(path) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute("SELECT * FROM expert_scores ORDER BY grp, expert").df()


def test_ray_index_equals_one_plain_run(
    ray_cluster, plain_run, vd_tiny, index_options, tiny_corpus_file, tmp_path, capsys
):
    """The command line, with the settings of `plain_run` (index_options) and its scores."""
    out = tmp_path / "ray.duckdb"
    settings = index_options(vd_tiny.checkpoint, tiny_corpus_file, out, checkpoint_every=30)
    args = ["ray-index", "--model", settings.model, "--corpus", settings.corpus, "--out", str(out), "--quiet"]
    for name in ("seq_len", "batch_size", "top_k", "samples", "context", "min_weight", "device", "dtype"):
        args += ["--" + name.replace("_", "-"), str(getattr(settings, name))]
    args += ["--checkpoint-every", "30", "--no-embeddings"]
    assert cli([*args, "--shards", "1"]) == 1 and "--shards must be at least 2" in capsys.readouterr().err
    assert cli([*args, "--shards", "2"]) == 0
    assert_same_index(plain_run, out, exact=False)
    pd.testing.assert_frame_equal(scores_of(plain_run), scores_of(out), rtol=1e-5)
    shards = sorted(tmp_path.glob("ray.shard*of2.duckdb"))
    assert [path.name for path in shards] == ["ray.shard0of2.duckdb", "ray.shard1of2.duckdb"]
    assert not any(checkpoint_path(path).exists() for path in shards)
    assert cli([*args, "--shards", "2"]) == 1 and "already exists" in capsys.readouterr().err


def test_a_worker_killed_mid_shard_is_retried_from_its_checkpoint(
    ray_cluster, plain_run, vd_tiny, index_options, tiny_corpus_file, tmp_path
):
    out = tmp_path / "killed.duckdb"
    options = ray_options(index_options, vd_tiny, tiny_corpus_file, out, scores_for="none", max_retries=1)
    run_ray_index(options, shard_task=dies_once_mid_shard)
    marker = tmp_path / "killed.shard1of2.duckdb.died"
    assert marker.read_text() == "retried, checkpoint found: True"
    assert_same_index(plain_run, out, exact=False)


def test_a_worker_that_always_dies_stops_the_job_keeping_its_checkpoint(
    ray_cluster, vd_tiny, index_options, tiny_corpus_file, tmp_path
):
    options = ray_options(index_options, vd_tiny, tiny_corpus_file, tmp_path / "dead.duckdb", max_retries=0)
    with pytest.raises(IndexJobError, match=f"shard {KILLED_SHARD}: its worker died.*rerun the same command"):
        run_ray_index(options, shard_task=dies_once_mid_shard)
    assert checkpoint_path(tmp_path / "dead.shard1of2.duckdb").exists() and not (tmp_path / "dead.duckdb").exists()
