"""The index part of an expert page: statistics, scores, contexts, histogram, top tokens, domains and verdict,
siblings."""

from dataclasses import asdict, dataclass

from explorer.app.domains import DomainVerdict, expert_verdict
from explorer.index import scores
from explorer.index.reader import DomainMean, Example, ExpertIndex, ExpertStats, HistogramBin, TokenCount
from explorer.index.scores import ExpertScores
from explorer.model.naming import ExpertRef, ModelShape, group_number


@dataclass(frozen=True)
class ExpertPage:
    ref: ExpertRef
    layers: range
    stats: ExpertStats
    top: list[Example]
    samples: list[Example]
    histogram: list[HistogramBin]
    top_tokens: list[TokenCount]
    domains: list[DomainMean]
    verdict: DomainVerdict
    same_row: list[ExpertStats]  # most active experts sharing i (first routing side)
    same_column: list[ExpertStats]  # sharing j
    scores: ExpertScores | None  # causal effect and coherence with their percentiles; None: not scored
    scores_note: str  # why there are no scores and how to add them ("" when there are)

    def to_json(self) -> dict:
        def example(e: Example) -> dict:
            return {
                "rank": e.rank,
                "weight": e.weight,
                "text": e.text,
                "tokens": e.tokens,
                "weights": e.weights,
                "highlight": e.highlight,
                "domain": e.domain,
                "source": e.source_id,
                "quantile": e.quantile,
            }

        return {
            "expert": str(self.ref),
            "pair": self.ref.pair_label,
            "group": group_number(self.ref.group),
            "i": self.ref.i,
            "j": self.ref.j,
            "layers": list(self.layers),
            "label": self.stats.label,
            "density": self.stats.density,
            "active_count": self.stats.active_count,
            "mean_weight": self.stats.mean_weight,
            "mean_active_weight": self.stats.mean_active_weight,
            "max_weight": self.stats.max_weight,
            "top_contexts": [example(e) for e in self.top],
            "quantile_samples": [example(e) for e in self.samples],
            "weight_histogram": [asdict(b) for b in self.histogram],
            "top_tokens": [asdict(t) for t in self.top_tokens],
            "domains": [asdict(d) for d in self.domains],
            "domain_verdict": self.verdict.text,
            "specialised_in": self.verdict.specialised_in,
            "same_row": [s.name for s in self.same_row],
            "same_column": [s.name for s in self.same_column],
            "scores": asdict(self.scores) if self.scores is not None else None,
            "scores_note": self.scores_note,
        }


def expert_page(
    index: ExpertIndex, shape: ModelShape, ref: ExpertRef, contexts: int = 12, siblings: int = 8
) -> ExpertPage:
    """The page's index reads, one after the other (side by side was slower)."""
    g, e = ref.group, ref.flat
    related = [s for s in index.siblings(g, ref.i, ref.j) if s.expert != e]
    found = scores.expert_scores(index, g, e)
    return ExpertPage(
        ref,
        shape.group_layers(g),
        index.stats(g, e),
        index.top_examples(g, e, contexts),
        index.quantile_examples(g, e, 5),
        index.histogram(g, e),
        index.top_tokens(g, e, 12),
        index.domain_means(g, e),
        expert_verdict(index, g, e),
        [s for s in related if s.i == ref.i][:siblings],
        [s for s in related if s.j == ref.j][:siblings],
        found,
        "" if found is not None else scores_note(index),
    )


def scores_note(index: ExpertIndex) -> str:
    """What the page says where an expert has no scores: none computed for the index, or not for this expert."""
    covered = scores.coverage(index)
    command = f"python -m precompute scores {index.path}"
    if covered.scored == 0:
        return f"Scores not computed for this index: {command}"
    return (
        f"Not scored: this index has scores for {covered.scores_for or 'some experts'} ({covered.scored:,} experts);"
        f" {command} --scores-for NAME adds them for one."
    )
