"""The read API of the expert index: the only code that reads the DuckDB file (schema: explorer.index.schema).

    index = ExpertIndex("assets/monet-embedded.duckdb")
    index.stats(4, 147040); index.top_examples(4, 147040, k=10); index.search_text("San Francisco")

Groups are 0-based here (the UI writes G{group+1}); `expert` is the flat id i*E + j. The file is
opened read-only; every call runs on its own cursor, so one ExpertIndex serves many threads.
Results are dataclasses or pandas DataFrames; every query is parameterised, with parameters cast to
their column's type (an uncast parameter makes DuckDB cast the column instead and scan every row).
"""

import json
import re
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from explorer.index import schema
from explorer.model.naming import ExpertRef

EXAMPLE_CACHE_EXPERTS = 64
JOIN_FILTER_VALUES = 5_000
GAP = schema.DOC_TEXT_GAP
TEXT_SEARCH_FIRST_BATCH = 128  # documents in a text search's first batch; each next batch doubles
TEXT_SEARCH_DOCUMENTS = 1_000  # at most this many documents per text search, those with the heaviest contexts first
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


_NAME_SQL = "'G' || (grp + 1) || '/' || expert"  # the paper's name, as str(explorer.model.naming.ExpertRef)


class ExpertIndex:
    def __init__(self, path: str | Path, versions: tuple[int, ...] = (schema.SCHEMA_VERSION,)):
        """Open an index file read-only; `versions`: the schema versions accepted (the upgrade reads older ones)."""
        self.path = Path(path)
        hint = BUILD_HINT.format(path=self.path)
        if not self.path.is_file():
            raise IndexUnavailable(f"No expert index at {self.path}: {hint}.")
        try:
            self._conn = duckdb.connect(str(self.path), read_only=True)
            # a join on a list of documents pushes them down to the scan as an IN filter up to this many
            # (default 50): a text search's batches stay row-group lookups instead of full scans
            self._conn.execute(f"SET GLOBAL dynamic_or_filter_threshold = {JOIN_FILTER_VALUES}")
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
        if version not in versions:
            self._conn.close()
            raise IndexUnavailable(
                f"{self.path} has index schema version {version}, this code reads version {schema.SCHEMA_VERSION}; "
                + (
                    f"upgrade it without rerunning the model: `python -m precompute upgrade {self.path} --out NEW`."
                    if version in schema.STATE_READABLE_VERSIONS
                    else f"rebuild it: {hint}."
                )
            )
        self.experts_per_side = self._meta["moe_experts"]
        self.tokens_processed = max(1, self._meta["tokens_processed"])
        self._example_cache: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()

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

    def _window_tokens(self, doc: list[int], position: list[int]) -> dict[tuple[int, int], int]:
        """Token id at every stored (doc, position) within `context` of the given places, in one query.

        A join on the places lets DuckDB push their documents down to the scan of `tokens` (ordered by
        doc), so only the row groups holding them are read."""
        if not doc:
            return {}
        context = self._meta["context"]
        stored = self._df(
            """
            SELECT t.doc, t.position, t.token_id
            FROM (SELECT unnest($doc)::UINTEGER AS doc, unnest($low) AS low, unnest($high) AS high) w
            JOIN tokens t ON t.doc = w.doc AND t.position BETWEEN w.low AND w.high
            """,
            {"doc": doc, "low": [max(0, p - context) for p in position], "high": [p + context for p in position]},
        )
        return dict(zip(zip(stored["doc"], stored["position"], strict=True), stored["token_id"], strict=True))

    def _window(self, token_at: dict, doc: int, position: int) -> tuple[list[int], list[int]]:
        """(offsets into the window, token ids) of the window's stored tokens: the window clipped to its document."""
        context = self._meta["context"]
        window = range(position - context, position + context + 1)
        present = [(offset, token_at[doc, p]) for offset, p in enumerate(window) if (doc, p) in token_at]
        return [offset for offset, _ in present], [int(t) for _, t in present]

    def expert_examples(self, group: int, expert: int) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
        """(top contexts best first, uniform sample heaviest first) of one expert, read together in two queries.

        The last few experts' examples are cached: an expert page asks for its top contexts, quantile
        samples and top tokens, which all come from these rows."""
        key = (group, expert)
        with self._cache_lock:
            if key in self._example_cache:
                self._example_cache.move_to_end(key)
                return self._example_cache[key]
        frame = self._df(
            """
            SELECT e.kind, e.rank, e.doc, e.position, e.weight, e.window_max, e.window_weights, d.domain, d.source_id
            FROM examples e LEFT JOIN documents d ON d.doc = e.doc
            WHERE e.grp = $group::UTINYINT AND e.expert = $expert::UINTEGER
            ORDER BY e.kind, e.rank
            """,
            {"group": group, "expert": expert},
        )
        token_at = self._window_tokens(frame["doc"].tolist(), frame["position"].tolist())
        context = self._meta["context"]
        examples = {"top": [], "sample": []}
        for row in frame.itertuples():
            offsets, token_ids = self._window(token_at, row.doc, row.position)
            scale = row.window_max / 255
            examples[row.kind].append(
                Example(
                    group,
                    expert,
                    row.kind,
                    int(row.rank),
                    int(row.doc),
                    int(row.position),
                    float(row.weight),
                    None if pd.isna(row.domain) else row.domain,
                    None if pd.isna(row.source_id) else row.source_id,
                    token_ids,
                    [self._vocab[t] for t in token_ids],
                    [float(row.window_weights[offset]) * scale for offset in offsets],
                    offsets.index(context),
                    None,
                )
            )
        result = (tuple(examples["top"]), tuple(examples["sample"]))
        with self._cache_lock:
            self._example_cache[key] = result
            while len(self._example_cache) > EXAMPLE_CACHE_EXPERTS:
                self._example_cache.popitem(last=False)
        return result

    def top_examples(self, group: int, expert: int, k: int | None = None) -> list[Example]:
        """The expert's top contexts by weight (deduplicated by window text), best first."""
        return list(self.expert_examples(group, expert)[0][:k])

    def quantile_examples(self, group: int, expert: int, n: int = 5) -> list[Example]:
        """About n examples below the top, spread over the expert's activations from heavy to light.

        Drawn from a uniform sample of its activations; `quantile` estimates the share of all its
        activations that weigh at least as much.
        """
        top, sample = self.expert_examples(group, expert)
        in_top = {(e.doc, e.position) for e in top}
        with_quantile = [replace(e, quantile=(e.rank + 0.5) / len(sample)) for e in sample]
        below_top = [e for e in with_quantile if (e.doc, e.position) not in in_top]
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
        """Tokens the expert most often highlights in its stored examples (top contexts and samples, each
        place once): token_id, token, count, mean_weight. The same count as `expert_tokens`, which is
        ordered by token for search and so is not read here."""
        top, sample = self.expert_examples(group, expert)
        seen = {(e.doc, e.position): e for e in (*sample, *top)}  # a place in both: the same weight
        frame = pd.DataFrame(
            {
                "token_id": [e.token_ids[e.highlight] for e in seen.values()],
                "weight": [e.weight for e in seen.values()],
            }
        )
        counted = frame.groupby("token_id")["weight"].agg(["size", "mean"]).reset_index()
        counted.columns = ["token_id", "count", "mean_weight"]
        counted = counted.sort_values(["count", "mean_weight", "token_id"], ascending=[False, False, True]).head(n)
        counted.insert(1, "token", [self._vocab[t] for t in counted["token_id"]])
        return counted.reset_index(drop=True)

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

    def labels(self, experts: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """Labels of many (group, expert) in one query; experts never active are absent."""
        if not experts:
            return {}
        frame = self._df(
            """
            SELECT e.grp, e.expert, e.label
            FROM (SELECT unnest($grp)::UTINYINT AS grp, unnest($expert)::UINTEGER AS expert) w
            JOIN experts e USING (grp, expert)
            """,
            {"grp": [g for g, _ in experts], "expert": [e for _, e in experts]},
        )
        return {
            (int(g), int(e)): label for g, e, label in zip(frame["grp"], frame["expert"], frame["label"], strict=True)
        }

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
        `expert_tokens` is ordered by token, so a join on the wanted ids reads only their row groups.
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
            WITH best AS (
                SELECT t.grp, t.expert, t.token_id, t.count, t.mean_weight
                FROM (SELECT unnest($ids)::UINTEGER AS token_id) w JOIN expert_tokens t USING (token_id)
                WHERE $group IS NULL OR t.grp = $group::UTINYINT
                ORDER BY t.count DESC, t.mean_weight DESC, t.grp, t.expert LIMIT $limit
            )
            SELECT grp, expert, {_NAME_SQL} AS name, token_id, count, mean_weight, e.label
            FROM best JOIN experts e USING (grp, expert)
            ORDER BY count DESC, mean_weight DESC, grp, expert
            """,
            {"ids": token_ids, "group": group, "limit": limit},
        )
        frame.insert(4, "token", [self._vocab[t] for t in frame["token_id"]])
        return frame

    def search_text(self, substring: str, group: int | None = None, limit: int = 50) -> pd.DataFrame:
        """Top contexts whose window text contains `substring` (case-insensitive), heaviest first.

        `doc_text` holds the lowercased text of every stored token run. The documents containing the
        substring are visited heaviest first (by their heaviest top context) in growing batches; in
        each, the places it occurs give the windows that cover one whole occurrence, and
        `examples_by_location` the top contexts there. The visit stops, exactly, once `limit` contexts
        are found that outweigh every context of the documents left; or, not exactly, after
        TEXT_SEARCH_DOCUMENTS documents. Columns: grp, expert, name, rank, weight, doc, position, text;
        frame.attrs: "documents" = (searched, containing), "exact".
        """
        needle = substring.lower().replace(GAP, "")  # doc_text lowercases token by token; GAP marks a gap
        docs = self._df(
            "SELECT doc, max_weight FROM doc_text WHERE contains(text, $needle) ORDER BY max_weight DESC, doc",
            {"needle": needle or GAP},  # an empty needle finds nothing
        )
        found = pd.DataFrame(columns=["grp", "expert", "name", "rank", "weight", "doc", "position"])
        searched, batch, exact = 0, TEXT_SEARCH_FIRST_BATCH, True
        while searched < len(docs):
            if searched == TEXT_SEARCH_DOCUMENTS:
                exact = False
                break
            chosen = docs["doc"].iloc[searched : min(searched + batch, TEXT_SEARCH_DOCUMENTS)].tolist()
            searched, batch = searched + len(chosen), 2 * batch
            more = self._top_contexts_in(self._occurrences(chosen, needle), group, limit)
            found = (more if found.empty else pd.concat([found, more], ignore_index=True)).sort_values(
                ["weight", "grp", "expert", "rank"], ascending=[False, True, True, True]
            )[:limit]
            heaviest_left = docs["max_weight"].iloc[searched] if searched < len(docs) else -np.inf
            if len(found) == limit and found["weight"].iloc[-1] > heaviest_left:
                break  # no context of the documents left is that heavy: none of theirs can enter
        token_at = self._window_tokens(found["doc"].tolist(), found["position"].tolist())
        found["text"] = [
            "".join(self._vocab[t] for t in self._window(token_at, d, p)[1])
            for d, p in zip(found["doc"], found["position"], strict=True)
        ]
        found.attrs.update(documents=(searched, len(docs)), exact=exact)
        return found.reset_index(drop=True)

    def _occurrences(self, docs: list[int], needle: str) -> tuple[list[int], list[int], list[int]]:
        """(doc, low, high): the positions where a window must be centred to hold a whole occurrence of
        `needle`, as merged ranges per document."""
        with self.cursor() as conn:  # arrow: the lists arrive as flat arrays, no Python object per value
            rows = conn.execute(
                """
                SELECT t.doc, t.text, t.positions, t.offsets
                FROM (SELECT unnest($docs)::UINTEGER AS doc) w JOIN doc_text t USING (doc)
                """,
                {"docs": docs},
            ).fetch_arrow_table()
        positions, offsets = (rows[name].combine_chunks() for name in ("positions", "offsets"))
        bounds = positions.offsets.to_numpy()  # both lists have one entry per stored token: the same bounds
        all_positions, all_offsets = positions.flatten().to_numpy().astype(np.int64), offsets.flatten().to_numpy()
        context, pattern = self._meta["context"], re.compile(f"(?={re.escape(needle)})")  # overlapping too
        doc_of, low, high = [], [], []
        for row, (doc, text) in enumerate(zip(rows["doc"].to_pylist(), rows["text"].to_pylist(), strict=True)):
            starts = np.fromiter((m.start() for m in pattern.finditer(text)), dtype=np.int64)
            if not len(starts):
                continue
            span = slice(bounds[row], bounds[row + 1])
            first = np.searchsorted(all_offsets[span], starts, side="right") - 1  # token holding the first char
            last = np.searchsorted(all_offsets[span], starts + len(needle) - 1, side="right") - 1
            lo = np.maximum(all_positions[span][last] - context, 0)  # both non-decreasing
            hi = all_positions[span][first] + context
            opens = np.r_[True, lo[1:] > hi[:-1]]  # a range not overlapping the one before
            doc_of += [doc] * int(opens.sum())
            low += lo[opens].tolist()
            high += np.maximum.reduceat(hi, np.flatnonzero(opens)).tolist()
        return doc_of, low, high

    def _top_contexts_in(self, places: tuple[list[int], list[int], list[int]], group, limit: int) -> pd.DataFrame:
        """The heaviest `limit` top contexts centred inside the given (doc, low, high) ranges (disjoint per
        document, so no context is found twice)."""
        doc, low, high = places
        return self._df(
            f"""
            SELECT e.grp, e.expert, {_NAME_SQL.replace("grp", "e.grp").replace("expert", "e.expert")}
                   AS name, e.rank, e.weight, e.doc, e.position
            FROM (SELECT unnest($doc)::UINTEGER AS doc, unnest($low) AS low, unnest($high) AS high) h
            JOIN examples_by_location e ON e.doc = h.doc AND e.position BETWEEN h.low AND h.high
            WHERE $group IS NULL OR e.grp = $group::UTINYINT
            ORDER BY e.weight DESC, e.grp, e.expert, e.rank LIMIT $limit
            """,
            {"doc": doc, "low": low, "high": high, "group": group, "limit": limit},
        )

    def search_semantic(self, query: str, group: int | None = None, limit: int = 20) -> pd.DataFrame:
        """Experts whose label + top contexts are closest in meaning to `query` (cosine of sentence embeddings)."""
        if self._meta.get("embedding_model") is None:
            raise IndexUnavailable(
                f"{self.path} was built with --no-embeddings: rebuild it with embeddings for semantic search."
            )
        from explorer.index.embedding import embed_texts

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
