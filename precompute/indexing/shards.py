"""Index files made from other index files, with no model run: shards merged, older schemas upgraded.

    python -m precompute merge shard0.duckdb shard1.duckdb --out index.duckdb
    python -m precompute upgrade old.duckdb --out new.duckdb

Both read each file's accumulated state back (precompute.indexing.writer.read_index_state) and write
it again, so the result is exactly what one run (over all shards, in the current schema) writes.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from explorer.index import schema
from explorer.index.reader import IndexUnavailable
from precompute.cli import option, required_option
from precompute.indexing.options import IndexJobError, refuse_to_overwrite
from precompute.indexing.writer import IndexContents, read_index_state, write_index


@dataclass
class MergeOptions:
    """Options of `python -m precompute merge`."""

    shards: list[str] = required_option("index files of disjoint shards of one job", positional=True)
    out: str = required_option("merged index file to write")
    no_embeddings: bool = option(False, "skip sentence embeddings (no semantic search)")
    force: bool = option(False, "overwrite an existing --out file")
    quiet: bool = option(False, "no progress bar")


@dataclass
class UpgradeOptions:
    """Options of `python -m precompute upgrade`."""

    index: str = required_option("an index file of an older schema version", positional=True)
    out: str = required_option("the index file to write, in the current schema")
    force: bool = option(False, "overwrite an existing --out file")
    quiet: bool = option(False, "no progress bar")


def run_merge(options: MergeOptions) -> None:
    path = merge_indexes(
        options.shards, options.out, not options.no_embeddings, options.force, show_progress=not options.quiet
    )
    print(f"wrote {path}")


def run_upgrade(options: UpgradeOptions) -> None:
    path = upgrade_index(options.index, options.out, force=options.force, show_progress=not options.quiet)
    print(f"wrote {path}")


def merge_indexes(
    paths: list[str | Path], out: str | Path, embed: bool = True, force: bool = False, show_progress: bool = False
) -> Path:
    """Combine index files of disjoint shards of one job into one, exactly as one run over all of them."""
    out = Path(out)
    refuse_to_overwrite(out, force)
    if len(paths) < 2:
        raise IndexJobError("merge needs at least two index files.")
    state, contents = read_index_state(paths[0])
    documents, tokens, meta = [contents.documents], [contents.tokens], contents.meta
    for path in paths[1:]:
        other_state, other = read_index_state(path)
        for key in ("config_hash", "corpus", "schema_version"):
            if getattr(other.meta, key) != getattr(meta, key):
                raise IndexJobError(f"{path} differs from {paths[0]} in {key}: only shards of one job can be merged.")
        overlap = set(other.meta.shards) & set(meta.shards)
        if overlap:
            raise IndexJobError(f"{path} covers shard(s) {sorted(overlap)} already merged: each shard once.")
        state.absorb(other_state)
        documents.append(other.documents)
        tokens.append(other.tokens)
        meta = dataclasses.replace(
            meta,
            shards=sorted(meta.shards + other.meta.shards),
            documents_processed=meta.documents_processed + other.meta.documents_processed,
        )
    meta = dataclasses.replace(meta, tokens_processed=state.tokens_processed)
    merged = IndexContents(meta, pl.concat(documents), pl.concat(tokens), contents.vocab)
    return write_index(out, state, merged, embed=embed, show_progress=show_progress)


def upgrade_index(path: str | Path, out: str | Path, force: bool = False, show_progress: bool = False) -> Path:
    """Rewrite an index of an older schema version in the current one, from the state it holds: no model run.

    Everything the job accumulated is read back unchanged; the lookup tables of the current schema are
    derived anew, as are the labels (and embeddings, when the old file had them)."""
    out = Path(out)
    refuse_to_overwrite(out, force)
    try:
        state, contents = read_index_state(path, versions=schema.STATE_READABLE_VERSIONS)
    except IndexUnavailable as error:
        raise IndexJobError(f"Cannot upgrade {path}: {error}") from None
    embed = contents.meta.embedding_model is not None
    return write_index(out, state, contents, embed=embed, show_progress=show_progress)
