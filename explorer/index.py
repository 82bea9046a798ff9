"""The read API of the expert index: the only code that reads the DuckDB file (schema: explorer.index_schema).

    index = ExpertIndex("assets/monet-embedded.duckdb")
    index.stats(4, 147040); index.top_examples(4, 147040, k=10); index.search_text("San Francisco")

Groups are 0-based here (the UI writes G{group+1}); `expert` is the flat id i*E + j. The file is
opened read-only; every call runs on its own cursor, so one ExpertIndex serves many threads.
Results are dataclasses or pandas DataFrames; every query is parameterised, with parameters cast to
their column's type (an uncast parameter makes DuckDB cast the column instead and scan every row).
"""

import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from explorer import index_schema as schema
from explorer.routing import ExpertRef

BUILD_HINT = "build it with `python -m precompute index --out {path}` (see README, 'Expert index')"


class IndexUnavailable(RuntimeError):
    """The index file is missing, unreadable, of another schema version, or lacks what was asked."""


@dataclass(frozen=True)
class IndexMeta:
    model: str
    corpus: str
    tokens_processed: int
    top_k: int
    context: int
    min_weight: float
    num_groups: int
    moe_groups: int
    moe_experts: int
    moe_heads: int
    moe_decompose: str
    schema_version: int
    created: str
    facts: dict  # every meta key (see index_schema.META_KEYS)


@dataclass(frozen=True)
class ExpertStats:
    group: int
    expert: int
    i: int
    j: int
    name: str  # "G{group+1}/{expert}"
    active_count: int  # tokens where weight >= min_weight
    density: float  # active_count / tokens processed
    mean_weight: float  # over all tokens (weights below min_weight count as 0)
    mean_active_weight: float  # over active tokens
    max_weight: float
    label: str


@dataclass(frozen=True)
class Example:
    group: int
    expert: int
    kind: str  # "top" or "sample"
    rank: int
    doc: int
    position: int
    weight: float
    domain: str | None
    source_id: str | None
    token_ids: list[int]
    tokens: list[str]  # display text of each window token
    weights: list[float]  # this expert's weight on each window token (approximate: 8-bit)
    highlight: int  # index of the example's own token in `tokens`
    quantile: float | None  # samples: estimated share of the expert's activations at least this heavy

    @property
    def text(self) -> str:
        return "".join(self.tokens)


_NAME_SQL = "'G' || (grp + 1) || '/' || expert"  # the paper's name, as str(explorer.routing.ExpertRef)


class ExpertIndex:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        hint = BUILD_HINT.format(path=self.path)
        if not self.path.is_file():
            raise IndexUnavailable(f"No expert index at {self.path}: {hint}.")
        try:
            self._conn = duckdb.connect(str(self.path), read_only=True)
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
            self._vocab = [
                text for (text,) in self._conn.execute("SELECT text FROM vocab ORDER BY token_id").fetchall()
            ]
        except duckdb.Error as error:
            raise IndexUnavailable(
                f"{self.path} is not a readable expert index ({error}); rebuild it: {hint}."
            ) from None
        self._meta = {key: json.loads(value) for key, value in rows}
        version = self._meta.get("schema_version")
        if version != schema.SCHEMA_VERSION:
            self._conn.close()
            raise IndexUnavailable(
                f"{self.path} has index schema version {version}, this code reads version {schema.SCHEMA_VERSION};"
                f" rebuild it: {hint}."
            )
        self.experts_per_side = self._meta["moe_experts"]
        self.tokens_processed = max(1, self._meta["tokens_processed"])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ExpertIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def cursor(self):
        """A private cursor for one call (DuckDB connections must not be shared between threads)."""
        conn = self._conn.cursor()
        try:
            yield conn
        finally:
            conn.close()

    def _df(self, sql: str, params: list | dict | None = None) -> pd.DataFrame:
        with self.cursor() as conn:
            return conn.execute(sql, params or []).df()

    # -- facts ------------------------------------------------------------------------------------
    def meta_dict(self) -> dict:
        return dict(self._meta)

    def meta(self) -> IndexMeta:
        m = self._meta
        fields = {f: m[f] for f in IndexMeta.__dataclass_fields__ if f != "facts"}
        return IndexMeta(**fields, facts=dict(m))

    def token_text(self, token_id: int) -> str:
        return self._vocab[token_id]

    # -- one expert ---------------------------------------------------------------------------------
    def stats(self, group: int, expert: int) -> ExpertStats:
        """Statistics of one expert; an expert never active gets zeros and an empty label."""
        frame = self._experts(
            "grp = $group::UTINYINT AND expert = $expert::UINTEGER", {"group": group, "expert": expert}
        )
        if frame.empty:
            i, j = divmod(expert, self.experts_per_side)
            name = str(ExpertRef(group, i, j, self.experts_per_side))
            return ExpertStats(group, expert, i, j, name, 0, 0.0, 0.0, 0.0, 0.0, "")
        row = frame.iloc[0]
        return ExpertStats(
            group,
            expert,
            int(row.i),
            int(row.j),
            row["name"],
            int(row.active_count),
            float(row.density),
            float(row.mean_weight),
            float(row.mean_active_weight),
            float(row.weight_max),
            row.label,
        )

    def _examples(self, group: int, expert: int, kind: str) -> list[Example]:
        context = self._meta["context"]
        frame = self._df(
            """
            SELECT e.rank, e.doc, e.position, e.weight, e.window_max, e.window_weights, d.domain, d.source_id
            FROM examples e LEFT JOIN documents d ON d.doc = e.doc
            WHERE e.grp = $group::UTINYINT AND e.expert = $expert::UINTEGER AND e.kind = $kind
            ORDER BY e.rank
            """,
            {"group": group, "expert": expert, "kind": kind},
        )
        # The tokens of those documents in one query (list_contains prunes by the table's doc order);
        # per window, the positions present are the window clipped to its document.
        stored = self._df(
            "SELECT doc, position, token_id FROM tokens WHERE list_contains($docs, doc)",
            {"docs": sorted(set(frame["doc"].tolist()))},
        )
        token_at = dict(zip(zip(stored["doc"], stored["position"], strict=True), stored["token_id"], strict=True))
        examples = []
        for row in frame.itertuples():
            window = range(row.position - context, row.position + context + 1)
            present = [(offset, token_at[row.doc, p]) for offset, p in enumerate(window) if (row.doc, p) in token_at]
            scale = row.window_max / 255
            token_ids = [int(t) for _, t in present]
            examples.append(
                Example(
                    group,
                    expert,
                    kind,
                    int(row.rank),
                    int(row.doc),
                    int(row.position),
                    float(row.weight),
                    None if pd.isna(row.domain) else row.domain,
                    None if pd.isna(row.source_id) else row.source_id,
                    token_ids,
                    [self._vocab[t] for t in token_ids],
                    [float(row.window_weights[offset]) * scale for offset, _ in present],
                    [offset for offset, _ in present].index(context),
                    None,
                )
            )
        return examples

    def top_examples(self, group: int, expert: int, k: int | None = None) -> list[Example]:
        """The expert's top contexts by weight (deduplicated by window text), best first."""
        return self._examples(group, expert, "top")[:k]

    def quantile_examples(self, group: int, expert: int, n: int = 5) -> list[Example]:
        """About n examples below the top, spread over the expert's activations from heavy to light.

        Drawn from a uniform sample of its activations; `quantile` estimates the share of all its
        activations that weigh at least as much.
        """
        sample = self._examples(group, expert, "sample")
        top = {(e.doc, e.position) for e in self._examples(group, expert, "top")}
        with_quantile = [replace(e, quantile=(e.rank + 0.5) / len(sample)) for e in sample]
        below_top = [e for e in with_quantile if (e.doc, e.position) not in top]
        if len(below_top) <= n:
            return below_top
        picks = np.linspace(0, len(below_top) - 1, n).round().astype(int)
        return [below_top[p] for p in sorted(set(picks))]

    def histogram(self, group: int, expert: int) -> pd.DataFrame:
        """Counts of the expert's active weights per log-spaced bin: columns low, high, count."""
        edges = self._meta["histogram_edges"]
        frame = self._df(
            "SELECT histogram FROM experts WHERE grp = ?::UTINYINT AND expert = ?::UINTEGER", [group, expert]
        )
        counts = list(frame["histogram"].iloc[0]) if len(frame) else [0] * (len(edges) - 1)
        return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": counts})

    def top_tokens(self, group: int, expert: int, n: int = 10) -> pd.DataFrame:
        """Tokens the expert most often highlights in its examples: token_id, token, count, mean_weight."""
        frame = self._df(
            "SELECT token_id, count, mean_weight FROM expert_tokens WHERE grp = ?::UTINYINT AND expert = ?::UINTEGER"
            " ORDER BY count DESC, mean_weight DESC, token_id LIMIT ?",
            [group, expert, n],
        )
        frame.insert(1, "token", [self._vocab[t] for t in frame["token_id"]])
        return frame

    def domain_means(self, group: int, expert: int) -> pd.DataFrame:
        """Mean weight on each domain's tokens (the paper's domain statistic): domain, mean_weight, n_tokens."""
        return self._df(
            """
            SELECT d.domain, coalesce(x.weight_sum, 0) / greatest(d.n_tokens, 1) AS mean_weight, d.n_tokens
            FROM domains d LEFT JOIN expert_domains x
                 ON x.domain = d.domain AND x.grp = ?::UTINYINT AND x.expert = ?::UINTEGER
            ORDER BY mean_weight DESC, d.domain
            """,
            [group, expert],
        )

    # -- many experts -------------------------------------------------------------------------------
    def _experts(self, where: str, params: dict, order: str = "grp, expert", limit: int | None = None) -> pd.DataFrame:
        """Rows of `experts` with derived columns; `where` uses $named parameters from `params`."""
        return self._df(
            f"""
            SELECT grp, expert, i, j, {_NAME_SQL} AS name, active_count,
                   active_count / $tokens AS density, weight_sum / $tokens AS mean_weight,
                   weight_sum / greatest(active_count, 1) AS mean_active_weight, weight_max, label
            FROM experts WHERE {where} ORDER BY {order} LIMIT $limit
            """,
            {**params, "tokens": self.tokens_processed, "limit": limit},
        )

    def most_active(self, group: int, n: int = 20) -> pd.DataFrame:
        return self._experts("grp = $group::UTINYINT", {"group": group}, "active_count DESC, expert", n)

    def least_active(self, group: int, n: int = 20) -> pd.DataFrame:
        """The rarest experts that were active at least once (never-active ones have no row)."""
        return self._experts("grp = $group::UTINYINT", {"group": group}, "active_count, expert", n)

    def siblings(self, group: int, i: int | None = None, j: int | None = None) -> pd.DataFrame:
        """Experts sharing row i and/or column j with an expert (i, j): they share a routing side."""
        if i is None and j is None:
            raise ValueError("siblings needs i, j or both")
        return self._experts(
            "grp = $group::UTINYINT AND (i = $i::USMALLINT OR j = $j::USMALLINT)",
            {"group": group, "i": i, "j": j},
            "active_count DESC, expert",
        )

    def group_density_map(self, group: int) -> np.ndarray:
        """Density of every expert of a group as an [E, E] array (row i, column j), for heatmaps."""
        E = self.experts_per_side
        frame = self._df("SELECT i, j, active_count FROM experts WHERE grp = ?::UTINYINT", [group])
        density = np.zeros((E, E))
        density[frame["i"].to_numpy(int), frame["j"].to_numpy(int)] = frame["active_count"] / self.tokens_processed
        return density

    def experts_skewed_to_domain(self, domain: str, ratio: float = 2.0, group: int | None = None) -> pd.DataFrame:
        """The paper's domain experts: mean weight on `domain` >= ratio x the next most-activating domain's."""
        return self._df(
            f"""
            WITH means AS (
                SELECT x.grp, x.expert, x.domain, x.weight_sum / greatest(d.n_tokens, 1) AS mean_weight
                FROM expert_domains x JOIN domains d ON d.domain = x.domain
                WHERE $group IS NULL OR x.grp = $group::UTINYINT
            ), split AS (
                SELECT grp, expert,
                       max(mean_weight) FILTER (WHERE domain = $domain) AS domain_mean,
                       coalesce(max(mean_weight) FILTER (WHERE domain <> $domain), 0) AS next_mean
                FROM means GROUP BY grp, expert
            )
            SELECT grp, expert, {_NAME_SQL} AS name, domain_mean, next_mean,
                   domain_mean / nullif(next_mean, 0) AS ratio, e.label
            FROM split JOIN experts e USING (grp, expert)
            WHERE domain_mean > 0 AND domain_mean >= $ratio * next_mean
            ORDER BY grp, domain_mean / greatest(next_mean, 1e-30) DESC, expert
            """,
            {"domain": domain, "ratio": ratio, "group": group},
        )

    def experts_for_token(self, token: int | str, group: int | None = None, limit: int = 20) -> pd.DataFrame:
        """Experts whose examples most often highlight a token, given by id or by its text.

        Text matches a token exactly or up to surrounding whitespace (" the" and "the" are both "the").
        """
        if isinstance(token, int):
            token_ids = [token]
        else:
            wanted = token.strip()
            token_ids = [
                t for t, text in enumerate(self._vocab) if text == token or (wanted and text.strip() == wanted)
            ]
        if not token_ids:
            return pd.DataFrame(columns=["grp", "expert", "name", "token_id", "token", "count", "mean_weight", "label"])
        frame = self._df(
            f"""
            SELECT t.grp, t.expert, {_NAME_SQL.replace("grp", "t.grp").replace("expert", "t.expert")} AS name,
                   t.token_id, t.count, t.mean_weight, e.label
            FROM expert_tokens t JOIN experts e USING (grp, expert)
            WHERE list_contains($ids, t.token_id) AND ($group IS NULL OR t.grp = $group::UTINYINT)
            ORDER BY t.count DESC, t.mean_weight DESC, t.grp, t.expert LIMIT $limit
            """,
            {"ids": token_ids, "group": group, "limit": limit},
        )
        frame.insert(4, "token", [self._vocab[t] for t in frame["token_id"]])
        return frame

    def search_text(self, substring: str, group: int | None = None, limit: int = 50) -> pd.DataFrame:
        """Top contexts whose window text contains `substring` (case-insensitive), heaviest first."""
        return self._df(
            f"""
            WITH windows AS (
                SELECT e.grp, e.expert, e.rank, e.doc, e.position, e.weight,
                       string_agg(v.text, '' ORDER BY t.position) AS text
                FROM examples e
                JOIN tokens t ON t.doc = e.doc AND t.position BETWEEN CAST(e.position AS BIGINT) - $context
                                                                  AND CAST(e.position AS BIGINT) + $context
                JOIN vocab v ON v.token_id = t.token_id
                WHERE e.kind = 'top' AND ($group IS NULL OR e.grp = $group::UTINYINT)
                GROUP BY e.grp, e.expert, e.rank, e.doc, e.position, e.weight
            )
            SELECT grp, expert, {_NAME_SQL} AS name, rank, weight, doc, position, text FROM windows
            WHERE contains(lower(text), lower($needle))
            ORDER BY weight DESC, grp, expert, rank LIMIT $limit
            """,
            {"context": self._meta["context"], "group": group, "needle": substring, "limit": limit},
        )

    def search_semantic(self, query: str, group: int | None = None, limit: int = 20) -> pd.DataFrame:
        """Experts whose label + top contexts are closest in meaning to `query` (cosine of sentence embeddings)."""
        if self._meta.get("embedding_model") is None:
            raise IndexUnavailable(
                f"{self.path} was built with --no-embeddings: rebuild it with embeddings for semantic search."
            )
        from explorer.text_embedding import embed_texts

        vector = embed_texts([query])[0].tolist()
        return self._scored(
            f"array_cosine_similarity(embedding, $vector::FLOAT[{schema.EMBEDDING_DIM}])",
            {"vector": vector, "group": group, "limit": limit},
            "TRUE",
        )

    def similar(self, group: int, expert: int, n: int = 10) -> pd.DataFrame:
        """Experts of the same group nearest by embedding (excluding the expert itself)."""
        if self._meta.get("embedding_model") is None:
            raise IndexUnavailable(f"{self.path} was built with --no-embeddings: no similarity search.")
        this = "(SELECT embedding FROM expert_embeddings WHERE grp = $group::UTINYINT AND expert = $expert::UINTEGER)"
        return self._scored(
            f"array_cosine_similarity(embedding, {this})",
            {"group": group, "expert": expert, "limit": n},
            "expert <> $expert::UINTEGER",
        )

    def _scored(self, score_sql: str, params: dict, where: str) -> pd.DataFrame:
        return self._df(
            f"""
            SELECT grp, expert, {_NAME_SQL} AS name, label, {score_sql} AS score
            FROM expert_embeddings JOIN experts USING (grp, expert)
            WHERE ($group IS NULL OR grp = $group::UTINYINT) AND {where}
            ORDER BY score DESC, grp, expert LIMIT $limit
            """,
            params,
        )
