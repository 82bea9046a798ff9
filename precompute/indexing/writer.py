"""Writing an ExpertState to the DuckDB index file, and reading a finished file back (for merging shards
and upgrading older schema versions).

The schema is explorer.index.schema's. Besides copying the state, writing derives what only the
final top contexts can tell: the token store (tokens inside some example's window, each once), the
top tokens per expert, an automatic label and, optionally, a sentence embedding per expert; and the
lookup orders the reader needs at scale (examples_by_location, expert_tokens by token, doc_text).
Per-expert tables are written group by group; the two re-ordered tables are collected over all
groups first (at the published scale about 1.5 GB of arrays for 50M top contexts, next to the
state's 2.5 GB). The file appears atomically: it is written beside the target and renamed at the end.
"""

import dataclasses
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from explorer.index import schema
from precompute.indexing.topk import ADDRESS_SHIFT, EMPTY_ADDRESS, ExpertState, sample_priority

TOP_TOKENS_PER_EXPERT = 16
LABEL_TOKENS = 3
EMBEDDED_CONTEXTS = 3  # top contexts that go into an expert's embedding text


def embedding_model_name() -> str:
    """The sentence-embedding model expert_embeddings are computed with (imported only when named)."""
    from explorer.index.embedding import EMBEDDING_MODEL

    return EMBEDDING_MODEL


@dataclass
class IndexContents:
    """What an index holds besides the state: facts, documents, a token source and the vocabulary."""

    meta: schema.IndexMeta  # write_index stamps schema_version, created and embedding_model
    documents: pd.DataFrame  # doc, source_id, domain, n_tokens
    tokens: pd.DataFrame  # doc, position, token_id: at least every token inside an example's window
    vocab: list[str]  # display text by token id


class TokenSource:
    """Sorted (doc, position) addresses of the available tokens, for vectorised lookups."""

    def __init__(self, tokens: pd.DataFrame):
        tokens = tokens.sort_values(["doc", "position"], kind="stable")
        self.doc = tokens["doc"].to_numpy(np.int64)
        self.position = tokens["position"].to_numpy(np.int64)
        self.token_id = tokens["token_id"].to_numpy(np.int64)
        self.address = (self.doc << ADDRESS_SHIFT) | self.position
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


def _bank_rows(bank, slots: slice, reorder_by_weight: bool) -> dict[str, np.ndarray]:
    """Valid entries of one bank for a range of slots, ordered by (slot, weight desc, address), with rank."""
    slot, column = (bank.address[slots] != EMPTY_ADDRESS).nonzero(as_tuple=True)
    rows = {name: tensor[slots][slot, column].cpu().numpy() for name, tensor in bank.tensors().items()}
    rows["slot"] = (slot + slots.start).cpu().numpy()
    if reorder_by_weight:  # samples are kept in priority order; show them by weight
        order = np.lexsort((rows["address"], -rows["weight"], rows["slot"]))
        rows = {name: value[order] for name, value in rows.items()}
    starts = np.searchsorted(rows["slot"], rows["slot"])
    rows["rank"] = np.arange(len(rows["slot"])) - starts
    return rows


def _display(text: str) -> str:
    """A token as a label word: trimmed; whitespace-only tokens made visible."""
    return text.strip() or text.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t")


def _top_tokens(top: dict, sample: dict, tokens: TokenSource) -> pd.DataFrame:
    """slot, token_id, count, mean_weight, rank: highlighted tokens over an expert's examples."""
    frame = pd.DataFrame(
        {
            "slot": np.concatenate([top["slot"], sample["slot"]]),
            "address": np.concatenate([top["address"], sample["address"]]),
            "weight": np.concatenate([top["weight"], sample["weight"]]),
        }
    ).drop_duplicates(["slot", "address"])
    frame["token_id"] = tokens.lookup(frame["address"].to_numpy())
    counted = (
        frame.groupby(["slot", "token_id"], sort=False)["weight"]
        .agg(["size", "mean"])
        .reset_index()
        .rename(columns={"size": "count", "mean": "mean_weight"})
    )
    counted = counted.sort_values(["slot", "count", "mean_weight", "token_id"], ascending=[True, False, False, True])
    counted["rank"] = counted.groupby("slot").cumcount()
    return counted[counted["rank"] < TOP_TOKENS_PER_EXPERT]


def _labels(top: dict, top_tokens: pd.DataFrame, tokens: TokenSource, vocab: list[str]) -> pd.Series:
    """Label per slot: its most shared bigram at the top contexts (if 3+ share it), then its top tokens."""
    texts = [_display(t) for t in vocab]
    best = top_tokens[top_tokens["rank"] < LABEL_TOKENS]
    if best.empty:
        return pd.Series(dtype=object)
    words = best.pivot(index="slot", columns="rank", values="token_id")  # rank 0, 1, 2 side by side
    label = pd.Series(np.array(texts, dtype=object)[words[0].to_numpy(int)], index=words.index)
    for rank in words.columns[1:]:
        present = words[rank].notna().to_numpy()
        label[present] += " · " + np.array(texts, dtype=object)[words[rank][present].to_numpy(int)]
    pairs = pd.DataFrame(
        {"slot": top["slot"], "previous": tokens.lookup(top["address"] - 1), "token": tokens.lookup(top["address"])}
    )
    pairs = pairs[pairs["previous"] >= 0].value_counts().reset_index()
    pairs = pairs[pairs["count"] >= 3].drop_duplicates("slot")  # value_counts sorts by count desc
    bigram = pd.Series(
        [f"«{vocab[p]}{vocab[t]}»".replace("\n", " ") for p, t in zip(pairs["previous"], pairs["token"], strict=True)],
        index=pairs["slot"],
    )
    return bigram.reindex(label.index).fillna("").str.cat(label, sep=" ").str.strip()


def _context_texts(top: dict, tokens: TokenSource, vocab: list[str], context: int) -> pd.Series:
    """Text of each slot's first EMBEDDED_CONTEXTS top contexts, joined."""
    chosen = top["rank"] < EMBEDDED_CONTEXTS
    offsets = np.arange(-context, context + 1)
    window_ids = tokens.lookup(top["address"][chosen][:, None] + offsets[None, :])
    texts = ["".join(vocab[t] for t in row if t >= 0) for row in window_ids]
    return pd.Series(texts).groupby(top["slot"][chosen]).agg(" … ".join)


def _list_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """[n, w] numpy -> arrow list array of n lists of w values."""
    n, width = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * width, type=pa.int64())
    return pa.LargeListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=value_type))


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")


def _insert(conn, table: schema.Table, columns: dict) -> None:
    incoming = pa.table({name: columns[name] for name in table.column_names})
    if incoming.num_rows:
        conn.register("incoming", incoming)
        conn.execute(f"INSERT INTO {table.name} SELECT * FROM incoming")
        conn.unregister("incoming")


def _write_examples_by_location(conn, places: dict[str, np.ndarray], experts_per_group: int) -> None:
    """Every top context again, ordered by (doc, position)."""
    order = np.argsort(places["address"], kind="stable")
    address, slot = places["address"][order], places["slot"][order]
    _insert(
        conn,
        schema.EXAMPLES_BY_LOCATION,
        {
            "doc": pa.array(address >> ADDRESS_SHIFT, pa.uint32()),
            "position": pa.array(address & ((1 << ADDRESS_SHIFT) - 1), pa.uint32()),
            "grp": pa.array(slot // experts_per_group, pa.uint8()),
            "expert": pa.array(slot % experts_per_group, pa.uint32()),
            "rank": pa.array(places["rank"][order], pa.uint16()),
            "weight": pa.array(places["weight"][order], pa.float32()),
        },
    )


def _write_expert_tokens(conn, rows: pd.DataFrame, experts_per_group: int) -> None:
    """Every expert's top tokens, ordered by (token, group, expert) for search by token."""
    slot = rows["slot"].to_numpy()
    order = np.lexsort((slot, rows["token_id"].to_numpy()))
    _insert(
        conn,
        schema.EXPERT_TOKENS,
        {
            "grp": pa.array(slot[order] // experts_per_group, pa.uint8()),
            "expert": pa.array(slot[order] % experts_per_group, pa.uint32()),
            "token_id": pa.array(rows["token_id"].to_numpy()[order], pa.uint32()),
            "count": pa.array(rows["count"].to_numpy()[order], pa.uint32()),
            "mean_weight": pa.array(rows["mean_weight"].to_numpy()[order], pa.float32()),
        },
    )


def _write_doc_text(conn, doc, position, token_id, places: dict[str, np.ndarray], vocab: list[str]) -> None:
    """Per stored document: its stored tokens' lowercased text (GAP between runs), their positions and
    character offsets, and its heaviest top context's weight (schema.DOC_TEXT)."""
    if not len(doc):
        return
    gap = schema.DOC_TEXT_GAP
    lowered = np.array([text.lower().replace(gap, "") for text in vocab], dtype=object)
    starts_doc = np.r_[True, doc[1:] != doc[:-1]]
    after_gap = ~starts_doc & np.r_[False, position[1:] != position[:-1] + 1]
    pieces = lowered[token_id]
    pieces[after_gap] = gap + pieces[after_gap]
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    first = np.flatnonzero(starts_doc)
    ends = np.cumsum(lengths)
    doc_start = np.repeat(ends[first] - lengths[first], np.diff(np.r_[first, len(doc)]))
    offsets = ends - lengths - doc_start + after_gap  # where each token's own text starts
    bounds = np.r_[first, len(doc)]
    texts = ["".join(pieces[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    place_doc = places["address"] >> ADDRESS_SHIFT
    heaviest = pd.Series(places["weight"]).groupby(place_doc).max()
    list_offsets = pa.array(bounds, pa.int64())
    _insert(
        conn,
        schema.DOC_TEXT,
        {
            "doc": pa.array(doc[first], pa.uint32()),
            "text": pa.array(texts, pa.string()),
            "positions": pa.LargeListArray.from_arrays(list_offsets, pa.array(position, pa.uint32())),
            "offsets": pa.LargeListArray.from_arrays(list_offsets, pa.array(offsets, pa.uint32())),
            "max_weight": pa.array(heaviest.reindex(doc[first]).fillna(0).to_numpy(), pa.float32()),
        },
    )


def write_index(
    path: str | Path, state: ExpertState, contents: IndexContents, embed: bool = False, progress=None
) -> Path:
    """Write the state and contents as a complete index file at `path` (atomically: temp file, rename).

    The meta facts are stamped here: the current schema version, the time, the embedding model (if any)."""
    path = Path(path)
    meta = dataclasses.replace(
        contents.meta,
        schema_version=schema.SCHEMA_VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        embedding_model=embedding_model_name() if embed else None,
    )
    E, n_groups, context = meta.moe_experts, meta.num_groups, meta.context
    experts_per_group = E * E
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tokens = TokenSource(contents.tokens)
    conn = duckdb.connect()
    conn.execute(f"ATTACH '{_sql_string(tmp)}' AS index_file (ROW_GROUP_SIZE {schema.ROW_GROUP_SIZE})")
    conn.execute("USE index_file")
    try:
        for statement in schema.create_statements():
            conn.execute(statement)
        conn.executemany("INSERT INTO meta VALUES (?, ?)", schema.meta_rows(meta))
        _insert(
            conn,
            schema.VOCAB,
            {
                "token_id": pa.array(np.arange(len(contents.vocab)), pa.uint32()),
                "text": pa.array(contents.vocab, pa.string()),
            },
        )
        seen = state.domain_tokens.numpy() > 0  # a domain met only past --max-tokens contributed nothing
        _insert(
            conn,
            schema.DOMAINS,
            {
                "domain": pa.array(np.array(state.domains, dtype=object)[seen], pa.string()),
                "n_tokens": pa.array(state.domain_tokens.numpy()[seen], pa.uint64()),
            },
        )
        top_places, top_token_rows = [], []  # written after the loop, in their own orders
        active_count = state.active_count  # derived from the histogram: summed once, not per use
        for group in range(n_groups):
            slots = slice(group * experts_per_group, (group + 1) * experts_per_group)
            top = _bank_rows(state.top, slots, reorder_by_weight=False)
            sample = _bank_rows(state.sample, slots, reorder_by_weight=True)
            for rows in (top, sample):
                tokens.mark_windows(rows["address"], context)
            active = (active_count[slots] > 0).nonzero().squeeze(1).cpu().numpy()
            slot = active + group * experts_per_group
            top_tokens = _top_tokens(top, sample, tokens)
            labels = _labels(top, top_tokens, tokens, contents.vocab).reindex(slot).fillna("")
            expert = slot % experts_per_group
            if embed and len(slot):
                from explorer.index.embedding import embed_texts

                texts = _context_texts(top, tokens, contents.vocab, context).reindex(slot).fillna("")
                vectors = embed_texts([f"{label} | {text}" for label, text in zip(labels, texts, strict=True)])
                _insert(
                    conn,
                    schema.EXPERT_EMBEDDINGS,
                    {
                        "grp": pa.array(np.full(len(slot), group), pa.uint8()),
                        "expert": pa.array(expert, pa.uint32()),
                        "embedding": pa.FixedSizeListArray.from_arrays(
                            pa.array(vectors.reshape(-1)), schema.EMBEDDING_DIM
                        ),
                    },
                )
            _insert(
                conn,
                schema.EXPERTS,
                {
                    "grp": pa.array(np.full(len(slot), group), pa.uint8()),
                    "expert": pa.array(expert, pa.uint32()),
                    "i": pa.array(expert // E, pa.uint16()),
                    "j": pa.array(expert % E, pa.uint16()),
                    "active_count": pa.array(active_count[slot].cpu().numpy(), pa.uint64()),
                    "weight_sum": pa.array(state.weight_sum[slot].cpu().numpy(), pa.float64()),
                    "weight_max": pa.array(state.weight_max[slot].cpu().numpy(), pa.float32()),
                    "histogram": _list_array(state.histogram[slot].cpu().numpy(), pa.uint32()),
                    "label": pa.array(labels.to_numpy(), pa.string()),
                },
            )
            domain_sums = state.domain_weight_sum[slots].cpu().numpy()
            d_slot, d_column = domain_sums.nonzero()
            _insert(
                conn,
                schema.EXPERT_DOMAINS,
                {
                    "grp": pa.array(np.full(len(d_slot), group), pa.uint8()),
                    "expert": pa.array(d_slot, pa.uint32()),
                    "domain": pa.array(
                        np.array(state.domains, dtype=object)[d_column] if len(d_slot) else [], pa.string()
                    ),
                    "weight_sum": pa.array(domain_sums[d_slot, d_column], pa.float64()),
                },
            )
            for kind, rows in (("top", top), ("sample", sample)):
                doc, position = rows["address"] >> ADDRESS_SHIFT, rows["address"] & ((1 << ADDRESS_SHIFT) - 1)
                n = len(doc)
                _insert(
                    conn,
                    schema.EXAMPLES,
                    {
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
                    },
                )
            top_places.append({name: top[name] for name in ("address", "slot", "rank", "weight")})
            top_token_rows.append(top_tokens[["token_id", "slot", "count", "mean_weight"]])
            if progress is not None:
                progress(group + 1, n_groups)
        places = {name: np.concatenate([part[name] for part in top_places]) for name in top_places[0]}
        del top_places
        _write_examples_by_location(conn, places, experts_per_group)
        _write_expert_tokens(conn, pd.concat(top_token_rows, ignore_index=True), experts_per_group)
        del top_token_rows
        keep = tokens.needed
        _write_doc_text(conn, tokens.doc[keep], tokens.position[keep], tokens.token_id[keep], places, contents.vocab)
        _insert(
            conn,
            schema.TOKENS,
            {
                "doc": pa.array(tokens.doc[keep], pa.uint32()),
                "position": pa.array(tokens.position[keep], pa.uint32()),
                "token_id": pa.array(tokens.token_id[keep], pa.uint32()),
            },
        )
        needed_docs = np.unique(tokens.doc[keep])
        documents = contents.documents[contents.documents["doc"].isin(needed_docs)].sort_values("doc")
        _insert(
            conn,
            schema.DOCUMENTS,
            {
                "doc": pa.array(documents["doc"].to_numpy(), pa.uint32()),
                "source_id": pa.array(documents["source_id"].to_numpy(), pa.string()),
                "domain": pa.array(documents["domain"].to_numpy(), pa.string()),
                "n_tokens": pa.array(documents["n_tokens"].to_numpy(), pa.uint32()),
            },
        )
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    os.replace(tmp, path)
    return path


def read_index_state(
    path: str | Path, device="cpu", versions=(schema.SCHEMA_VERSION,)
) -> tuple[ExpertState, IndexContents]:
    """A finished index back as (state, contents): exactly what write_index was given, for merging and
    upgrading (`versions`: the schema versions accepted, among schema.STATE_READABLE_VERSIONS)."""
    from explorer.index.reader import ExpertIndex

    with ExpertIndex(path, versions) as index, index.cursor() as conn:
        meta = index.meta()
        experts_per_group = meta.experts_per_group
        state = ExpertState(
            meta.num_groups * experts_per_group,
            meta.top_k,
            meta.samples,
            2 * meta.context + 1,
            torch.tensor(meta.histogram_edges, dtype=torch.float64),
            device=device,
        )
        state.tokens_processed = meta.tokens_processed
        for domain, n_tokens in conn.execute("SELECT domain, n_tokens FROM domains ORDER BY domain").fetchall():
            column = state.domain_index(domain)
            state.domain_tokens[column] = n_tokens
        experts = conn.execute("SELECT grp, expert, weight_sum, weight_max, histogram FROM experts").df()
        slot = torch.from_numpy(experts["grp"].to_numpy(np.int64) * experts_per_group + experts["expert"].to_numpy())
        state.weight_sum[slot] = torch.tensor(experts["weight_sum"].to_numpy(np.float64))
        state.weight_max[slot] = torch.tensor(experts["weight_max"].to_numpy(np.float32))
        if len(experts):
            state.histogram[slot] = torch.from_numpy(np.stack(experts["histogram"].to_numpy()).astype(np.int32))
        for domain, group, expert, weight_sum in conn.execute(
            "SELECT domain, grp, expert, weight_sum FROM expert_domains"
        ).fetchall():
            state.domain_weight_sum[group * experts_per_group + expert, state.domain_index(domain)] = weight_sum
        for kind, bank in (("top", state.top), ("sample", state.sample)):
            rows = conn.execute(
                "SELECT grp, expert, rank, doc, position, weight, window_hash, window_max, window_weights"
                " FROM examples WHERE kind = ? ORDER BY grp, expert, rank",
                [kind],
            ).df()
            if not len(rows):
                continue
            row_slot = torch.from_numpy(rows["grp"].to_numpy(np.int64) * experts_per_group + rows["expert"].to_numpy())
            address = torch.from_numpy((rows["doc"].to_numpy(np.int64) << ADDRESS_SHIFT) | rows["position"].to_numpy())
            key = (
                torch.tensor(rows["window_hash"].to_numpy(np.int64))
                if kind == "top"
                else sample_priority(address, row_slot)
            )
            if kind == "sample":  # the bank keeps samples in priority order
                order = torch.from_numpy(np.lexsort((address.numpy(), key.numpy(), row_slot.numpy())))
                row_slot, address, key, rows = row_slot[order], address[order], key[order], rows.iloc[order.numpy()]
            column = torch.arange(len(rows)) - torch.searchsorted(row_slot, row_slot)
            bank.weight[row_slot, column] = torch.tensor(rows["weight"].to_numpy(np.float32))
            bank.address[row_slot, column] = address
            bank.key[row_slot, column] = key
            bank.window_max[row_slot, column] = torch.tensor(rows["window_max"].to_numpy(np.float32))
            window = np.stack(rows["window_weights"].to_numpy()).astype(np.uint8)
            bank.window[row_slot, column] = torch.from_numpy(window)
            bank.refresh_bar()
        contents = IndexContents(
            meta=meta,
            documents=conn.execute("SELECT doc, source_id, domain, n_tokens FROM documents").df(),
            tokens=conn.execute("SELECT doc, position, token_id FROM tokens").df(),
            vocab=[text for (text,) in conn.execute("SELECT text FROM vocab ORDER BY token_id").fetchall()],
        )
    return state, contents
