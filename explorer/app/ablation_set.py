"""The ablation set as the page and the URL carry it: one line of text, e.g. `G1/5, G2 (3, 4), G1 (7, *)`.

Items, separated by commas (outside parentheses), semicolons or new lines:
- an expert of a routing group, every layer of it: `G5/147040` or `G5 (287, 96)` (groups count from 1);
- one decoder layer only: `L17/147040` or `L17 (287, 96)` (layers count from 0);
- a whole row or column of a group's E x E map: `G5 (287, *)`, `G5 (*, 96)`;
- a whole domain: `domain:code`, the experts specialised in it by the paper's rule (mean weight on the
  domain at least twice that on any other domain; explorer.index.domains), looked up in the index.
The text is the request's own state (a gr.State / textbox value and `?ablate=` in the URL), so every
user's set travels with their request.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from explorer.app.tokens import RequestRejected
from explorer.model.ablation import Ablation
from explorer.model.naming import ExpertRef, ModelShape, parse_expert_spec

MAX_SWITCHED_OFF_PER_LAYER = 20_000  # memory of the ablated forward grows with tokens x heads x this

_SEPARATOR = re.compile(r"[,;\n](?![^()]*\))")
_LINE = re.compile(r"^\s*([GL])\s*(\d+)\s*[/ ]?\s*\(\s*(\d+|\*)\s*,\s*(\d+|\*)\s*\)\s*$", re.IGNORECASE)
_DOMAIN = re.compile(r"^\s*domain\s*:\s*(.+?)\s*$", re.IGNORECASE)


def split_items(text: str) -> list[str]:
    return [item.strip() for item in _SEPARATOR.split(text or "") if item.strip()]


def add_items(text: str, new_items: list[str]) -> str:
    """The set with new items appended (items already in it are not repeated)."""
    items = split_items(text)
    items += [item for item in new_items if item not in items]
    return ", ".join(items)


def _row_or_column(item: str, shape: ModelShape) -> list | None:
    """Entries of `G5 (287, *)` / `L3 (*, 96)`; None when the item names no whole row or column."""
    match = _LINE.match(item)
    if not match or "*" not in (match.group(3), match.group(4)):
        return None
    kind, number, i, j = match.groups()
    if i == "*" and j == "*":
        raise RequestRejected(f"{item!r}: name a row (i, *) or a column (*, j), not the whole map.")
    # the group or layer and the fixed side are checked as in one expert's name, with 0 for the star
    one_expert = f"{kind}{number} ({0 if i == '*' else i}, {0 if j == '*' else j})"
    try:
        kind, index, fixed_i, fixed_j = parse_expert_spec(one_expert, shape)
    except ValueError as error:
        raise RequestRejected(str(error).replace(repr(one_expert), repr(item))) from None
    E = shape.experts_per_side
    pairs = [(k, fixed_j) for k in range(E)] if i == "*" else [(fixed_i, k) for k in range(E)]
    if kind == "G":
        return [ExpertRef(index, a, b, E) for a, b in pairs]
    return [(index, a, b) for a, b in pairs]


@dataclass(frozen=True)
class ResolvedAblation:
    ablation: Ablation | None  # None: nothing switched off
    items: list[str]
    experts: int  # distinct (group-or-layer, i, j) named, after expanding rows, columns and domains

    def summary(self) -> str:
        if not self.ablation:
            return "Nothing switched off: both sides run the plain model."
        layers = sorted({layer for layer, _, _ in self.ablation.triples()})
        return (
            f"{self.experts:,} experts switched off ({len(self.ablation):,} (layer, expert) pairs"
            f" in layers {', '.join(map(str, layers))})."
        )


def resolve(
    text: str, shape: ModelShape, domain_experts: Callable[[str], list[ExpertRef]] | None = None
) -> ResolvedAblation:
    """Expand and check the set; bad items raise RequestRejected naming the item and what is valid."""
    items = split_items(text)
    entries: list = []
    for item in items:
        domain = _DOMAIN.match(item)
        if domain:
            if domain_experts is None:
                raise RequestRejected(f"{item!r}: domains need an expert index, and none is loaded.")
            found = domain_experts(domain.group(1))
            if not found:
                raise RequestRejected(f"{item!r}: no expert is skewed toward domain {domain.group(1)!r} (2x rule).")
            entries += found
            continue
        whole_line = _row_or_column(item, shape)
        entries += whole_line if whole_line is not None else [item]
    try:
        ablation = Ablation.build(entries, shape)
    except ValueError as error:
        raise RequestRejected(str(error)) from None
    widest = max((len(pairs) for _, pairs in ablation.pairs), default=0)
    if widest > MAX_SWITCHED_OFF_PER_LAYER:
        raise RequestRejected(
            f"The set switches off {widest:,} experts in one layer: the limit is"
            f" {MAX_SWITCHED_OFF_PER_LAYER:,} per layer."
        )
    return ResolvedAblation(ablation or None, items, len({_identity(entry, shape) for entry in entries}))


def _identity(entry, shape: ModelShape) -> tuple:
    if isinstance(entry, ExpertRef):
        return ("G", entry.group, entry.i, entry.j)
    if isinstance(entry, str):
        return parse_expert_spec(entry, shape)
    return ("L", *entry)
