"""Writing an ExpertState to the DuckDB index file, and reading a finished file back (for merging shards
and upgrading older schema versions).

The schema is explorer.index.schema's; each table has one writer function here. Besides copying the
state, writing derives what only the final top contexts can tell: the token store (tokens inside some
example's window, each once), the top tokens per expert, an automatic label (explorer.index.labels:
the tokens that distinguish the expert's examples from the corpus, led by its domain when the domain
rule says it is specialised, decided first on a scratch file) and, optionally, a sentence
embedding per expert. Top contexts are written in display order: by weight, and of equal weight each
document's first before any document's second (the state keeps them by weight and place key).

Per-expert tables are written group by group. The lookup tables the reader needs at scale are then
derived inside DuckDB from tables already written, in their own order (`INSERT ... SELECT ... ORDER
BY`): examples_by_location from examples, expert_tokens from the top tokens staged group by group,
doc_text from tokens. So no re-ordered copy of 50M top contexts is held in Python (DuckDB sorts them,
spilling beside the file if memory runs short). The file appears atomically: it is written beside the
target and renamed at the end.
"""

import dataclasses
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import torch
from tqdm import tqdm

from explorer.index import labels, postings, schema
from precompute.indexing.topk import (
    EMPTY_ADDRESS,
    ExpertState,
    make_address,
    place_key,
    sample_priority,
    split_address,
)

TOP_TOKENS_PER_EXPERT = 16
EMBEDDED_CONTEXTS = 3  # top contexts that go into an expert's embedding text
DOCUMENT_COLUMNS = {"doc": pl.Int64, "source_id": pl.String, "domain": pl.String, "n_tokens": pl.Int64}
TOKEN_COLUMNS = {"doc": pl.Int64, "position": pl.Int64, "token_id": pl.Int64}
# A file is written without scores (precompute.indexing.scores adds them): a merged or upgraded one keeps none.
NO_SCORES = dict(scores_for=None, scores_model=None, scores_dtype=None, coherence_baseline=None, coherence_seed=None)
STAGED_EXPERT_TOKENS = "staged_expert_tokens"  # a temporary table: expert_tokens rows in (grp, expert) order


def embedding_model_name() -> str:
    """The sentence-embedding model expert_embeddings are computed with (imported only when named)."""
    from explorer.index.embedding import EMBEDDING_MODEL

    return EMBEDDING_MODEL


@dataclass
class IndexContents:
    """What an index holds besides the state: facts, documents, a token source and the vocabulary."""

    meta: schema.IndexMeta  # write_index stamps schema_version, created and embedding_model
    documents: pl.DataFrame  # DOCUMENT_COLUMNS
    tokens: pl.DataFrame  # TOKEN_COLUMNS: at least every token inside an example's window
    vocab: list[str]  # display text by token id


class TokenSource:
    """Sorted (doc, position) addresses of the available tokens, for vectorised lookups."""

    def __init__(self, tokens: pl.DataFrame):
        columns = [tokens[name].to_numpy().astype(np.int64, copy=False) for name in ("doc", "position", "token_id")]
        address = make_address(columns[0], columns[1])
        if (address[1:] < address[:-1]).any():  # the job gives them in order; a merge, shard after shard
            order = np.argsort(address, kind="stable")
            address, columns = address[order], [column[order] for column in columns]
        self.address, (self.doc, self.position, self.token_id) = address, columns
        self.needed = np.zeros(len(self.address), dtype=bool)

    def _search(self, address: np.ndarray, side: str = "left") -> np.ndarray:
        """np.searchsorted with the queries sorted first: cache-friendly, several times faster at scale."""
        flat = address.reshape(-1)
        order = np.argsort(flat, kind="stable")
        found = np.empty(len(flat), dtype=np.int64)
        found[order] = np.searchsorted(self.address, flat[order], side=side)
        return found.reshape(address.shape)

    def lookup(self, address: np.ndarray) -> np.ndarray:
        """Token id at each address, -1 where none is stored."""
        index = self._search(address).clip(0, max(len(self.address) - 1, 0))
        found = self.address[index] == address if len(self.address) else np.zeros(address.shape, bool)
        return np.where(found, self.token_id[index] if len(self.address) else -1, -1)

    def mark_windows(self, address: np.ndarray, context: int) -> None:
        """Mark every stored token within `context` positions of each address (same document)."""
        low = self._search(address - context)
        high = self._search(address + context, side="right")
        n = len(self.address) + 1
        coverage = np.cumsum(np.bincount(low, minlength=n) - np.bincount(high, minlength=n))[:-1]
        self.needed |= coverage > 0


# -- what the final top contexts tell ---------------------------------------------------------------------
def _bank_rows(bank, slots: slice, kind: str) -> dict[str, np.ndarray]:
    """Valid entries of one bank for a range of slots in display order (by slot, then rank), with rank."""
    slot, column = (bank.address[slots] != EMPTY_ADDRESS).nonzero(as_tuple=True)
    rows = {name: tensor[slots][slot, column].cpu().numpy() for name, tensor in bank.tensors().items()}
    rows["slot"] = (slot + slots.start).cpu().numpy()
    if kind == "top":
        order = _display_order(rows["slot"], rows["weight"], rows["address"])
    else:  # samples are kept in priority order; show them by weight
        order = np.lexsort((rows["address"], -rows["weight"], rows["slot"]))
    rows = {name: value[order] for name, value in rows.items()}
    starts = np.searchsorted(rows["slot"], rows["slot"])
    rows["rank"] = np.arange(len(rows["slot"])) - starts
    return rows


def _display_order(slot: np.ndarray, weight: np.ndarray, address: np.ndarray) -> np.ndarray:
    """Top contexts by (slot, weight desc); of equal weight, each document's first before any document's second
    (a saturated expert's first contexts come from as many documents as it has), then by place key."""
    tie = place_key(address)
    doc = split_address(address)[0]
    by_document = np.lexsort((tie, doc, -weight, slot))
    s, w, d = slot[by_document], weight[by_document], doc[by_document]
    starts = np.ones(len(slot), dtype=bool)
    starts[1:] = (s[1:] != s[:-1]) | (w[1:] != w[:-1]) | (d[1:] != d[:-1])
    first_of_run = np.maximum.accumulate(np.where(starts, np.arange(len(slot)), 0))
    repeat = np.empty(len(slot), dtype=np.int64)  # 0 for a document's first context of that weight, 1 next, ...
    repeat[by_document] = np.arange(len(slot)) - first_of_run
    return np.lexsort((tie, repeat, -weight, slot))


def _token_counts(top: dict, sample: dict, tokens: TokenSource) -> pl.DataFrame:
    """slot, token_id, count, mean_weight, rank: highlighted tokens over an expert's examples (each place once),
    most frequent first."""
    places = pl.DataFrame(
        {name: np.concatenate([top[name], sample[name]]) for name in ("slot", "address", "weight")}
    ).unique(["slot", "address"], keep="first", maintain_order=True)
    places = places.with_columns(token_id=pl.Series(tokens.lookup(places["address"].to_numpy())))
    return (
        places.group_by("slot", "token_id")
        .agg(count=pl.len(), mean_weight=pl.col("weight").mean())
        .sort("slot", "count", "mean_weight", "token_id", descending=[False, True, True, False])
        .with_columns(rank=pl.int_range(pl.len()).over("slot"))
    )


def _context_texts(top: dict, tokens: TokenSource, vocab: list[str], context: int) -> dict[int, str]:
    """Text of each slot's first EMBEDDED_CONTEXTS top contexts, joined."""
    chosen = top["rank"] < EMBEDDED_CONTEXTS
    offsets = np.arange(-context, context + 1)
    window_ids = tokens.lookup(top["address"][chosen][:, None] + offsets[None, :])
    texts = defaultdict(list)
    for slot, row in zip(top["slot"][chosen], window_ids, strict=True):
        texts[slot].append("".join(vocab[t] for t in row if t >= 0))
    return {slot: " … ".join(parts) for slot, parts in texts.items()}


# -- one writer per table ---------------------------------------------------------------------------------
def _list_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """[n, w] numpy -> arrow list array of n lists of w values."""
    n, width = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * width, type=pa.int64())
    return pa.LargeListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=value_type))


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")


def insert_rows(conn, table: schema.Table, columns: dict, into: str | None = None) -> None:
    """Append rows (arrow arrays in the table's column order) to `table`, or to the table named `into`."""
    incoming = pa.table({name: columns[name] for name in table.column_names})
    if incoming.num_rows:
        conn.register("incoming", incoming)
        conn.execute(f"INSERT INTO {into or table.name} SELECT * FROM incoming")
        conn.unregister("incoming")


def _write_meta(conn, meta: schema.IndexMeta) -> None:
    conn.executemany(f"INSERT INTO {schema.META.name} VALUES (?, ?)", schema.meta_rows(meta))


def _corpus_counts(state: ExpertState, vocab_size: int) -> np.ndarray:
    """How often each token id was processed, one count per vocabulary entry; they sum to tokens_processed."""
    counts = np.zeros(max(vocab_size, state.token_counts.numel()), dtype=np.int64)
    counts[: state.token_counts.numel()] = state.token_counts.numpy()
    if counts.sum() != state.tokens_processed or len(counts) > vocab_size:
        raise ValueError(
            f"the state's token counts ({counts.sum()} tokens, ids up to {len(counts) - 1}) do not match"
            f" its {state.tokens_processed} tokens processed and {vocab_size} vocabulary entries"
        )
    return counts


def _write_vocab(conn, vocab: list[str], corpus_counts: np.ndarray) -> None:
    columns = {
        "token_id": pa.array(np.arange(len(vocab)), pa.uint32()),
        "text": pa.array(vocab, pa.string()),
        "corpus_count": pa.array(corpus_counts, pa.uint64()),
    }
    insert_rows(conn, schema.VOCAB, columns)


def _write_domains(conn, state: ExpertState) -> None:
    seen = state.domain_tokens.numpy() > 0  # a domain met only past --max-tokens contributed nothing
    columns = {
        "domain": pa.array(np.array(state.domains, dtype=object)[seen], pa.string()),
        "n_tokens": pa.array(state.domain_tokens.numpy()[seen], pa.uint64()),
    }
    insert_rows(conn, schema.DOMAINS, columns)


def _write_experts(conn, state: ExpertState, group: int, slot: np.ndarray, labels: list[str], E: int) -> None:
    expert = slot % (E * E)
    columns = {
        "grp": pa.array(np.full(len(slot), group), pa.uint8()),
        "expert": pa.array(expert, pa.uint32()),
        "i": pa.array(expert // E, pa.uint16()),
        "j": pa.array(expert % E, pa.uint16()),
        "active_count": pa.array(state.active_count[slot].cpu().numpy(), pa.uint64()),
        "weight_sum": pa.array(state.weight_sum[slot].cpu().numpy(), pa.float64()),
        "weight_max": pa.array(state.weight_max[slot].cpu().numpy(), pa.float32()),
        "histogram": _list_array(state.histogram[slot].cpu().numpy(), pa.uint32()),
        "label": pa.array(labels, pa.string()),
    }
    insert_rows(conn, schema.EXPERTS, columns)


def _write_expert_embeddings(conn, group: int, expert: np.ndarray, texts: list[str]) -> None:
    from explorer.index.embedding import embed_texts

    vectors = embed_texts(texts)
    columns = {
        "grp": pa.array(np.full(len(expert), group), pa.uint8()),
        "expert": pa.array(expert, pa.uint32()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), schema.EMBEDDING_DIM),
    }
    insert_rows(conn, schema.EXPERT_EMBEDDINGS, columns)


def _write_expert_domains(conn, state: ExpertState, group: int, slots: slice) -> None:
    domain_sums = state.domain_weight_sum[slots].cpu().numpy()
    expert, column = domain_sums.nonzero()
    columns = {
        "grp": pa.array(np.full(len(expert), group), pa.uint8()),
        "expert": pa.array(expert, pa.uint32()),
        "domain": pa.array(np.array(state.domains, dtype=object)[column] if len(expert) else [], pa.string()),
        "weight_sum": pa.array(domain_sums[expert, column], pa.float64()),
    }
    insert_rows(conn, schema.EXPERT_DOMAINS, columns)


def _write_examples(conn, group: int, kind: str, rows: dict[str, np.ndarray], experts_per_group: int) -> None:
    doc, position = split_address(rows["address"])
    n = len(doc)
    columns = {
        "grp": pa.array(np.full(n, group), pa.uint8()),
        "expert": pa.array(rows["slot"] % experts_per_group, pa.uint32()),
        "kind": pa.array(np.full(n, kind), pa.string()),
        "rank": pa.array(rows["rank"], pa.uint16()),
        "doc": pa.array(doc, pa.uint32()),
        "position": pa.array(position, pa.uint32()),
        "weight": pa.array(rows["weight"], pa.float32()),
        "window_hash": pa.array(rows["key"], pa.int64()) if kind == "top" else pa.nulls(n, pa.int64()),
        "window_max": pa.array(rows["window_max"], pa.float32()),
        "window_weights": _list_array(rows["window"], pa.uint8()),
    }
    insert_rows(conn, schema.EXAMPLES, columns)


def _stage_expert_tokens(conn, group: int, top_tokens: pl.DataFrame, experts_per_group: int) -> None:
    """One group's top tokens, into the staging table expert_tokens is sorted from at the end."""
    slot = top_tokens["slot"].to_numpy()
    columns = {
        "grp": pa.array(np.full(len(slot), group), pa.uint8()),
        "expert": pa.array(slot % experts_per_group, pa.uint32()),
        "token_id": pa.array(top_tokens["token_id"].to_numpy(), pa.uint32()),
        "count": pa.array(top_tokens["count"].to_numpy(), pa.uint32()),
        "mean_weight": pa.array(top_tokens["mean_weight"].to_numpy(), pa.float32()),
    }
    insert_rows(conn, schema.EXPERT_TOKENS, columns, into=STAGED_EXPERT_TOKENS)


def _write_expert_tokens(conn) -> None:
    """Every expert's top tokens, ordered by (token, group, expert) for search by token."""
    conn.execute(
        f"INSERT INTO {schema.EXPERT_TOKENS.name} SELECT * FROM {STAGED_EXPERT_TOKENS} ORDER BY token_id, grp, expert"
    )
    conn.execute(f"DROP TABLE {STAGED_EXPERT_TOKENS}")


def _write_examples_by_location(conn) -> None:
    """Every top context again, ordered by (doc, position): derived from examples."""
    conn.execute(
        f"INSERT INTO {schema.EXAMPLES_BY_LOCATION.name}"
        " SELECT doc, position, grp, expert, rank, weight FROM examples WHERE kind = 'top'"
        " ORDER BY doc, position, grp, expert"
    )


def _active_slots(active_count: torch.Tensor, group: int, experts_per_group: int) -> np.ndarray:
    """Slots of one group's experts that were active at least once (the experts table has a row for each)."""
    slots = slice(group * experts_per_group, (group + 1) * experts_per_group)
    return (active_count[slots] > 0).nonzero().squeeze(1).cpu().numpy() + group * experts_per_group


def _specialised_domains(path: Path, state: ExpertState, meta: schema.IndexMeta, vocab: list[str]) -> dict[int, str]:
    """Slot -> the domain the domain rule calls that expert specialised in, for its label.

    The rule has one home (explorer.index.domains) and reads an index file, so it runs on a scratch file beside
    `path` holding only the tables it reads; labels are then written with the experts, never updated afterwards
    (an UPDATE left a third of the embedded index's file as free blocks)."""
    from explorer.index.domains import specialised_experts
    from explorer.index.reader import ExpertIndex

    scratch = path.with_name(path.name + ".domains")
    scratch.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(scratch)) as conn:
            for table in (schema.META, schema.VOCAB, schema.DOMAINS, schema.EXPERTS, schema.EXPERT_DOMAINS):
                conn.execute(table.ddl())
            _write_meta(conn, meta)
            _write_vocab(conn, vocab, _corpus_counts(state, len(vocab)))
            _write_domains(conn, state)
            active_count = state.active_count
            for group in range(meta.num_groups):
                slot = _active_slots(active_count, group, meta.experts_per_group)
                _write_experts(conn, state, group, slot, [""] * len(slot), meta.moe_experts)
                slots = slice(group * meta.experts_per_group, (group + 1) * meta.experts_per_group)
                _write_expert_domains(conn, state, group, slots)
        with ExpertIndex(scratch) as index:
            found = specialised_experts(index)
    finally:
        scratch.unlink(missing_ok=True)
    return {v.group * meta.experts_per_group + v.expert: v.top_domain for v in found}


def _write_tokens(conn, tokens: TokenSource) -> None:
    keep = tokens.needed
    columns = {
        "doc": pa.array(tokens.doc[keep], pa.uint32()),
        "position": pa.array(tokens.position[keep], pa.uint32()),
        "token_id": pa.array(tokens.token_id[keep], pa.uint32()),
    }
    insert_rows(conn, schema.TOKENS, columns)


def _write_doc_text(conn, vocab: list[str]) -> None:
    """Per stored document: its stored tokens' lowercased text (GAP between runs), their positions and
    character offsets, and its heaviest top context's weight (schema.DOC_TEXT); derived from tokens and
    examples_by_location. Tokens are lowercased by Python, as the reader lowercases what it searches for."""
    gap = schema.DOC_TEXT_GAP
    lowered = pa.table(
        {
            "token_id": pa.array(np.arange(len(vocab)), pa.uint32()),
            "piece": pa.array([postings.searchable(text) for text in vocab], pa.string()),
        }
    )
    conn.register("lowered_vocab", lowered)
    # one sort per window and one ordered aggregate (of structs): a third less CPU than three ordered lists
    conn.execute(
        f"""
        INSERT INTO {schema.DOC_TEXT.name}
        WITH ordered AS (
            SELECT doc, position, piece,
                   coalesce(position <> lag(position) OVER (PARTITION BY doc ORDER BY position) + 1, false)
                       AS after_gap
            FROM {schema.TOKENS.name} JOIN lowered_vocab USING (token_id)
        ), placed AS (
            SELECT doc, position,
                   CASE WHEN after_gap THEN $gap || piece ELSE piece END AS piece,
                   sum(length(piece) + after_gap::INTEGER)
                       OVER (PARTITION BY doc ORDER BY position ROWS UNBOUNDED PRECEDING) - length(piece) AS start
            FROM ordered
        ), grouped AS (
            SELECT doc, list({{'position': position, 'start': start, 'piece': piece}} ORDER BY position) AS stored
            FROM placed GROUP BY doc
        ), heaviest AS (
            SELECT doc, max(weight) AS max_weight FROM {schema.EXAMPLES_BY_LOCATION.name} GROUP BY doc
        )
        SELECT doc,
               array_to_string(list_transform(stored, t -> t.piece), ''),
               list_transform(stored, t -> t.position),
               list_transform(stored, t -> t.start),
               coalesce(max_weight, 0)
        FROM grouped LEFT JOIN heaviest USING (doc)
        ORDER BY doc
        """,
        {"gap": gap},
    )
    conn.unregister("lowered_vocab")


def _write_documents(conn, documents: pl.DataFrame, tokens: TokenSource) -> None:
    """The documents whose tokens are stored, ordered by doc."""
    stored_docs = pl.Series(np.unique(tokens.doc[tokens.needed]))
    stored = documents.filter(pl.col("doc").is_in(stored_docs)).sort("doc")
    columns = {
        "doc": pa.array(stored["doc"].to_numpy(), pa.uint32()),
        "source_id": pa.array(stored["source_id"].to_list(), pa.string()),
        "domain": pa.array(stored["domain"].to_list(), pa.string()),
        "n_tokens": pa.array(stored["n_tokens"].to_numpy(), pa.uint32()),
    }
    insert_rows(conn, schema.DOCUMENTS, columns)


# -- the whole file --------------------------------------------------------------------------------------
def write_index(
    path: str | Path, state: ExpertState, contents: IndexContents, embed: bool = False, show_progress: bool = False
) -> Path:
    """Write the state and contents as a complete index file at `path` (atomically: temp file, rename).

    The meta facts are stamped here: the current schema version, the time, the embedding model (if any)."""
    path = Path(path)
    meta = dataclasses.replace(
        contents.meta,
        schema_version=schema.SCHEMA_VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        embedding_model=embedding_model_name() if embed else None,
        **NO_SCORES,
    )
    E, experts_per_group, context = meta.moe_experts, meta.experts_per_group, meta.context
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tokens = TokenSource(contents.tokens)
    corpus_counts = _corpus_counts(state, len(contents.vocab))
    derived = [  # written after the groups, each from tables written before it
        ("examples_by_location", _write_examples_by_location),
        ("expert_tokens", _write_expert_tokens),
        ("tokens", lambda conn: _write_tokens(conn, tokens)),
        ("doc_text", lambda conn: _write_doc_text(conn, contents.vocab)),
        ("text_postings", lambda conn: postings.write_text_postings(conn, contents.vocab, context)),
        ("documents", lambda conn: _write_documents(conn, contents.documents, tokens)),
    ]
    steps = 1 + meta.num_groups + len(derived)  # the experts' domains, the groups, the derived tables
    bar = tqdm(total=steps, unit="step", desc=f"write {path.name}", disable=not show_progress)
    bar.set_postfix_str("domains")
    domains = _specialised_domains(path, state, meta, contents.vocab)
    bar.update()
    conn = duckdb.connect()
    spill = path.with_name(path.name + ".spill")  # sorts larger than memory spill beside the file, not into the cwd
    conn.execute(f"SET temp_directory = '{_sql_string(spill)}'")
    conn.execute(f"ATTACH '{_sql_string(tmp)}' AS index_file (ROW_GROUP_SIZE {schema.ROW_GROUP_SIZE})")
    conn.execute("USE index_file")
    try:
        for statement in schema.create_statements():
            conn.execute(statement)
        conn.execute(f"CREATE TEMP TABLE {STAGED_EXPERT_TOKENS} AS FROM {schema.EXPERT_TOKENS.name} LIMIT 0")
        _write_meta(conn, meta)
        _write_vocab(conn, contents.vocab, corpus_counts)
        _write_domains(conn, state)
        active_count = state.active_count  # derived from the histogram: summed once, not per group
        for group in range(meta.num_groups):
            bar.set_postfix_str(f"group {group + 1}")
            slots = slice(group * experts_per_group, (group + 1) * experts_per_group)
            top = _bank_rows(state.top, slots, "top")
            sample = _bank_rows(state.sample, slots, "sample")
            for rows in (top, sample):
                tokens.mark_windows(rows["address"], context)
            slot = _active_slots(active_count, group, experts_per_group)
            token_counts = _token_counts(top, sample, tokens)
            top_tokens = token_counts.filter(pl.col("rank") < TOP_TOKENS_PER_EXPERT)
            words = labels.label_texts(labels.token_scores(token_counts, corpus_counts), contents.vocab)
            slot_labels = [
                labels.with_domain(domains[s], words.get(s, "")) if s in domains else words.get(s, "") for s in slot
            ]
            if embed and len(slot):
                texts = _context_texts(top, tokens, contents.vocab, context)
                embedded = [f"{label} | {texts.get(s, '')}" for s, label in zip(slot, slot_labels, strict=True)]
                _write_expert_embeddings(conn, group, slot % experts_per_group, embedded)
            _write_experts(conn, state, group, slot, slot_labels, E)
            _write_expert_domains(conn, state, group, slots)
            for kind, rows in (("top", top), ("sample", sample)):
                _write_examples(conn, group, kind, rows, experts_per_group)
            _stage_expert_tokens(conn, group, top_tokens, experts_per_group)
            bar.update()
        for table, write in derived:
            bar.set_postfix_str(table)
            write(conn)
            bar.update()
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
        bar.close()
    os.replace(tmp, path)
    return path


# -- reading a file back -----------------------------------------------------------------------------------
def _matrix(column: pl.Series, width: int) -> np.ndarray:
    """A list column whose lists all hold `width` values, as an [n, width] array."""
    return column.list.to_array(width).to_numpy()


def read_index_state(
    path: str | Path, device="cpu", versions=(schema.SCHEMA_VERSION,)
) -> tuple[ExpertState, IndexContents]:
    """A finished index back as (state, contents): exactly what write_index was given, for merging and
    upgrading (`versions`: the schema versions accepted, among schema.STATE_READABLE_VERSIONS). A file older
    than schema.COUNTED_TOKENS_VERSION comes back without token counts (state.token_counts is empty)."""
    from explorer.index.reader import ExpertIndex

    with ExpertIndex(path, versions) as index, index.cursor() as conn:
        meta = index.meta()
        experts_per_group, window = meta.experts_per_group, 2 * meta.context + 1
        edges = torch.tensor(meta.histogram_edges, dtype=torch.float64)
        state = ExpertState(meta.num_groups * experts_per_group, meta.top_k, meta.samples, window, edges, device=device)
        state.tokens_processed = meta.tokens_processed
        for domain, n_tokens in conn.execute("SELECT domain, n_tokens FROM domains ORDER BY domain").fetchall():
            column = state.domain_index(domain)  # first: it grows state.domain_tokens
            state.domain_tokens[column] = n_tokens
        experts = conn.execute("SELECT grp, expert, weight_sum, weight_max, histogram FROM experts").pl()
        if len(experts):
            slot = torch.from_numpy(_slots(experts, experts_per_group))
            state.weight_sum[slot] = torch.from_numpy(experts["weight_sum"].to_numpy().astype(np.float64))
            state.weight_max[slot] = torch.from_numpy(experts["weight_max"].to_numpy().astype(np.float32))
            histogram = _matrix(experts["histogram"], edges.numel() - 1)
            state.histogram[slot] = torch.from_numpy(histogram.astype(np.int32))
        for domain, group, expert, weight_sum in conn.execute(
            "SELECT domain, grp, expert, weight_sum FROM expert_domains"
        ).fetchall():
            state.domain_weight_sum[group * experts_per_group + expert, state.domain_index(domain)] = weight_sum
        for kind, bank in (("top", state.top), ("sample", state.sample)):
            # a group at a time: a full-scale file's examples read at once as frames raised a merge's peak by
            # about 8 GiB (4 full-scale shards: 21.6 GiB, then 13.3 read this way)
            for group in range(meta.num_groups):
                rows = conn.execute(
                    "SELECT grp, expert, rank, doc, position, weight, window_hash, window_max, window_weights"
                    " FROM examples WHERE kind = ? AND grp = ? ORDER BY expert, rank",
                    [kind, group],
                ).pl()
                if len(rows):
                    _fill_bank(bank, kind, rows, experts_per_group, window)
            bank.refresh_bar()
        contents = IndexContents(
            meta=meta,
            documents=conn.execute("SELECT doc, source_id, domain, n_tokens FROM documents")
            .pl()
            .cast(DOCUMENT_COLUMNS),
            tokens=conn.execute("SELECT doc, position, token_id FROM tokens").pl().cast(TOKEN_COLUMNS),
            vocab=[text for (text,) in conn.execute("SELECT text FROM vocab ORDER BY token_id").fetchall()],
        )
        if meta.schema_version >= schema.COUNTED_TOKENS_VERSION:  # older files: the upgrade recounts the corpus
            counts = conn.execute("SELECT corpus_count FROM vocab ORDER BY token_id").pl()["corpus_count"]
            state.token_counts = torch.from_numpy(counts.to_numpy().astype(np.int64))
    return state, contents


def _slots(rows: pl.DataFrame, experts_per_group: int) -> np.ndarray:
    return rows["grp"].to_numpy().astype(np.int64) * experts_per_group + rows["expert"].to_numpy()


def _fill_bank(bank, kind: str, rows: pl.DataFrame, experts_per_group: int, window: int) -> None:
    """Put one kind's examples of whole slots (ordered by slot, rank) back into their bank, in the bank's own order
    (the bars are the caller's to refresh)."""
    slot = _slots(rows, experts_per_group)
    address = make_address(rows["doc"].to_numpy(), rows["position"].to_numpy())
    if kind == "top":  # the bank keeps them by (weight desc, place key); the file, in display order
        key = rows["window_hash"].to_numpy().astype(np.int64)
        order = np.lexsort((place_key(address), -rows["weight"].to_numpy(), slot))
    else:  # the bank keeps samples in priority order
        key = sample_priority(torch.from_numpy(address), torch.from_numpy(slot)).numpy()
        order = np.lexsort((address, key, slot))
    slot, address, key = slot[order], address[order], key[order]
    column = np.arange(len(slot)) - np.searchsorted(slot, slot)
    index = (torch.from_numpy(slot), torch.from_numpy(column))
    bank.weight[index] = torch.from_numpy(rows["weight"].to_numpy().astype(np.float32)[order])
    bank.address[index] = torch.from_numpy(address)
    bank.key[index] = torch.from_numpy(key)
    bank.window_max[index] = torch.from_numpy(rows["window_max"].to_numpy().astype(np.float32)[order])
    bank.window[index] = torch.from_numpy(_matrix(rows["window_weights"], window).astype(np.uint8)[order])
