"""The read API of the expert index: the only code that opens the DuckDB file (schema: explorer.index.schema).

    index = ExpertIndex("assets/monet-embedded.duckdb")
    index.stats(4, 147040); index.top_examples(4, 147040, k=10); index.most_active(4)

Groups are 0-based here (names, made by explorer.model.naming, count from 1); `expert` is the flat id
i*E + j. The file is opened read-only; every call runs on its own cursor, so one ExpertIndex serves
many threads. Results are dataclasses; every query is parameterised, with parameters cast to their
column's type (an uncast parameter makes DuckDB cast the column instead and scan every row).
Searches over many experts live beside this module: text_search.py (text inside top contexts),
semantic.py (embeddings), domains.py (the paper's domain experts), scores.py (causal effect, coherence).
"""

import json
import math
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np

from explorer.index import schema
from explorer.index.schema import IndexMeta
from explorer.model.naming import ExpertRef

EXAMPLE_CACHE_EXPERTS = 64
JOIN_FILTER_VALUES = 5_000
BUILD_HINT = "build it with `python -m precompute index --out {path}` (see README, 'Expert index')"


class IndexUnavailable(RuntimeError):
    """The index file is missing, unreadable, of another schema version, or lacks what was asked."""


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


@dataclass(frozen=True)
class HistogramBin:
    """Active weights of one expert in [low, high) (the last bin includes its top edge)."""

    low: float
    high: float
    count: int


@dataclass(frozen=True)
class TokenCount:
    """A token an expert highlights in its stored examples: how often, and its mean weight there."""

    token_id: int
    token: str
    count: int
    mean_weight: float


@dataclass(frozen=True)
class DomainMean:
    """An expert's mean weight over one domain's tokens (the paper's domain statistic)."""

    domain: str
    mean_weight: float
    n_tokens: int  # the domain's tokens in the index (the mean's denominator)


@dataclass(frozen=True)
class TokenExpert:
    """An expert whose stored examples highlight a token `count` times (search by token)."""

    group: int
    expert: int
    name: str
    token_id: int
    token: str
    count: int
    mean_weight: float
    label: str


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
            # tables added after a file was written (expert_scores) may be absent: readers check here
            self.tables = {name for (name,) in self._conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
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
                    f"upgrade it without rerunning the model: `python -m precompute upgrade {self.path} --out NEW`"
                    " (it recounts the tokens of the corpus the index was built from; without that corpus,"
                    f" rebuild it: {hint})."
                    if version in schema.STATE_READABLE_VERSIONS
                    else f"rebuild it: {hint}."
                )
            )
        try:
            self._index_meta = schema.read_meta(rows)
        except ValueError as error:
            self._conn.close()
            raise IndexUnavailable(
                f"{self.path} is not a complete expert index ({error}); rebuild it: {hint}."
            ) from None
        self.experts_per_side = self._meta["moe_experts"]
        self.tokens_processed = max(1, self._meta["tokens_processed"])
        self.context = self._meta["context"]  # tokens kept on each side of an example's position
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

    def rows(self, sql: str, params: list | dict | None = None) -> list[tuple]:
        """The rows of one parameterised query, on a private cursor."""
        with self.cursor() as conn:
            return conn.execute(sql, params or []).fetchall()

    def expert_name(self, group: int, expert: int) -> str:
        """The paper's name of an expert, "G5/147040" (explorer.model.naming adds the 1)."""
        return str(ExpertRef.from_flat(group, expert, self.experts_per_side))

    # -- facts ------------------------------------------------------------------------------------
    def meta_dict(self) -> dict:
        """Every key of the `meta` table, JSON-decoded (the facts the app lists)."""
        return dict(self._meta)

    def meta(self) -> IndexMeta:
        """The `meta` table, typed (explorer.index.schema.IndexMeta, parsed once when the file was opened)."""
        return self._index_meta

    @property
    def has_embeddings(self) -> bool:
        return self._meta.get("embedding_model") is not None

    def token_text(self, token_id: int) -> str:
        return self._vocab[token_id]

    def domain_tokens(self) -> dict[str, int]:
        """Every corpus domain of the index (sorted by name) and how many of its tokens the index ran on."""
        return dict(self.rows("SELECT domain, n_tokens FROM domains ORDER BY domain"))

    # -- one expert ---------------------------------------------------------------------------------
    def stats(self, group: int, expert: int) -> ExpertStats:
        """Statistics of one expert; an expert never active gets zeros and an empty label."""
        found = self._experts(
            "grp = $group::UTINYINT AND expert = $expert::UINTEGER", {"group": group, "expert": expert}
        )
        if not found:
            i, j = divmod(expert, self.experts_per_side)
            return ExpertStats(group, expert, i, j, self.expert_name(group, expert), 0, 0.0, 0.0, 0.0, 0.0, "")
        return found[0]

    def _window_tokens(self, doc: list[int], position: list[int]) -> dict[tuple[int, int], int]:
        """Token id at every stored (doc, position) within `context` of the given places, in one query.

        A join on the places lets DuckDB push their documents down to the scan of `tokens` (ordered by
        doc), so only the row groups holding them are read."""
        if not doc:
            return {}
        stored = self.rows(
            """
            SELECT t.doc, t.position, t.token_id
            FROM (SELECT unnest($doc)::UINTEGER AS doc, unnest($low) AS low, unnest($high) AS high) w
            JOIN tokens t ON t.doc = w.doc AND t.position BETWEEN w.low AND w.high
            """,
            {
                "doc": doc,
                "low": [max(0, p - self.context) for p in position],
                "high": [p + self.context for p in position],
            },
        )
        return {(d, p): token_id for d, p, token_id in stored}

    def _window(self, token_at: dict, doc: int, position: int) -> tuple[list[int], list[int]]:
        """(offsets into the window, token ids) of the window's stored tokens: the window clipped to its document."""
        window = range(position - self.context, position + self.context + 1)
        present = [(offset, token_at[doc, p]) for offset, p in enumerate(window) if (doc, p) in token_at]
        return [offset for offset, _ in present], [int(t) for _, t in present]

    def window_texts(self, places: list[tuple[int, int]]) -> list[str]:
        """The text of the stored window around each (doc, position), read in one query."""
        token_at = self._window_tokens([d for d, _ in places], [p for _, p in places])
        return ["".join(self._vocab[t] for t in self._window(token_at, d, p)[1]) for d, p in places]

    def expert_examples(self, group: int, expert: int) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
        """(top contexts best first, uniform sample heaviest first) of one expert, read together in two queries.

        The last few experts' examples are cached: an expert page asks for its top contexts, quantile
        samples and top tokens, which all come from these rows."""
        key = (group, expert)
        with self._cache_lock:
            if key in self._example_cache:
                self._example_cache.move_to_end(key)
                return self._example_cache[key]
        stored = self.rows(
            """
            SELECT e.kind, e.rank, e.doc, e.position, e.weight, e.window_max, e.window_weights, d.domain, d.source_id
            FROM examples e LEFT JOIN documents d ON d.doc = e.doc
            WHERE e.grp = $group::UTINYINT AND e.expert = $expert::UINTEGER
            ORDER BY e.kind, e.rank
            """,
            {"group": group, "expert": expert},
        )
        token_at = self._window_tokens([row[2] for row in stored], [row[3] for row in stored])
        examples = {"top": [], "sample": []}
        for kind, rank, doc, position, weight, window_max, window_weights, domain, source_id in stored:
            offsets, token_ids = self._window(token_at, doc, position)
            scale = window_max / 255
            examples[kind].append(
                Example(
                    group,
                    expert,
                    kind,
                    rank,
                    doc,
                    position,
                    weight,
                    domain,
                    source_id,
                    token_ids,
                    [self._vocab[t] for t in token_ids],
                    [float(window_weights[offset]) * scale for offset in offsets],
                    offsets.index(self.context),
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

    def histogram(self, group: int, expert: int) -> list[HistogramBin]:
        """Counts of the expert's active weights per log-spaced bin (edges: meta histogram_edges)."""
        edges = self._meta["histogram_edges"]
        stored = self.rows(
            "SELECT histogram FROM experts WHERE grp = ?::UTINYINT AND expert = ?::UINTEGER", [group, expert]
        )
        counts = stored[0][0] if stored else [0] * (len(edges) - 1)
        return [HistogramBin(low, high, count) for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True)]

    def top_tokens(self, group: int, expert: int, n: int = 10) -> list[TokenCount]:
        """Tokens the expert most often highlights in its stored examples (top contexts and samples, each
        place once), most often first. The same count as `expert_tokens`, which is ordered by token for
        search and so is not read here."""
        top, sample = self.expert_examples(group, expert)
        seen = {(e.doc, e.position): e for e in (*sample, *top)}  # a place in both: the same weight
        weights: dict[int, list[float]] = {}
        for example in seen.values():
            weights.setdefault(example.token_ids[example.highlight], []).append(example.weight)
        counted = [
            TokenCount(token_id, self._vocab[token_id], len(ws), math.fsum(ws) / len(ws))
            for token_id, ws in weights.items()
        ]
        counted.sort(key=lambda t: (-t.count, -t.mean_weight, t.token_id))
        return counted[:n]

    def domain_means(self, group: int, expert: int) -> list[DomainMean]:
        """Mean weight on each domain's tokens (the paper's domain statistic), heaviest first."""
        stored = self.rows(
            """
            SELECT d.domain, coalesce(x.weight_sum, 0) / greatest(d.n_tokens, 1) AS mean_weight, d.n_tokens
            FROM domains d LEFT JOIN expert_domains x
                 ON x.domain = d.domain AND x.grp = ?::UTINYINT AND x.expert = ?::UINTEGER
            ORDER BY mean_weight DESC, d.domain
            """,
            [group, expert],
        )
        return [DomainMean(*row) for row in stored]

    # -- many experts -------------------------------------------------------------------------------
    def _experts(
        self, where: str, params: dict, order: str = "grp, expert", limit: int | None = None
    ) -> list[ExpertStats]:
        """Rows of `experts` with derived columns; `where` uses $named parameters from `params`."""
        stored = self.rows(
            f"""
            SELECT grp, expert, i, j, active_count,
                   active_count / $tokens AS density, weight_sum / $tokens AS mean_weight,
                   weight_sum / greatest(active_count, 1) AS mean_active_weight, weight_max, label
            FROM experts WHERE {where} ORDER BY {order} LIMIT $limit
            """,
            {**params, "tokens": self.tokens_processed, "limit": limit},
        )
        return [
            ExpertStats(group, expert, i, j, self.expert_name(group, expert), *rest)
            for group, expert, i, j, *rest in stored
        ]

    def labels(self, experts: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """Labels of many (group, expert) in one query; experts never active are absent."""
        if not experts:
            return {}
        stored = self.rows(
            """
            SELECT e.grp, e.expert, e.label
            FROM (SELECT unnest($grp)::UTINYINT AS grp, unnest($expert)::UINTEGER AS expert) w
            JOIN experts e USING (grp, expert)
            """,
            {"grp": [g for g, _ in experts], "expert": [e for _, e in experts]},
        )
        return {(group, expert): label for group, expert, label in stored}

    def most_active(self, group: int, n: int = 20) -> list[ExpertStats]:
        return self._experts("grp = $group::UTINYINT", {"group": group}, "active_count DESC, expert", n)

    def least_active(self, group: int, n: int = 20) -> list[ExpertStats]:
        """The rarest experts that were active at least once (never-active ones have no row)."""
        return self._experts("grp = $group::UTINYINT", {"group": group}, "active_count, expert", n)

    def siblings(self, group: int, i: int | None = None, j: int | None = None) -> list[ExpertStats]:
        """Experts sharing row i and/or column j with an expert (i, j), most active first: they share a routing side."""
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
        with self.cursor() as conn:
            stored = conn.execute(
                "SELECT i, j, active_count FROM experts WHERE grp = ?::UTINYINT", [group]
            ).fetchnumpy()
        density = np.zeros((E, E))
        density[stored["i"].astype(int), stored["j"].astype(int)] = stored["active_count"] / self.tokens_processed
        return density

    def experts_for_token(self, token: int | str, group: int | None = None, limit: int = 20) -> list[TokenExpert]:
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
            return []
        stored = self.rows(
            """
            WITH best AS (
                SELECT t.grp, t.expert, t.token_id, t.count, t.mean_weight
                FROM (SELECT unnest($ids)::UINTEGER AS token_id) w JOIN expert_tokens t USING (token_id)
                WHERE $group IS NULL OR t.grp = $group::UTINYINT
                ORDER BY t.count DESC, t.mean_weight DESC, t.grp, t.expert LIMIT $limit
            )
            SELECT grp, expert, token_id, count, mean_weight, e.label
            FROM best JOIN experts e USING (grp, expert)
            ORDER BY count DESC, mean_weight DESC, grp, expert
            """,
            {"ids": token_ids, "group": group, "limit": limit},
        )
        return [
            TokenExpert(g, e, self.expert_name(g, e), t, self._vocab[t], count, mean_weight, label)
            for g, e, t, count, mean_weight, label in stored
        ]
