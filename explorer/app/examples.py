"""Examples the page suggests (placeholders, hints), taken from the loaded model and index so that each one works.

A hard-coded example ("G5/147040", "a token like Paris", "domain:code") fails on every model but the one it was
written for. These come from what is loaded: the busiest expert of the first routing group, a word that its index
has experts for, a domain that has specialised experts, a layer that exists.
"""

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from explorer.index.reader import ExpertIndex, IndexUnavailable
from explorer.model.naming import ExpertRef, ModelShape, group_name

EXPERTS_SEARCHED_FOR_A_WORD = 15  # the busiest experts whose top tokens are searched for an example word


@dataclass(frozen=True)
class PageExamples:
    expert: str  # "G1/2340": an expert that exists (the busiest of G1 when there is an index)
    pair: str  # the same expert as "G1 (36, 36)"
    row: str  # its whole row, "G1 (36, *)"
    layer_expert: str  # the same expert in one layer only, "L1/2340"
    word: str | None  # a word the index has experts for (search by token); None without an index
    domain: str | None  # a domain with specialised experts (`domain:NAME` in the switched-off set)

    def ablation_placeholder(self) -> str:
        domain = f", domain:{self.domain}" if self.domain else ""
        return f"{self.expert}, {self.row}{domain}, {self.layer_expert}"

    def search_placeholder(self) -> str:
        word = f" · a token like {self.word}" if self.word else " · a token"
        return f"{self.expert} · {self.pair}{word} · a phrase · a topic"

    def expert_placeholder(self) -> str:
        return f"expert: {self.expert} or {self.pair}"


def page_examples(
    shape: ModelShape | None,
    index: ExpertIndex | None,
    domain_experts: Callable[[str], list[ExpertRef]] | None = None,
) -> PageExamples:
    """Examples valid on this model and index (without an index: expert 1 of G1, no word, no domain)."""
    if shape is None:  # no model: names that parse, for a page that says the model is missing
        return PageExamples("G1/1", "G1 (0, 1)", "G1 (0, *)", "L0/1", None, None)
    if index is not None:
        try:
            return _examples(shape, index, domain_experts)
        except (
            IndexUnavailable,
            duckdb.Error,
            ValueError,
        ):  # an index that fails here fails with its own message later
            pass
    return _examples(shape, None, None)


def _examples(
    shape: ModelShape, index: ExpertIndex | None, domain_experts: Callable[[str], list[ExpertRef]] | None
) -> PageExamples:
    busiest = index.most_active(0, EXPERTS_SEARCHED_FOR_A_WORD) if index is not None else []
    E = shape.experts_per_side
    ref = ExpertRef(0, busiest[0].i, busiest[0].j, E) if busiest else ExpertRef.from_flat(0, min(1, E * E - 1), E)
    layer = shape.group_layers(0)[-1]
    word = _example_word(index, busiest) if index is not None else None
    domain = _example_domain(index, domain_experts) if index is not None and domain_experts else None
    return PageExamples(str(ref), ref.pair_label, f"{group_name(0)} ({ref.i}, *)", f"L{layer}/{ref.flat}", word, domain)


def _example_word(index: ExpertIndex, busiest) -> str | None:
    """A whole word (a token after a space, 4 letters or more) that the busiest experts highlight, if search finds it.

    Lower-case words first (prose reads better than a name or a keyword), then the most often highlighted.
    """
    counts: dict[str, int] = {}
    for stats in busiest:
        for token in index.top_tokens(stats.group, stats.expert):
            word = token.token.strip()
            if token.token.startswith(" ") and len(word) >= 4 and word.isalpha():
                counts[word] = counts.get(word, 0) + token.count
    for word in sorted(counts, key=lambda w: (not w.islower(), -counts[w], w)):
        if index.experts_for_token(word, limit=1):
            return word
    return None


def _example_domain(index: ExpertIndex, domain_experts: Callable[[str], list[ExpertRef]]) -> str | None:
    """The first domain (in the index's order) that has specialised experts."""
    for domain in index.domain_tokens():
        try:
            if domain_experts(domain):
                return domain
        except ValueError:  # a domain the rule rejects: try the next
            continue
    return None
