"""Index files made from other index files, with no model run: shards merged, older schemas upgraded.

    python -m precompute merge shard0.duckdb shard1.duckdb --out index.duckdb
    python -m precompute upgrade old.duckdb --out new.duckdb

Both read each file's accumulated state back (precompute.indexing.writer.read_index_state) and write
it again, so the result is exactly what one run (over all shards, in the current schema) writes.
Two things an older file cannot give back: the per-token corpus counts (schema 3), which the upgrade
recounts from the corpus the file was built from (tokenizer only, no model run), and the top contexts'
other equals: an older file kept the first contexts of equal weight in corpus order, and so does its
upgrade (meta.tie_break says which rule a file's ties followed; only files of one rule merge).
"""

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import torch

from explorer.index import postings, schema
from explorer.index.reader import ExpertIndex, IndexUnavailable
from precompute.cli import option, required_option
from precompute.corpus.documents import CorpusError, parse_corpus_description
from precompute.indexing.options import (
    IndexJobError,
    load_tokenizer,
    parse_shard,
    refuse_to_overwrite,
    shard_documents,
    tokenize,
)
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
    corpus: str | None = option(
        None, "the corpus the index was built from, to recount its tokens (default: the one its meta names)"
    )
    tokenizer: str | None = option(None, "tokenizer folder or hub id of that run (default: the model its meta names)")
    force: bool = option(False, "overwrite an existing --out file")
    quiet: bool = option(False, "no progress bar")


def run_merge(options: MergeOptions) -> None:
    path = merge_indexes(
        options.shards, options.out, not options.no_embeddings, options.force, show_progress=not options.quiet
    )
    print(f"wrote {path}")


def run_upgrade(options: UpgradeOptions) -> None:
    path = upgrade_index(
        options.index,
        options.out,
        force=options.force,
        show_progress=not options.quiet,
        corpus=options.corpus,
        tokenizer=options.tokenizer,
    )
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
        for key in ("config_hash", "corpus", "schema_version", "tie_break"):
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


def upgrade_index(
    path: str | Path,
    out: str | Path,
    force: bool = False,
    show_progress: bool = False,
    corpus: str | None = None,
    tokenizer: str | None = None,
) -> Path:
    """Rewrite an index of an older schema version in the current one, from the state it holds: no model run.
    A file of the current version written before text_postings existed is copied with that table added.

    Everything the job accumulated is read back unchanged; the lookup tables of the current schema are
    derived anew, as are the labels (and embeddings, when the old file had them). A file older than schema 3
    lacks the corpus' token counts: they are recounted from `corpus` with `tokenizer` (default: the corpus and
    model its meta names), and the upgrade stops, saying how to rebuild, when that cannot give the same tokens."""
    out = Path(out)
    refuse_to_overwrite(out, force)
    if _lacks_only_postings(path):
        return add_text_postings(path, out)
    try:
        state, contents = read_index_state(path, versions=schema.STATE_READABLE_VERSIONS)
    except IndexUnavailable as error:
        raise IndexJobError(f"Cannot upgrade {path}: {error}") from None
    if contents.meta.schema_version < schema.COUNTED_TOKENS_VERSION:
        state.token_counts = recount_tokens(path, contents.meta, corpus, tokenizer)
    embed = contents.meta.embedding_model is not None
    return write_index(out, state, contents, embed=embed, show_progress=show_progress)


def _lacks_only_postings(path) -> bool:
    """A file of the current schema version without text_postings (written before the table existed)."""
    try:
        with ExpertIndex(path) as index:
            return not postings.has_postings(index)
    except IndexUnavailable:
        return False


def add_text_postings(path: str | Path, out: str | Path) -> Path:
    """A copy of the index at `path` with text_postings added (derived from its tokens), written to `out`
    atomically; every other table is kept as it is."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(path, tmp)
    quoted = str(tmp).replace("'", "''")
    try:
        with duckdb.connect() as conn:
            spill = str(out.with_name(out.name + ".spill")).replace("'", "''")
            conn.execute(f"SET temp_directory = '{spill}'")
            conn.execute(f"ATTACH '{quoted}' AS index_file (ROW_GROUP_SIZE {schema.ROW_GROUP_SIZE})")
            conn.execute("USE index_file")
            conn.execute(schema.TEXT_POSTINGS.ddl())
            vocab = [text for (text,) in conn.execute("SELECT text FROM vocab ORDER BY token_id").fetchall()]
            (context,) = conn.execute("SELECT value::INTEGER FROM meta WHERE key = 'context'").fetchone()
            postings.write_text_postings(conn, vocab, context)
            conn.execute("CHECKPOINT")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return out


def recount_tokens(path, meta: schema.IndexMeta, corpus: str | None, tokenizer: str | None) -> torch.Tensor:
    """Per token id, how often the job that wrote `path` ran the model on it, counted again from its corpus.

    A single shard ran on the first meta.tokens_processed tokens of its documents (--max-tokens cuts there);
    merged shards are counted whole, and must add up to what the file says it processed."""
    source, split = parse_corpus_description(meta.corpus)
    source, tokenizer = corpus or source, tokenizer or meta.model
    rerun = f"python -m precompute index --model {meta.model} --corpus {source}"
    rerun += f" --split {split}" if split else ""
    rebuild = (
        "Pass --corpus (and --tokenizer) of the run that built it, or rebuild the index with the current code: "
        + (f"{rerun} --shard {meta.shards[0]} --out NEW" if len(meta.shards) == 1 else f"{rerun} --shard k/n per shard")
        + " (see README, 'Expert index')."
    )
    needs = (
        f"Cannot upgrade {path}: schema {schema.SCHEMA_VERSION} stores how often each token occurs in the indexed"
        f" corpus, which a schema-{meta.schema_version} file lacks; the upgrade recounts it from that corpus"
    )
    loaded = load_tokenizer(tokenizer)
    counts = np.zeros(len(loaded), dtype=np.int64)
    budget = meta.tokens_processed if len(meta.shards) == 1 else None
    counted = 0
    try:
        for shard in meta.shards:
            for document in shard_documents(source, split, parse_shard(shard)):
                ids = tokenize(loaded, document.text)[: None if budget is None else budget - counted]
                counts += np.bincount(ids, minlength=len(counts))[: len(counts)]
                counted += len(ids)
                if counted == budget:
                    break
    except CorpusError as error:
        raise IndexJobError(f"{needs}, which cannot be read ({error}). {rebuild}") from None
    if counted != meta.tokens_processed:
        raise IndexJobError(
            f"{needs}, but {source} gives {counted} tokens for shard(s) {', '.join(meta.shards)} where the index"
            f" processed {meta.tokens_processed} (another corpus or tokenizer, or shards cut by --max-tokens)."
            f" {rebuild}"
        )
    return torch.from_numpy(counts)
