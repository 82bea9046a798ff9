"""Older index files into the current schema: the corpus' token counts recounted, the old tie rule kept and named."""

import shutil

import duckdb
import pandas as pd
import pytest
import torch

from explorer.index import schema
from explorer.index.reader import ExpertIndex, IndexUnavailable
from precompute.cli import main
from precompute.indexing.job import IndexJob, checkpoint_path
from precompute.indexing.options import IndexJobError
from precompute.indexing.shards import merge_indexes, upgrade_index

TABLES = ("experts", "examples", "expert_tokens", "tokens", "vocab", "doc_text", "documents", "expert_domains")


@pytest.fixture
def schema_2_file(app_index, tmp_path):
    """The tiny index as schema 2 wrote it: no per-token corpus counts, no tie rule in its meta."""
    old = tmp_path / "v2.duckdb"
    shutil.copy(app_index, old)
    with duckdb.connect(str(old)) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        conn.execute("DELETE FROM meta WHERE key = 'tie_break'")
        conn.execute("ALTER TABLE vocab DROP COLUMN corpus_count")
    return old


def test_a_schema_2_index_upgrades_with_its_corpus_recounted(app_index, schema_2_file, tmp_path):
    with pytest.raises(IndexUnavailable, match="schema version 2.*precompute upgrade.*recounts.*corpus"):
        ExpertIndex(schema_2_file)
    new = tmp_path / "new.duckdb"
    assert main(["upgrade", str(schema_2_file), "--out", str(new), "--quiet"]) == 0
    with duckdb.connect(str(app_index), read_only=True) as a, duckdb.connect(str(new), read_only=True) as b:
        for table in TABLES:
            query = f"SELECT * FROM {table} ORDER BY ALL"
            pd.testing.assert_frame_equal(a.execute(query).df(), b.execute(query).df(), obj=table)
    with ExpertIndex(new) as upgraded:
        meta = upgraded.meta()
    # the old file's ties were the first in corpus order, and stay so: the file says so, and merges keep apart
    assert meta.schema_version == schema.SCHEMA_VERSION and meta.tie_break == schema.CORPUS_ORDER_TIES
    assert ExpertIndex(app_index).meta().tie_break == schema.PLACE_KEY_TIES
    with pytest.raises(IndexJobError, match="tie_break"):
        merge_indexes([app_index, new], tmp_path / "mixed.duckdb")


def test_an_upgrade_without_the_corpus_says_how_to_rebuild(schema_2_file, tmp_path, capsys):
    assert main(["upgrade", str(schema_2_file), "--out", str(tmp_path / "a.duckdb"), "--corpus", "/nowhere"]) == 1
    error = capsys.readouterr().err
    assert "recounts it from that corpus" in error and "python -m precompute index" in error and "--shard 0/1" in error
    other_corpus = tmp_path / "other.jsonl"
    other_corpus.write_text('{"text": "a different corpus"}\n')
    with pytest.raises(IndexJobError, match=r"gives \d+ tokens for shard\(s\) 0/1 where the index processed"):
        upgrade_index(schema_2_file, tmp_path / "b.duckdb", corpus=str(other_corpus))
    assert not (tmp_path / "a.duckdb").exists() and not (tmp_path / "b.duckdb").exists()


def test_a_checkpoint_of_an_older_job_is_not_resumed(vd_tiny, tiny_corpus, tmp_path, index_options):
    options = index_options(vd_tiny.checkpoint, tiny_corpus, tmp_path / "index.duckdb")
    torch.save({"config_hash": "whatever", "state": {}}, checkpoint_path(tmp_path / "index.duckdb"))
    with pytest.raises(IndexJobError, match="older index job.*Delete it"):
        IndexJob(options).run()
