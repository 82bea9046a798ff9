"""The index's meta keys: one typed IndexMeta, written and read through the schema module."""

import dataclasses

import duckdb
import pytest

from explorer.index import schema
from explorer.index.reader import ExpertIndex
from explorer.paths import EMBEDDED_INDEX_PATH


def test_the_shipped_index_meta_round_trips_to_the_same_rows():
    with duckdb.connect(str(EMBEDDED_INDEX_PATH), read_only=True) as conn:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
    meta = schema.read_meta(rows)
    stored = dict(rows)
    # the same JSON values: the format is unchanged; keys added since the file was written take their defaults
    assert sorted(row for row in schema.meta_rows(meta) if row[0] in stored) == sorted(rows)
    for spec in dataclasses.fields(schema.IndexMeta):
        assert spec.name in stored or getattr(meta, spec.name) == spec.default
    assert meta.experts_per_group == meta.moe_experts**2
    with ExpertIndex(EMBEDDED_INDEX_PATH) as index:
        assert index.meta() == meta


def test_a_written_index_stamps_its_meta(app_index):
    meta = ExpertIndex(app_index).meta()
    assert meta.schema_version == schema.SCHEMA_VERSION and meta.created and meta.embedding_model
    assert meta.shards == ["0/1"] and meta.tokens_processed > 0


def test_read_meta_names_missing_keys():
    rows = [row for row in schema.meta_rows(schema.IndexMeta(**_example_values())) if row[0] != "top_k"]
    with pytest.raises(ValueError, match="lacks top_k"):
        schema.read_meta(rows + [("unknown_key", "1")])


def test_schema_lists_every_meta_key_with_its_help():
    shown = schema.schema_markdown()
    for spec in dataclasses.fields(schema.IndexMeta):
        assert f"- `{spec.name}` (" in shown and spec.metadata["help"] in shown


def _example_values() -> dict:
    return dict(
        model="m", config_hash="h", tokenizer="t", corpus="c", shards=["0/1"], documents_processed=1,
        tokens_processed=2, seq_len=3, top_k=4, samples=5, context=6, min_weight=0.01, histogram_edges=[0.01, 1.0],
        num_layers=2, moe_groups=1, num_groups=2, moe_experts=4, moe_heads=2, moe_decompose="vertical", dtype="float32",
    )  # fmt: skip
