"""Search by meaning: experts whose label and top contexts are closest to a query, or to another expert,
by the cosine of their sentence embeddings (`expert_embeddings`, written by the index job unless it ran
with --no-embeddings; explorer.index.embedding computes the query's)."""

from dataclasses import dataclass

from explorer.index import schema
from explorer.index.reader import ExpertIndex, IndexUnavailable


@dataclass(frozen=True)
class ScoredExpert:
    group: int
    expert: int
    name: str
    label: str
    score: float  # cosine similarity, -1..1


def search_semantic(index: ExpertIndex, query: str, group: int | None = None, limit: int = 20) -> list[ScoredExpert]:
    """Experts whose label + top contexts are closest in meaning to `query`, closest first."""
    if not index.has_embeddings:
        raise IndexUnavailable(
            f"{index.path} was built with --no-embeddings: rebuild it with embeddings for semantic search."
        )
    from explorer.index.embedding import embed_texts

    vector = embed_texts([query])[0].tolist()
    return _scored(
        index,
        f"array_cosine_similarity(embedding, $vector::FLOAT[{schema.EMBEDDING_DIM}])",
        {"vector": vector, "group": group, "limit": limit},
        "TRUE",
    )


def similar(index: ExpertIndex, group: int, expert: int, n: int = 10) -> list[ScoredExpert]:
    """Experts of the same group nearest by embedding (excluding the expert itself), nearest first."""
    if not index.has_embeddings:
        raise IndexUnavailable(f"{index.path} was built with --no-embeddings: no similarity search.")
    this = "(SELECT embedding FROM expert_embeddings WHERE grp = $group::UTINYINT AND expert = $expert::UINTEGER)"
    return _scored(
        index,
        f"array_cosine_similarity(embedding, {this})",
        {"group": group, "expert": expert, "limit": n},
        "expert <> $expert::UINTEGER",
    )


def _scored(index: ExpertIndex, score_sql: str, params: dict, where: str) -> list[ScoredExpert]:
    stored = index.rows(
        f"""
        SELECT grp, expert, label, {score_sql} AS score
        FROM expert_embeddings JOIN experts USING (grp, expert)
        WHERE ($group IS NULL OR grp = $group::UTINYINT) AND {where}
        ORDER BY score DESC, grp, expert LIMIT $limit
        """,
        params,
    )
    return [ScoredExpert(g, e, index.expert_name(g, e), label, score) for g, e, label, score in stored]
