"""The index job: run a Monet model over a corpus and write every expert's top contexts and statistics.

    python -m precompute index --model FOLDER_OR_HUB_ID --corpus CORPUS --out index.duckdb
    python -m precompute merge shard0.duckdb shard1.duckdb --out index.duckdb

Documents are tokenized, cut into windows of --seq-len tokens and run in batches (right-padded,
no attention mask needed: attention is causal, so padding never reaches a real token). Per routing
group, the sparse expert weights >= --min-weight feed ExpertState (precompute.indexing.topk). Every
--checkpoint-every tokens the state and the corpus position are saved atomically beside --out; a
rerun with the same settings resumes there and produces the same index as an uninterrupted run.
--shard k/n keeps the documents whose index % n == k; `merge` combines shard files exactly.
At the end the corpus is read once more for the documents that hold examples (their tokens are
not kept during the run) and the index is written (precompute.indexing.writer).
"""

import ctypes
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from explorer.index import schema
from explorer.index.reader import IndexUnavailable
from explorer.model.device import load_model, pick_device, pick_dtype
from explorer.model.naming import ModelShape
from explorer.model.sparse import sparse_expert_weights
from explorer.paths import EMBEDDED_CORPUS, EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR
from precompute.corpus.documents import CorpusError, Document, describe_corpus, read_documents
from precompute.indexing.topk import ExpertState, make_address, quantise_window, window_hash
from precompute.indexing.writer import IndexContents, read_index_state, write_index

HISTOGRAM_BINS = 16


class IndexJobError(RuntimeError):
    """A job that cannot go on; the message names the file and the fix. Checkpoints are kept."""


@dataclass
class IndexOptions:
    """Options of `python -m precompute index`; the CLI is generated from these fields and their help."""

    model: str = field(default=str(EMBEDDED_MODEL_DIR), metadata={"help": "model folder or hub id"})
    corpus: str = field(
        default=str(EMBEDDED_CORPUS),
        metadata={
            "help": ".txt/.jsonl/.jsonl.gz/.parquet file or folder (fields text, optional domain, id), or a Hugging"
            " Face dataset name (streamed; needs `pip install datasets`)"
        },
    )
    split: str | None = field(
        default=None, metadata={"help": "dataset split; for files, keep only records whose `split` field equals it"}
    )
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder or hub id (default: --model)"})
    out: str = field(default=str(EMBEDDED_INDEX_PATH), metadata={"help": "the DuckDB index file to write"})
    max_tokens: int | None = field(
        default=None, metadata={"help": "stop after this many tokens (per shard); gives the progress bar an ETA"}
    )
    seq_len: int | None = field(
        default=None,
        metadata={"help": "tokens per forward window (default: the model's max_position_embeddings, <= 512)"},
    )
    batch_size: int = field(default=8, metadata={"help": "windows per forward pass"})
    top_k: int = field(default=32, metadata={"help": "top contexts kept per expert"})
    samples: int = field(default=8, metadata={"help": "uniformly sampled activations kept per expert"})
    context: int = field(default=8, metadata={"help": "tokens kept on each side of an example for display"})
    min_weight: float = field(
        default=1e-2,
        metadata={
            "help": "density threshold: an expert is active where its weight >= this; lighter weights count as 0"
        },
    )
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:1, ... (auto: cuda if available)"})
    dtype: str = field(default="auto", metadata={"help": "float32, bfloat16, float16 (auto: bf16 on GPU)"})
    checkpoint_every: int = field(default=1_000_000, metadata={"help": "tokens between checkpoints"})
    shard: str = field(default="0/1", metadata={"help": "k/n: index only documents whose index %% n == k"})
    no_embeddings: bool = field(default=False, metadata={"help": "skip sentence embeddings (no semantic search)"})
    force: bool = field(default=False, metadata={"help": "overwrite an existing --out file"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise IndexJobError(f"--shard {text!r}: write k/n, e.g. 0/4 for the first of four shards.") from None
    if not 0 <= k < n:
        raise IndexJobError(f"--shard {text!r}: k must lie in 0..n-1.")
    return k, n


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise IndexJobError(
            f"No usable tokenizer at {source} ({error}). Put tokenizer.json + tokenizer_config.json in the model"
            " folder, or pass --tokenizer FOLDER_OR_HUB_ID."
        ) from None


def _fingerprint(model, tokenizer) -> dict:
    """What identifies a model for resuming and merging: its config, a weight sample and the vocabulary."""
    config = {
        k: v
        for k, v in model.config.to_dict().items()
        if k
        not in (
            "transformers_version",
            "_name_or_path",
            "output_router_probs",
            "use_cache",
            "dtype",
            "torch_dtype",
            "architectures",
        )
    }
    weights = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(parameter.detach().flatten()[:64].float().cpu().numpy().tobytes())
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    return {"config": config, "weights": weights.hexdigest(), "vocab": vocab}


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
    def __init__(self, options: IndexOptions):
        self.options = options
        self.out = Path(options.out)
        self.shard = parse_shard(options.shard)
        if self.out.exists() and not options.force:
            raise IndexJobError(f"{self.out} already exists: pass --force to rebuild it, or choose another --out.")
        self.device = pick_device(options.device)
        self.dtype = pick_dtype(options.dtype, self.device)
        self.tokenizer = _load_tokenizer(options.tokenizer or options.model)
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
            **_fingerprint(self.model, self.tokenizer),
            **settings,
            "dtype": str(self.dtype),
            "corpus": describe_corpus(options.corpus, options.split),
        }
        self.config_hash = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    # -- corpus -> chunks -> batches -----------------------------------------------------------------
    def _documents(self) -> Iterator[Document]:
        k, n = self.shard
        for document in read_documents(self.options.corpus, self.options.split):
            if document.index % n == k:
                yield document

    def _tokenize(self, document: Document) -> list[int]:
        return self.tokenizer(document.text, verbose=False)["input_ids"]

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
        state.tokens_processed += int(lengths.sum())

    # -- checkpoints ----------------------------------------------------------------------------------
    def _save_checkpoint(self, state: ExpertState, cursor: Cursor) -> None:
        path = checkpoint_path(self.out)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
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
        write_index(self.out, state, contents, embed=not self.options.no_embeddings)
        if not self.options.quiet:
            print(
                f"wrote {self.out} ({self.out.stat().st_size / 1e6:.1f} MB, {state.tokens_processed} tokens,"
                f" {time.perf_counter() - started:.1f} s to write)"
            )
        checkpoint_path(self.out).unlink(missing_ok=True)
        return self.out

    def _contents(self, state: ExpertState, cursor: Cursor) -> IndexContents:
        """Read the corpus again for the documents that hold examples: their tokens and metadata."""
        addresses = torch.cat([state.top.address.flatten(), state.sample.address.flatten()])
        needed = set((addresses[addresses >= 0] >> 32).unique().tolist())
        documents, tokens = [], []
        for document in self._documents():
            if document.index > cursor.doc:
                break
            if document.index in needed:
                ids = np.asarray(self._tokenize(document), dtype=np.int64)
                documents.append((document.index, document.source_id, document.domain, len(ids)))
                tokens.append(pd.DataFrame({"doc": document.index, "position": np.arange(len(ids)), "token_id": ids}))
        config = self.model.config
        meta = {
            "schema_version": schema.SCHEMA_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": self.options.model,
            "config_hash": self.config_hash,
            "tokenizer": f"{type(self.tokenizer).__name__} ({len(self.tokenizer)} tokens)",
            "corpus": describe_corpus(self.options.corpus, self.options.split),
            "shards": [self.options.shard],
            "documents_processed": cursor.documents,
            "tokens_processed": state.tokens_processed,
            "seq_len": self.options.seq_len,
            "top_k": self.options.top_k,
            "samples": self.options.samples,
            "context": self.options.context,
            "min_weight": self.options.min_weight,
            "histogram_edges": state.histogram_edges.tolist(),
            "num_layers": config.num_hidden_layers,
            "moe_groups": config.moe_groups,
            "num_groups": self.shape.num_groups,
            "moe_experts": config.moe_experts,
            "moe_heads": config.moe_heads,
            "moe_decompose": config.moe_decompose,
            "dtype": str(self.dtype).removeprefix("torch."),
            "embedding_model": None if self.options.no_embeddings else _embedding_model_name(),
        }
        vocab = self.tokenizer.batch_decode([[t] for t in range(len(self.tokenizer))])
        return IndexContents(
            meta=meta,
            documents=pd.DataFrame(documents, columns=["doc", "source_id", "domain", "n_tokens"]),
            tokens=pd.concat(tokens) if tokens else pd.DataFrame(columns=["doc", "position", "token_id"]),
            vocab=vocab,
        )


def _embedding_model_name() -> str:
    from explorer.index.embedding import EMBEDDING_MODEL

    return EMBEDDING_MODEL


class BatchCandidates:
    """One group's activations in a batch, answering what ExpertState asks of the few it keeps."""

    def __init__(self, g1, g2, row, position, expert, lengths, position_hash, context: int):
        self.g1, self.g2, self.row, self.position, self.expert = g1, g2, row, position, expert
        self.lengths, self.position_hash = lengths, position_hash
        self.offsets = torch.arange(-context, context + 1, device=g1.device)
        self._windows = None  # (done mask, quantised windows, maxima) per activation, once asked for

    def window_hash(self, index: torch.Tensor) -> torch.Tensor:
        return self.position_hash[self.row[index], self.position[index]]

    def window_weights(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantised window weights of some activations; each computed once per batch (while the banks
        are filling, the top-K and the sample both take most activations)."""
        if self._windows is None:
            n, device = self.row.numel(), self.row.device
            self._windows = (
                torch.zeros(n, dtype=torch.bool, device=device),
                torch.zeros((n, self.offsets.numel()), dtype=torch.uint8, device=device),
                torch.zeros(n, device=device),
            )
        done, windows, maxima = self._windows
        todo = index[~done[index]].unique()
        if todo.numel():
            windows[todo], maxima[todo] = self._compute_window_weights(todo)
            done[todo] = True
        return windows[index], maxima[index]

    def _compute_window_weights(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, H, E = self.g1.shape
        row = self.row[index, None]
        position = self.position[index, None] + self.offsets  # [n, W]
        inside = (position >= 0) & (position < self.lengths[row])
        token = row * T + position.clamp(0, T - 1)
        i, j = (self.expert[index] // E)[:, None], (self.expert[index] % E)[:, None]
        if token.numel() * 8 > B * T * E:  # many windows (a cold start): gather whole head rows
            rows = [g.transpose(-1, -2).reshape(-1, H) for g in (self.g1, self.g2)]  # [B*T*E, H]
            g1 = rows[0].index_select(0, (token * E + i).flatten()).view(*token.shape, H)
            g2 = rows[1].index_select(0, (token * E + j).flatten()).view(*token.shape, H)
        else:  # a few windows: gather single weights, never copying g1 / g2
            heads = torch.arange(H, device=token.device) * E
            g1 = self.g1.reshape(-1).index_select(0, ((token * H * E + i)[..., None] + heads).flatten())
            g2 = self.g2.reshape(-1).index_select(0, ((token * H * E + j)[..., None] + heads).flatten())
            g1, g2 = g1.view(*token.shape, H), g2.view(*token.shape, H)  # [n, W, H]
        weights = (g1 * g2).sum(-1) * inside
        return quantise_window(weights)


def window_hashes(context_ids: torch.Tensor, context: int) -> torch.Tensor:
    """[B, T] hash of the window around every position; context_ids is [B, T + 2*context] (-1 outside the doc)."""
    B, width = context_ids.shape
    windows = context_ids.unfold(1, 2 * context + 1, 1)  # [B, T, W]
    return window_hash(windows.reshape(-1, 2 * context + 1)).view(B, width - 2 * context)


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
    return IndexJob(options).run()


def merge_indexes(paths: list[str | Path], out: str | Path, embed: bool = True, force: bool = False) -> Path:
    """Combine index files of disjoint shards of one job into one, exactly as one run over all of them."""
    out = Path(out)
    if out.exists() and not force:
        raise IndexJobError(f"{out} already exists: pass --force to overwrite it, or choose another --out.")
    if len(paths) < 2:
        raise IndexJobError("merge needs at least two index files.")
    state, contents = read_index_state(paths[0])
    documents, tokens = [contents.documents], [contents.tokens]
    meta = dict(contents.meta)
    for path in paths[1:]:
        other_state, other = read_index_state(path)
        for key in ("config_hash", "corpus", "schema_version"):
            if other.meta[key] != meta[key]:
                raise IndexJobError(f"{path} differs from {paths[0]} in {key}: only shards of one job can be merged.")
        overlap = set(other.meta["shards"]) & set(meta["shards"])
        if overlap:
            raise IndexJobError(f"{path} covers shard(s) {sorted(overlap)} already merged: each shard once.")
        state.absorb(other_state)
        documents.append(other.documents)
        tokens.append(other.tokens)
        meta["shards"] = sorted(meta["shards"] + other.meta["shards"])
        meta["documents_processed"] += other.meta["documents_processed"]
    meta["tokens_processed"] = state.tokens_processed
    meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["embedding_model"] = _embedding_model_name() if embed else None
    merged = IndexContents(
        meta, pd.concat(documents, ignore_index=True), pd.concat(tokens, ignore_index=True), contents.vocab
    )
    return write_index(out, state, merged, embed=embed)


def upgrade_index(path: str | Path, out: str | Path, force: bool = False) -> Path:
    """Rewrite an index of an older schema version in the current one, from the state it holds: no model run.

    Everything the job accumulated is read back unchanged; the lookup tables of the current schema are
    derived anew, as are the labels (and embeddings, when the old file had them)."""
    out = Path(out)
    if out.exists() and not force:
        raise IndexJobError(f"{out} already exists: pass --force to overwrite it, or choose another --out.")
    try:
        state, contents = read_index_state(path, versions=schema.STATE_READABLE_VERSIONS)
    except IndexUnavailable as error:
        raise IndexJobError(f"Cannot upgrade {path}: {error}") from None
    meta = dict(contents.meta)
    embed = meta.get("embedding_model") is not None
    meta.update(
        schema_version=schema.SCHEMA_VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        embedding_model=_embedding_model_name() if embed else None,
    )
    return write_index(out, state, dataclasses.replace(contents, meta=meta), embed=embed)
