"""The index job: run a Monet model over a corpus and keep every expert's top contexts and statistics.

    python -m precompute index --model FOLDER_OR_HUB_ID --corpus CORPUS --out index.duckdb

Documents are tokenized, cut into windows of --seq-len tokens and run in batches (right-padded,
no attention mask needed: attention is causal, so padding never reaches a real token). Per routing
group, the sparse expert weights >= --min-weight feed ExpertState (precompute.indexing.topk). Every
--checkpoint-every tokens the state and the corpus position are saved atomically beside --out; a
rerun with the same settings resumes there and produces the same index as an uninterrupted run.
--shard k/n keeps the documents whose index % n == k; `python -m precompute merge` combines shard
files exactly (precompute.indexing.shards). At the end the corpus is read once more for the
documents that hold examples (their tokens are not kept during the run) and the index is written
(precompute.indexing.writer), then the experts' scores are added to it (precompute.indexing.scores).
"""

import ctypes
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from explorer.index import schema
from explorer.model.device import load_model, pick_device, pick_dtype
from explorer.model.naming import ModelShape
from explorer.model.sparse import sparse_expert_weights
from precompute.corpus.documents import CorpusError, Document, describe_corpus
from precompute.indexing.candidates import BatchCandidates, window_hashes
from precompute.indexing.options import (
    IndexJobError,
    IndexOptions,
    fingerprint,
    load_tokenizer,
    parse_shard,
    refuse_to_overwrite,
    shard_documents,
    tokenize,
)
from precompute.indexing.scores import score_index
from precompute.indexing.topk import EMPTY_ADDRESS, ExpertState, make_address, split_address
from precompute.indexing.writer import DOCUMENT_COLUMNS, TOKEN_COLUMNS, IndexContents, write_index

HISTOGRAM_BINS = 16
# Bumped when a checkpoint of an older job cannot be resumed exactly: 2 = top contexts tie-broken by place key,
# per-token counts kept.
CHECKPOINT_FORMAT = 2


def checkpoint_path(out: Path) -> Path:
    """Where the job keeps its state between runs: beside the index file, removed once that is written."""
    return out.with_name(out.name + ".ckpt")


@dataclass
class Chunk:
    """One forward window of a document."""

    doc: int
    start: int  # position of its first token in the document
    token_ids: list[int]
    context_ids: list[int]  # `context` tokens before and after it too (-1 outside the document)
    domain: int  # ExpertState domain column, -1 for none


@dataclass
class Cursor:
    """Where the job stands: the next chunk is document `doc` from token `offset`."""

    doc: int = 0
    offset: int = 0
    documents: int = 0  # documents started


class IndexJob:
    """One run of the index job: corpus -> batches -> ExpertState, checkpointed; then the index file."""

    def __init__(self, options: IndexOptions):
        self.options = options
        self.out = Path(options.out)
        self.shard = parse_shard(options.shard)
        refuse_to_overwrite(self.out, options.force)
        self.device = pick_device(options.device)
        self.dtype = pick_dtype(options.dtype, self.device)
        self.tokenizer = load_tokenizer(options.tokenizer or options.model)
        try:
            self.model = load_model(options.model, self.device, self.dtype)
        except (OSError, ValueError) as error:
            raise IndexJobError(f"Cannot load the model {options.model} ({error}).") from None
        config = self.model.config
        if options.seq_len is None:
            self.options = options = dataclasses.replace(options, seq_len=min(config.max_position_embeddings, 512))
        self.shape = ModelShape.of(config)
        self.experts_per_group = config.moe_experts**2
        settings = {name: getattr(options, name) for name in ("seq_len", "top_k", "samples", "context", "min_weight")}
        self.identity = {
            **fingerprint(self.model, self.tokenizer),
            **settings,
            "dtype": str(self.dtype),
            "corpus": describe_corpus(options.corpus, options.split),
        }
        self.config_hash = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    # -- corpus -> chunks -> batches -----------------------------------------------------------------
    def _documents(self) -> Iterator[Document]:
        return shard_documents(self.options.corpus, self.options.split, self.shard)

    def _tokenize(self, document: Document) -> list[int]:
        return tokenize(self.tokenizer, document.text)

    def _chunks(self, state: ExpertState, cursor: Cursor) -> Iterator[Chunk]:
        """Forward windows from the cursor on; registers each document's domain with the state."""
        L, C = self.options.seq_len, self.options.context
        for document in self._documents():
            if document.index < cursor.doc:
                continue
            ids = self._tokenize(document)
            domain = state.domain_index(document.domain)
            first = cursor.offset if document.index == cursor.doc else 0
            for start in range(first, len(ids), L):
                padded = [-1] * max(0, C - start) + ids[max(0, start - C) : start + L + C]
                end = min(start + L, len(ids))
                padded += [-1] * (end - start + 2 * C - len(padded))
                yield Chunk(document.index, start, ids[start:end], padded, domain)

    def _batches(self, state: ExpertState, cursor: Cursor) -> Iterator[list[Chunk]]:
        """Batches of chunks, cut at --max-tokens (the last chunk shortened to fit)."""
        budget = self.options.max_tokens
        batch: list[Chunk] = []
        for chunk in self._chunks(state, cursor):
            if budget is not None:
                room = budget - state.tokens_processed - sum(len(c.token_ids) for c in batch)
                if room <= 0:
                    break
                if len(chunk.token_ids) > room:
                    C = self.options.context
                    chunk.token_ids = chunk.token_ids[:room]
                    chunk.context_ids = chunk.context_ids[: room + 2 * C]  # keeps true neighbours for hashing
            batch.append(chunk)
            if len(batch) == self.options.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- one batch -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _process(self, batch: list[Chunk], state: ExpertState) -> None:
        C = self.options.context
        T = max(len(c.token_ids) for c in batch)
        input_ids = torch.zeros((len(batch), T), dtype=torch.long)
        context_ids = torch.full((len(batch), T + 2 * C), -1, dtype=torch.long)
        for row, chunk in enumerate(batch):
            input_ids[row, : len(chunk.token_ids)] = torch.tensor(chunk.token_ids)
            context_ids[row, : len(chunk.context_ids)] = torch.tensor(chunk.context_ids)
        lengths = torch.tensor([len(c.token_ids) for c in batch], device=self.device)
        doc = torch.tensor([c.doc for c in batch], device=self.device)
        start = torch.tensor([c.start for c in batch], device=self.device)
        domain = torch.tensor([c.domain for c in batch], device=self.device)
        context_ids = context_ids.to(self.device)

        position_hash = window_hashes(context_ids, C)
        base = getattr(self.model, "model", self.model)  # the decoder alone: the index needs no logits
        output = base(input_ids.to(self.device), use_cache=False, output_router_probs=True)
        for layer, probs in enumerate(output.router_probs):
            if probs is None:
                continue
            g1, g2 = (p.float() for p in probs)
            sparse = sparse_expert_weights(g1, g2, min_weight=self.options.min_weight)
            real = sparse.position < lengths[sparse.row]
            row, position, expert, weight = (t[real] for t in sparse)
            group = self.shape.group_of_layer(layer)
            candidates = BatchCandidates(g1, g2, row, position, expert, lengths, position_hash, C)
            state.add(
                group * self.experts_per_group + expert,
                weight,
                make_address(doc[row], start[row] + position),
                domain[row],
                candidates,
            )
        for chunk in batch:
            if chunk.domain >= 0:
                state.domain_tokens[chunk.domain] += len(chunk.token_ids)
        state.count_tokens(torch.cat([torch.tensor(chunk.token_ids, dtype=torch.long) for chunk in batch]))
        state.tokens_processed += int(lengths.sum())

    # -- checkpoints ----------------------------------------------------------------------------------
    def _save_checkpoint(self, state: ExpertState, cursor: Cursor) -> None:
        path = checkpoint_path(self.out)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "config_hash": self.config_hash,
                "identity": self.identity,
                "shard": self.options.shard,
                "cursor": dataclasses.asdict(cursor),
                "state": state.state_dict(),
            },
            tmp,
        )
        os.replace(tmp, path)

    def _resume(self) -> tuple[ExpertState, Cursor]:
        path = checkpoint_path(self.out)
        if not path.exists():
            config = self.model.config
            edges = torch.logspace(
                np.log10(max(self.options.min_weight, 1e-6)),
                np.log10(config.moe_heads),
                HISTOGRAM_BINS + 1,
                dtype=torch.float64,
            )
            n_slots = self.shape.num_groups * self.experts_per_group
            return ExpertState(
                n_slots,
                self.options.top_k,
                self.options.samples,
                2 * self.options.context + 1,
                edges,
                device=self.device,
            ), Cursor()
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise IndexJobError(f"Checkpoint {path} cannot be read ({error}): delete it to start over.") from None
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise IndexJobError(
                f"Checkpoint {path} was written by an older index job, which ordered tied top contexts differently"
                " and counted no tokens: it cannot be resumed exactly. Delete it to start over."
            )
        if saved["config_hash"] != self.config_hash or saved["shard"] != self.options.shard:
            differ = sorted(k for k in self.identity if saved["identity"].get(k) != self.identity[k])
            if saved["shard"] != self.options.shard:
                differ.append("shard")
            raise IndexJobError(
                f"Checkpoint {path} belongs to another job (different: {', '.join(differ)}). Use another --out,"
                " rerun with that job's settings to finish it, or delete the checkpoint to start over."
            )
        return ExpertState.from_state_dict(saved["state"], device=self.device), Cursor(**saved["cursor"])

    # -- the whole run ------------------------------------------------------------------------------------
    def run(self) -> Path:
        retain_freed_memory()
        state, cursor = self._resume()
        resumed_at = state.tokens_processed
        since_checkpoint = 0
        bar = tqdm(
            total=self.options.max_tokens,
            initial=resumed_at,
            unit="tok",
            unit_scale=True,
            desc=f"index {self.out.name}",
            disable=self.options.quiet,
            smoothing=0.1,
        )
        try:
            for batch in self._batches(state, cursor):
                self._process(batch, state)
                last = batch[-1]
                cursor.documents += sum(1 for c in batch if c.start == 0)
                cursor.doc, cursor.offset = last.doc, last.start + len(last.token_ids)
                n_tokens = sum(len(c.token_ids) for c in batch)
                since_checkpoint += n_tokens
                bar.update(n_tokens)
                bar.set_postfix(docs=cursor.documents)
                if since_checkpoint >= self.options.checkpoint_every:
                    self._save_checkpoint(state, cursor)
                    since_checkpoint = 0
        except CorpusError as error:
            if state.tokens_processed > resumed_at:
                self._save_checkpoint(state, cursor)
            raise IndexJobError(f"{error} (progress so far is in {checkpoint_path(self.out)})") from None
        finally:
            bar.close()
        if state.tokens_processed == 0:
            raise IndexJobError(
                f"No tokens to index in {self.options.corpus} (shard {self.options.shard}):"
                " is the corpus (or this shard of it) empty?"
            )
        self._save_checkpoint(state, cursor)
        started = time.perf_counter()
        contents = self._contents(state, cursor)
        write_index(
            self.out, state, contents, embed=not self.options.no_embeddings, show_progress=not self.options.quiet
        )
        if not self.options.quiet:
            print(
                f"wrote {self.out} ({self.out.stat().st_size / 1e6:.1f} MB, {state.tokens_processed} tokens,"
                f" {time.perf_counter() - started:.1f} s to write)"
            )
        checkpoint_path(self.out).unlink(missing_ok=True)
        if self.options.scores_for.strip().lower() != "none":
            self._score()
        return self.out

    def _score(self) -> None:
        """The experts' scores, now that their top contexts are final: as many rows per forward as tokens the
        index ran per forward (a row is one short window), at least 256. A killed run continues with
        `python -m precompute scores OUT`."""
        rows_per_forward = max(256, self.options.batch_size * self.options.seq_len // (self.options.context + 1))
        report = score_index(
            self.out,
            self.model,
            self.options.scores_for,
            rows_per_forward,
            coherence=not self.options.no_embeddings,
            model_name=self.options.model,
            show_progress=not self.options.quiet,
        )
        if not self.options.quiet:
            print(report.summary())

    def _contents(self, state: ExpertState, cursor: Cursor) -> IndexContents:
        """Read the corpus again for the documents that hold examples: their tokens and metadata."""
        addresses = torch.cat([state.top.address.flatten(), state.sample.address.flatten()])
        needed = set(split_address(addresses[addresses != EMPTY_ADDRESS])[0].unique().tolist())
        documents, tokens = [], []
        for document in self._documents():
            if document.index > cursor.doc:
                break
            if document.index in needed:
                ids = np.asarray(self._tokenize(document), dtype=np.int64)
                documents.append((document.index, document.source_id, document.domain, len(ids)))
                columns = {"doc": np.full(len(ids), document.index), "position": np.arange(len(ids)), "token_id": ids}
                tokens.append(pl.DataFrame(columns, schema=TOKEN_COLUMNS))
        config = self.model.config
        meta = schema.IndexMeta(
            model=self.options.model,
            config_hash=self.config_hash,
            tokenizer=f"{type(self.tokenizer).__name__} ({len(self.tokenizer)} tokens)",
            corpus=describe_corpus(self.options.corpus, self.options.split),
            shards=[self.options.shard],
            documents_processed=cursor.documents,
            tokens_processed=state.tokens_processed,
            seq_len=self.options.seq_len,
            top_k=self.options.top_k,
            tie_break=schema.PLACE_KEY_TIES,
            samples=self.options.samples,
            context=self.options.context,
            min_weight=self.options.min_weight,
            histogram_edges=state.histogram_edges.tolist(),
            num_layers=config.num_hidden_layers,
            moe_groups=config.moe_groups,
            num_groups=self.shape.num_groups,
            moe_experts=config.moe_experts,
            moe_heads=config.moe_heads,
            moe_decompose=config.moe_decompose,
            dtype=str(self.dtype).removeprefix("torch."),
        )
        vocab = self.tokenizer.batch_decode([[t] for t in range(len(self.tokenizer))])
        return IndexContents(
            meta=meta,
            documents=pl.DataFrame(documents, schema=DOCUMENT_COLUMNS, orient="row"),
            tokens=pl.concat(tokens) if tokens else pl.DataFrame(schema=TOKEN_COLUMNS),
            vocab=vocab,
        )


def retain_freed_memory() -> None:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    Every batch allocates and frees the same few-MB temporaries per group. By default glibc unmaps
    them on free and the next batch faults the pages back in, which cost a fifth to a third of a
    warm top-k update on a 2-core CPU (python -m bench.index, part b). A no-op where libc is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)  # blocks up to 32 MB come from the heap, not fresh mappings
    mallopt(m_trim_threshold, (1 << 31) - 1)  # and the heap is not trimmed after each batch


def run_index(options: IndexOptions) -> Path:
    """Run one index job (`python -m precompute index`); returns the index file written."""
    return IndexJob(options).run()
