"""The paper's domain experts, defined once: the rule, its answer for one expert, and every expert it picks.

Rule (Monet paper, section 5): an expert is specialised in domain D when its mean routing weight on
D's tokens is at least DOMAIN_RATIO (2) times that of the next most-activating domain. Means come from
the index: `expert_domains.weight_sum / domains.n_tokens`, weights below the index's min_weight
counting as 0 (as everywhere in the index). Routing is shared by the layers of a group, so the rule
holds for every layer of the group at once.

One SQL statement (`_TOP_TWO_SQL`) ranks each expert's two heaviest domains and decides the rule; the
expert page's verdict (`specialisation`), the `domain:NAME` ablation item and `python -m bench.domains`
(`specialised_experts`) all read it, so they cannot disagree. It aggregates `expert_domains` in one
pass: one expert's answer is a lookup; a whole-index one at the published scale (1.57M experts, about
7.5M expert_domains rows) took about 3 s on 2 cores in a synthetic test, so the app keeps it per domain.
"""

from dataclasses import dataclass

from explorer.index.reader import ExpertIndex

DOMAIN_RATIO = 2.0
# An expert active on fewer tokens gets no verdict: its means rest on a handful of activations, which one
# passage can supply (a single top-context window holds 2 * context + 1 tokens), so any rare expert would
# look specialised. 20 keeps 90% of the shipped index's experts (773 of 7,822 fall below it).
MIN_ACTIVE_TOKENS = 20

_TOP_TWO_SQL = """
WITH means AS (
    SELECT x.grp, x.expert, x.domain, x.weight_sum / greatest(d.n_tokens, 1) AS mean_weight
    FROM expert_domains x JOIN domains d USING (domain)
    WHERE {where}
), top_two AS (  -- ties broken by domain name, so the answer never depends on the scan order
    SELECT grp, expert, max({{'mean_weight': mean_weight, 'domain': domain}}, 2) AS best
    FROM means GROUP BY grp, expert
), ranked AS (
    SELECT t.grp, t.expert, e.active_count, t.best[1].domain AS top_domain, t.best[1].mean_weight AS top_mean,
           t.best[2].domain AS next_domain, coalesce(t.best[2].mean_weight, 0) AS next_mean
    FROM top_two t JOIN experts e USING (grp, expert)
), answers AS (
    SELECT grp, expert, active_count, top_domain, top_mean, next_domain, next_mean,
           (SELECT count(*) FROM domains) >= 2 AND top_mean > 0 AND top_mean >= $ratio * next_mean
               AND active_count >= $min_active AS specialised
    FROM ranked
)
SELECT * FROM answers WHERE {which} ORDER BY grp, top_mean / greatest(next_mean, 1e-30) DESC, expert
"""


@dataclass(frozen=True)
class DomainSpecialisation:
    """An expert's two heaviest domains by mean weight, and whether the rule calls it specialised in the first."""

    group: int
    expert: int
    name: str
    active_count: int
    top_domain: str
    top_mean: float
    next_domain: str | None  # None: the expert is active on no other domain's tokens
    next_mean: float  # 0 when next_domain is None
    specialised: bool  # top_mean >= ratio * next_mean, top_mean > 0, enough support, at least two domains

    @property
    def ratio(self) -> float | None:
        """top_mean / next_mean; None when the expert is active on the top domain only."""
        return self.top_mean / self.next_mean if self.next_mean > 0 else None


def _checked(ratio: float) -> float:
    if not ratio > 1:
        raise ValueError(f"The domain rule's ratio must exceed 1 (it picks one domain), not {ratio}.")
    return float(ratio)


def _answers(index: ExpertIndex, where: str, which: str, params: dict, ratio: float) -> list[DomainSpecialisation]:
    """The rule's answers for the experts of `expert_domains` matching `where`, those of them matching `which`."""
    rows = index.rows(
        _TOP_TWO_SQL.format(where=where, which=which),
        {**params, "ratio": _checked(ratio), "min_active": MIN_ACTIVE_TOKENS},
    )
    return [DomainSpecialisation(g, e, index.expert_name(g, e), *rest) for g, e, *rest in rows]


def specialisation(
    index: ExpertIndex, group: int, expert: int, ratio: float = DOMAIN_RATIO
) -> DomainSpecialisation | None:
    """The rule's answer for one expert; None when it is active on no domain's tokens."""
    found = _answers(
        index,
        "x.grp = $group::UTINYINT AND x.expert = $expert::UINTEGER",
        "TRUE",
        {"group": group, "expert": expert},
        ratio,
    )
    return found[0] if found else None


def specialised_experts(
    index: ExpertIndex, domain: str | None = None, ratio: float = DOMAIN_RATIO, group: int | None = None
) -> list[DomainSpecialisation]:
    """Every expert the rule calls specialised in `domain` (None: in any domain), optionally of one group;
    by group, then the most one-sided first."""
    return _answers(
        index,
        "$group IS NULL OR x.grp = $group::UTINYINT",
        "specialised AND ($domain IS NULL OR top_domain = $domain)",
        {"group": group, "domain": domain},
        ratio,
    )


@dataclass(frozen=True)
class TopContextPurity:
    """How one-domain experts' top contexts are: of the experts with at least `min_contexts` top contexts,
    how many have at least `min_share` of them in one domain."""

    min_contexts: int
    min_share: float
    experts: int
    pure: int


def top_context_purity(index: ExpertIndex, min_contexts: int = 20, min_share: float = 0.8) -> TopContextPurity:
    """Domain purity of the experts' stored top contexts (documents without a domain count as no domain)."""
    experts, pure = index.rows(
        """
        WITH per_domain AS (
            SELECT e.grp, e.expert, d.domain, count(*) AS contexts
            FROM examples e JOIN documents d USING (doc)
            WHERE e.kind = 'top'
            GROUP BY ALL
        ), per_expert AS (
            SELECT grp, expert, sum(contexts) AS contexts, max(contexts) FILTER (WHERE domain IS NOT NULL) AS commonest
            FROM per_domain GROUP BY grp, expert
        )
        SELECT count(*), count(*) FILTER (WHERE commonest >= $share * contexts)
        FROM per_expert WHERE contexts >= $min_contexts
        """,
        {"share": min_share, "min_contexts": min_contexts},
    )[0]
    return TopContextPurity(min_contexts, min_share, experts, pure)
