"""The expert index's DuckDB schema: one source of truth for the writer (precompute) and the reader.

Every table and column carries its help text; `create_statements()` builds the DDL from it and
`schema_markdown()` the documentation. Bump SCHEMA_VERSION on any change a reader would notice:
readers refuse other versions with a message saying how to rebuild.

Conventions: `grp` is the 0-based routing group (the UI shows G{grp+1}); `expert` is the flat id
i * E + j inside the group; `doc` is the document's index in the corpus (stable across shards);
`position` is a token's 0-based position in its document. Experts never active (no weight >=
min_weight anywhere) have no rows. Weights below `min_weight` are treated as 0 everywhere.
"""

import json
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_args, get_type_hints

SCHEMA_VERSION = 3
# Rows per row group (DuckDB's default is 122,880). Lookups read whole row groups of the columns they touch, so
# an expert page or a text search reads about 15x less with small ones; the file grows by a few percent.
ROW_GROUP_SIZE = 8_192
# Versions whose accumulated state (experts, expert_domains, examples, documents, tokens, vocab, domains, meta)
# this code reads: `python -m precompute upgrade` rewrites such a file in the current version. Versions 1 and 2
# lack vocab.corpus_count, which the upgrade recounts from the corpus the index was built from (no model run).
STATE_READABLE_VERSIONS = (1, 2, 3)
COUNTED_TOKENS_VERSION = 3  # the first version whose vocab holds corpus_count
# meta.tie_break: how top contexts of equal weight were chosen
PLACE_KEY_TIES = "place key"
CORPUS_ORDER_TIES = "corpus order"
DOC_TEXT_GAP = "\x00"  # in doc_text, between runs of stored tokens that are not adjacent in the document
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    help: str


@dataclass(frozen=True)
class Table:
    name: str
    help: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...] = ()  # the writer inserts rows in this order (zone maps make lookups cheap)

    def ddl(self) -> str:
        columns = ",\n  ".join(f"{c.name} {c.sql_type}" for c in self.columns)
        return f"CREATE TABLE {self.name} (\n  {columns}\n)"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


META = Table(
    "meta",
    "Key/value facts about the index; values are JSON. Keys: the fields of IndexMeta.",
    (
        Column("key", "VARCHAR PRIMARY KEY", "name of the fact"),
        Column("value", "VARCHAR", "JSON-encoded value"),
    ),
)


def _fact(help_text: str, **default) -> Any:
    """An IndexMeta field: one `meta` key, with its help (shown by `python -m precompute schema`)."""
    return field(metadata={"help": help_text}, **default)


@dataclass(frozen=True, kw_only=True)
class IndexMeta:
    """The `meta` table, typed: one field per key, stored as JSON. The writer fills the three stamped
    fields (schema_version, created, embedding_model) itself when it writes the file."""

    schema_version: int = _fact("SCHEMA_VERSION of the writer", default=SCHEMA_VERSION)
    created: str = _fact("ISO date and time the file was written", default="")
    model: str = _fact("--model as given (folder or hub id)")
    config_hash: str = _fact("sha256 of the model config and every setting that shapes the index")
    tokenizer: str = _fact("tokenizer class and vocabulary size")
    corpus: str = _fact("corpus description (path or dataset name, split)")
    shards: list[str] = _fact("the 'k/n' shards this file covers ('0/1' for a whole run)")
    documents_processed: int = _fact("documents read")
    tokens_processed: int = _fact("tokens the model ran on (densities and means divide by this)")
    seq_len: int = _fact("tokens per forward window; documents longer than this are cut into windows")
    top_k: int = _fact("top contexts kept per expert (K)")
    tie_break: str = _fact(
        f"which of the contexts of equal weight are kept as top contexts: '{PLACE_KEY_TIES}' (a uniform sample of"
        f" the equals, by a hash of their place) or '{CORPUS_ORDER_TIES}' (the first ones in the corpus: files"
        " first written before schema 3, whose other equals are gone)",
        default=CORPUS_ORDER_TIES,
    )
    samples: int = _fact("uniformly sampled activations kept per expert (for quantile examples)")
    context: int = _fact("tokens kept on each side of an example's position")
    min_weight: float = _fact("an expert is active at a token when its weight >= this (density threshold)")
    histogram_edges: list[float] = _fact("log-spaced bin edges of experts.histogram (last bin includes the top edge)")
    num_layers: int = _fact("decoder layers")
    moe_groups: int = _fact("layers per routing group")
    num_groups: int = _fact("routing groups")
    moe_experts: int = _fact("E, experts per side (E*E experts per group)")
    moe_heads: int = _fact("H, router heads")
    moe_decompose: str = _fact("vertical (VD) or horizontal (HD)")
    dtype: str = _fact("dtype the model ran in")
    embedding_model: str | None = _fact("sentence-transformers model of expert_embeddings (null: none)", default=None)
    scores_for: str | None = _fact(
        "which experts expert_scores holds: 'all' or the --scores-for of the runs that wrote it (null: none scored)",
        default=None,
    )
    scores_model: str | None = _fact(
        "the model expert_scores.causal_effect was measured with (null: none)", default=None
    )
    scores_dtype: str | None = _fact("dtype of that model's runs (null: none)", default=None)
    coherence_baseline: float | None = _fact(
        "mean pairwise cosine similarity of the sentence embeddings of top_k top-context windows drawn uniformly"
        " from the whole index (seeded by coherence_seed); expert_scores.coherence is measured against it"
        " (null: no coherence computed)",
        default=None,
    )
    coherence_seed: int | None = _fact("seed of the draw behind coherence_baseline (null: none)", default=None)

    @property
    def experts_per_group(self) -> int:
        return self.moe_experts**2


def meta_rows(meta: IndexMeta) -> list[tuple[str, str]]:
    """The `meta` table's rows for `meta`: (key, JSON value), one per field, in field order."""
    return [(spec.name, json.dumps(getattr(meta, spec.name))) for spec in fields(IndexMeta)]


def meta_row(name: str, value) -> tuple[str, str]:
    """One `meta` row, (key, JSON value), for a field of IndexMeta (KeyError for any other name)."""
    if name not in {spec.name for spec in fields(IndexMeta)}:
        raise KeyError(f"{name} is no IndexMeta field")
    return name, json.dumps(value)


def read_meta(rows: Iterable[tuple[str, str]]) -> IndexMeta:
    """IndexMeta from the `meta` table's (key, JSON value) rows; keys it does not know are ignored, keys with a
    default that the file lacks (added after it was written) take that default, which says what older files did.

    Raises ValueError naming the missing keys of a file that lacks some without a default."""
    values = {key: json.loads(value) for key, value in rows}
    missing = [spec.name for spec in fields(IndexMeta) if spec.name not in values and spec.default is MISSING]
    if missing:
        raise ValueError(f"meta lacks {', '.join(missing)}")
    return IndexMeta(**{spec.name: values[spec.name] for spec in fields(IndexMeta) if spec.name in values})


def meta_keys_markdown() -> list[str]:
    """One Markdown line per meta key: its type and help."""
    hints = get_type_hints(IndexMeta)
    return [f"- `{spec.name}` ({_type_name(hints[spec.name])}): {spec.metadata['help']}" for spec in fields(IndexMeta)]


def _type_name(kind) -> str:
    return str(kind) if get_args(kind) else kind.__name__


DOCUMENTS = Table(
    "documents",
    "Documents that hold at least one stored example.",
    (
        Column("doc", "UINTEGER PRIMARY KEY", "index of the document in the corpus, counted over all shards"),
        Column("source_id", "VARCHAR", "the corpus' own id of the document (its `id` field, or file:line)"),
        Column("domain", "VARCHAR", "the document's domain, NULL when the corpus has none"),
        Column("n_tokens", "UINTEGER", "length of the document in tokens"),
    ),
    order_by=("doc",),
)

TOKENS = Table(
    "tokens",
    "Token store: every token inside some example's window, stored once, addressed by (doc, position).",
    (
        Column("doc", "UINTEGER", "documents.doc"),
        Column("position", "UINTEGER", "0-based position in the document"),
        Column("token_id", "UINTEGER", "vocab.token_id"),
    ),
    order_by=("doc", "position"),
)

VOCAB = Table(
    "vocab",
    "Display text of every token id (the tokenizer's decode of that one id), and how often the corpus holds it.",
    (
        Column("token_id", "UINTEGER PRIMARY KEY", "token id"),
        Column("text", "VARCHAR", "decoded text of the token alone"),
        Column(
            "corpus_count",
            "UBIGINT",
            "times the model ran on this token (every token of every processed window; the counts sum to"
            " meta.tokens_processed): the background labels measure an expert's tokens against",
        ),
    ),
    order_by=("token_id",),
)

DOMAINS = Table(
    "domains",
    "Corpus domains and how many tokens each contributed (denominators of per-domain means).",
    (
        Column("domain", "VARCHAR PRIMARY KEY", "domain name"),
        Column("n_tokens", "UBIGINT", "tokens processed from documents of this domain"),
    ),
)

EXPERTS = Table(
    "experts",
    "One row per expert that was active at least once: activation statistics and label.",
    (
        Column("grp", "UTINYINT", "routing group, 0-based (shown as G{grp+1})"),
        Column("expert", "UINTEGER", "flat id i * E + j"),
        Column("i", "USMALLINT", "row index i (first routing side)"),
        Column("j", "USMALLINT", "column index j (second routing side)"),
        Column("active_count", "UBIGINT", "tokens where the weight >= min_weight"),
        Column("weight_sum", "DOUBLE", "sum of the expert's weights >= min_weight over all tokens"),
        Column("weight_max", "REAL", "largest weight seen"),
        Column("histogram", "UINTEGER[]", "counts of active weights in the log bins of meta.histogram_edges"),
        Column(
            "label",
            "VARCHAR",
            "automatic label (explorer.index.labels): 'domain: ' when the domain rule calls the expert specialised,"
            " then the highlighted tokens that most distinguish its examples from the corpus, joined by ' · ';"
            " whitespace and control characters drawn as visible symbols",
        ),
    ),
    order_by=("grp", "expert"),
)

EXPERT_EMBEDDINGS = Table(
    "expert_embeddings",
    "Sentence embedding of each active expert's label + top contexts, for semantic search; empty when built"
    " with --no-embeddings (a table of its own: a NULL fixed-size array still costs its full width).",
    (
        Column("grp", "UTINYINT", "routing group, 0-based"),
        Column("expert", "UINTEGER", "flat id"),
        Column("embedding", f"FLOAT[{EMBEDDING_DIM}]", "unit-length embedding (cosine = dot product)"),
    ),
    order_by=("grp", "expert"),
)

EXPERT_DOMAINS = Table(
    "expert_domains",
    "Per expert and domain, the sum of its weights (>= min_weight) on that domain's tokens; zero sums omitted."
    " Mean weight on a domain = weight_sum / domains.n_tokens.",
    (
        Column("grp", "UTINYINT", "routing group, 0-based"),
        Column("expert", "UINTEGER", "flat id"),
        Column("domain", "VARCHAR", "domains.domain"),
        Column("weight_sum", "DOUBLE", "sum of weights on the domain's tokens"),
    ),
    order_by=("grp", "expert"),
)

EXAMPLES = Table(
    "examples",
    "Pointers to contexts, never copies: per expert its top-K contexts (kind 'top', deduplicated by window"
    " text) and a uniform sample of its activations (kind 'sample', bottom-k by a hash of (doc, position,"
    " expert); may overlap the top). Window = positions position-context .. position+context; its tokens"
    " come from `tokens`.",
    (
        Column("grp", "UTINYINT", "routing group, 0-based"),
        Column("expert", "UINTEGER", "flat id"),
        Column("kind", "VARCHAR", "'top' or 'sample'"),
        Column(
            "rank",
            "USMALLINT",
            "0-based rank by weight within (grp, expert, kind); top contexts of equal weight: each document's"
            " first before any document's second, then by a hash of the place",
        ),
        Column("doc", "UINTEGER", "documents.doc"),
        Column("position", "UINTEGER", "position of the highlighted token"),
        Column("weight", "REAL", "the expert's weight at (doc, position)"),
        Column(
            "window_hash",
            "BIGINT",
            "top: hash of the window's token ids (equal hash = duplicate context); sample: NULL",
        ),
        Column("window_max", "REAL", "largest of the expert's weights over the window"),
        Column(
            "window_weights",
            "UTINYINT[]",
            "the expert's weight at each of the 2*context+1 window positions, as round(255 * w / window_max);"
            " 0 outside the document and outside the forward window the example was computed in",
        ),
    ),
    order_by=("grp", "expert"),
)

EXPERT_TOKENS = Table(
    "expert_tokens",
    "Top activating tokens per expert (at most 16), counted over its stored examples (top contexts and samples,"
    " each place once). Ordered by token for search by token; an expert's own list is recounted from its"
    " examples by the reader.",
    (
        Column("grp", "UTINYINT", "routing group, 0-based"),
        Column("expert", "UINTEGER", "flat id"),
        Column("token_id", "UINTEGER", "vocab.token_id of the highlighted token"),
        Column("count", "UINTEGER", "examples of this expert highlighting that token"),
        Column("mean_weight", "REAL", "mean weight over those examples"),
    ),
    order_by=("token_id", "grp", "expert"),
)

EXAMPLES_BY_LOCATION = Table(
    "examples_by_location",
    "The top contexts of `examples` again, ordered by place in the corpus: which experts have a top context"
    " at or near a (doc, position). Text search joins on it.",
    (
        Column("doc", "UINTEGER", "documents.doc"),
        Column("position", "UINTEGER", "position of the highlighted token"),
        Column("grp", "UTINYINT", "routing group, 0-based"),
        Column("expert", "UINTEGER", "flat id"),
        Column("rank", "USMALLINT", "examples.rank (kind 'top')"),
        Column("weight", "REAL", "examples.weight"),
    ),
    order_by=("doc", "position"),
)

DOC_TEXT = Table(
    "doc_text",
    "Searchable text of every document in the token store: the lowercased text of its stored tokens"
    " (each token lowercased alone), in position order, with DOC_TEXT_GAP (U+0000) where positions skip;"
    " a substring found here maps back to positions through `offsets`.",
    (
        Column("doc", "UINTEGER PRIMARY KEY", "documents.doc"),
        Column("text", "VARCHAR", "lowercased text of the stored tokens, runs separated by U+0000"),
        Column("positions", "UINTEGER[]", "position of each stored token, in order"),
        Column("offsets", "UINTEGER[]", "character offset in `text` where each stored token starts"),
        Column("max_weight", "REAL", "weight of the heaviest top context in the document (search order)"),
    ),
    order_by=("doc",),
)

TEXT_POSTINGS = Table(
    "text_postings",
    "Token postings of the token store, for text search (explorer.index.postings): a row per stored token whose"
    " doc_text piece is not empty, with the token whose piece follows it there. Files written before it existed"
    " lack it (text search then reads every document's text; `python -m precompute upgrade` adds it).",
    (
        Column("token_id", "UINTEGER", "vocab.token_id"),
        Column(
            "next_id",
            "UINTEGER",
            "the token whose piece comes right after this one in doc_text, 4294967295 when a gap or the end follows",
        ),
        Column("next_step", "UINTEGER", "positions from this token to next_id's (0 with 4294967295)"),
        Column("doc", "UINTEGER", "documents.doc"),
        Column("position", "UINTEGER", "position of the token"),
        Column(
            "cover_max",
            "REAL",
            "weight of the heaviest top context whose window holds this token (0: none): text search visits the"
            " places of a phrase in this order, and stops once no place left can give a heavier context",
        ),
    ),
    order_by=("token_id", "next_id", "doc", "position"),
)

EXPERT_SCORES = Table(
    "expert_scores",
    "Scores of each scored expert, measured on its top contexts once the top-K is final (precompute.indexing.scores;"
    " `python -m precompute scores INDEX` adds them to a file). An expert without a row is not scored (see"
    " meta.scores_for). A context's window here is its tokens at positions max(0, position - context) .. position.",
    (
        Column("grp", "UTINYINT", "routing group, 0-based"),
        Column("expert", "UINTEGER", "flat id"),
        Column("contexts_scored", "USMALLINT", "top contexts the scores are measured on (all the expert has, <= K)"),
        Column(
            "contexts_active",
            "USMALLINT",
            "of those, the windows where the expert's weight is non-zero at some token when the model runs on the"
            " window alone; in the others switching it off changes nothing (KL exactly 0)",
        ),
        Column(
            "causal_effect",
            "DOUBLE",
            "mean over its top contexts of KL(plain || switched off), in nats, of the next-token distribution at the"
            " window's last token, the model run on the window alone, plain and with the expert switched off in"
            " every layer of its group",
        ),
        Column(
            "coherence",
            "REAL",
            "mean pairwise cosine similarity of the sentence embeddings of its top contexts' window texts (positions"
            " position-context .. position+context, as shown) minus meta.coherence_baseline; NULL when not computed"
            " or fewer than two contexts",
        ),
    ),
    order_by=("grp", "expert"),
)

TABLES = (
    META,
    DOCUMENTS,
    TOKENS,
    DOC_TEXT,
    TEXT_POSTINGS,
    VOCAB,
    DOMAINS,
    EXPERTS,
    EXPERT_EMBEDDINGS,
    EXPERT_DOMAINS,
    EXAMPLES,
    EXAMPLES_BY_LOCATION,
    EXPERT_TOKENS,
    EXPERT_SCORES,
)


def create_statements() -> list[str]:
    return [table.ddl() for table in TABLES]


def schema_markdown() -> str:
    """The schema as Markdown, for the README and `python -m precompute schema`."""
    lines = [f"Expert index schema, version {SCHEMA_VERSION} (DuckDB).", "", __doc__.split("\n\n", 1)[1].strip(), ""]
    for table in TABLES:
        order = f" Rows are stored ordered by ({', '.join(table.order_by)})." if table.order_by else ""
        lines += [f"### `{table.name}`", table.help + order, "", "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| {c.name} | {c.sql_type} | {c.help} |" for c in table.columns]
        lines.append("")
    lines += ["`meta` keys (IndexMeta):", ""] + meta_keys_markdown()
    return "\n".join(lines) + "\n"
