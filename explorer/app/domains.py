"""The domain rule as the app answers it: an expert page's verdict in words, and the experts of `domain:NAME`.

The rule itself, its minimum support and its SQL live in explorer.index.domains; this module only
words its answer and checks the user's domain name.
"""

from dataclasses import dataclass

from explorer.app.tokens import RequestRejected
from explorer.index.domains import DOMAIN_RATIO, MIN_ACTIVE_TOKENS, specialisation, specialised_experts
from explorer.index.reader import ExpertIndex
from explorer.model.naming import ExpertRef


@dataclass(frozen=True)
class DomainVerdict:
    specialised_in: str | None
    ratio: float | None  # top domain's mean / next domain's mean; None when there is no next domain or no top one
    text: str


def expert_verdict(index: ExpertIndex, group: int, expert: int, ratio: float = DOMAIN_RATIO) -> DomainVerdict:
    """The rule's answer for one expert, in a sentence."""
    rule = f"({ratio:g}x rule)"
    if len(index.domain_tokens()) < 2:
        return DomainVerdict(None, None, "The index has fewer than two domains: no domain comparison.")
    found = specialisation(index, group, expert, ratio)
    if found is None or found.top_mean <= 0:
        return DomainVerdict(None, None, "Never active on any domain's tokens.")
    top, lead = found.top_domain, found.ratio
    if found.specialised:
        over = f"active on {top} only" if lead is None else f"{lead:.1f}× its mean weight on {found.next_domain}"
        return DomainVerdict(top, lead, f"Specialised in {top}: {over} {rule}.")
    leads = f"active on {top} only" if lead is None else f"{top} leads {found.next_domain} by {lead:.1f}×"
    if found.active_count < MIN_ACTIVE_TOKENS:
        return DomainVerdict(
            None,
            lead,
            f"No verdict: active on {found.active_count} tokens only, too few to tell a domain"
            f" (needs {MIN_ACTIVE_TOKENS}); {leads}.",
        )
    return DomainVerdict(None, lead, f"Not specialised: {leads} only {rule}.")


def domain_experts(index: ExpertIndex, domain: str) -> list[ExpertRef]:
    """The experts the rule calls specialised in `domain` (RequestRejected for a domain the index lacks)."""
    known = list(index.domain_tokens())
    if domain not in known:
        raise RequestRejected(f"Unknown domain {domain!r}: the index has {', '.join(known) or 'none'}.")
    return [
        ExpertRef.from_flat(found.group, found.expert, index.experts_per_side)
        for found in specialised_experts(index, domain)
    ]
