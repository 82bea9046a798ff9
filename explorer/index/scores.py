"""Expert scores as the app reads them (table expert_scores, written by precompute.indexing.scores): one expert's
scores with their percentile among the scored experts, the leaderboards of a group, and the scores of many experts.

An index written before the scores existed has no expert_scores table, and one built with `--scores-for none` an
empty one: `coverage` says which, and every read answers "no scores" rather than failing.
"""

from dataclasses import dataclass

from explorer.index import schema
from explorer.index.reader import ExpertIndex

# what a leaderboard or a sort can order by: its name -> the column
SCORE_COLUMNS = {"causal": "causal_effect", "coherence": "coherence"}


@dataclass(frozen=True)
class ScoreCoverage:
    """Which experts of an index have scores."""

    scored: int  # experts with a row in expert_scores (0: none)
    scores_for: str | None  # meta.scores_for: what the runs that wrote them asked for
    has_coherence: bool  # whether coherence was measured (meta.coherence_baseline is set)


@dataclass(frozen=True)
class ExpertScores:
    """One expert's scores; a percentile is the share of the other scored experts with a lower score."""

    causal_effect: float  # mean KL(plain || switched off) in nats at its top contexts' next token
    causal_percentile: float
    coherence: float | None  # mean pairwise cosine of its top contexts' embeddings minus the index's baseline
    coherence_percentile: float | None
    contexts_scored: int
    contexts_active: int  # windows where it had any weight (elsewhere switching it off changes nothing)
    scored_experts: int  # the experts the percentiles compare with (those with scores)


@dataclass(frozen=True)
class ScoredExpert:
    """A row of a leaderboard."""

    group: int
    expert: int
    causal_effect: float
    coherence: float | None
    label: str


def coverage(index: ExpertIndex) -> ScoreCoverage:
    meta = index.meta()
    if schema.EXPERT_SCORES.name not in index.tables:
        return ScoreCoverage(0, None, False)
    (scored,) = index.rows(f"SELECT count(*) FROM {schema.EXPERT_SCORES.name}")[0]
    return ScoreCoverage(scored, meta.scores_for, meta.coherence_baseline is not None)


def expert_scores(index: ExpertIndex, group: int, expert: int) -> ExpertScores | None:
    """The expert's scores and percentiles, or None when it has none."""
    if schema.EXPERT_SCORES.name not in index.tables:
        return None
    found = index.rows(
        """
        WITH mine AS (
            SELECT * FROM expert_scores WHERE grp = $group::UTINYINT AND expert = $expert::UINTEGER
        )
        SELECT m.causal_effect, m.coherence, m.contexts_scored, m.contexts_active,
               (SELECT count(*) FROM expert_scores s WHERE s.causal_effect < m.causal_effect),
               (SELECT count(*) FROM expert_scores s WHERE s.coherence < m.coherence),
               (SELECT count(*) FROM expert_scores),
               (SELECT count(*) FROM expert_scores s WHERE s.coherence IS NOT NULL)
        FROM mine m
        """,
        {"group": group, "expert": expert},
    )
    if not found:
        return None
    causal, coherence, contexts, active, lower_causal, lower_coherence, scored, with_coherence = found[0]
    others = max(scored - 1, 1)
    return ExpertScores(
        causal,
        lower_causal / others,
        coherence,
        None if coherence is None else lower_coherence / max(with_coherence - 1, 1),
        contexts,
        active,
        scored,
    )


def leaderboard(index: ExpertIndex, group: int, by: str, n: int = 15, lowest: bool = False) -> list[ScoredExpert]:
    """The group's scored experts with the highest (or lowest) score `by` ('causal' or 'coherence'), best first."""
    if schema.EXPERT_SCORES.name not in index.tables:
        return []
    column = SCORE_COLUMNS[by]
    order = "ASC" if lowest else "DESC"
    found = index.rows(
        f"""
        SELECT s.grp, s.expert, s.causal_effect, s.coherence, e.label
        FROM expert_scores s JOIN experts e USING (grp, expert)
        WHERE s.grp = $group::UTINYINT AND s.{column} IS NOT NULL
        ORDER BY s.{column} {order}, s.expert LIMIT $n
        """,
        {"group": group, "n": n},
    )
    return [ScoredExpert(*row) for row in found]


def scores_of(index: ExpertIndex, experts: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[float, float | None]]:
    """(causal effect, coherence) of many (group, expert) in one query; experts without scores are absent."""
    if not experts or schema.EXPERT_SCORES.name not in index.tables:
        return {}
    found = index.rows(
        """
        SELECT s.grp, s.expert, s.causal_effect, s.coherence
        FROM (SELECT unnest($grp)::UTINYINT AS grp, unnest($expert)::UINTEGER AS expert) w
        JOIN expert_scores s USING (grp, expert)
        """,
        {"grp": [g for g, _ in experts], "expert": [e for _, e in experts]},
    )
    return {(g, e): (causal, coherence) for g, e, causal, coherence in found}
