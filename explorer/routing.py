"""Routing, the pure part: expert naming, ablation sets, and sparse expert weights.

Naming follows the paper: an expert is (routing group, i, j), written "G5/147040" (flat id i*E + j)
or "G5 (287, 96)". Groups count from 1 in text, as the authors do ("Group 5 = layers 16-19" when
moe_groups = 4); inside the code a group index is 0-based. A routing group's layers share its
router, so an expert's activations belong to the group, while every layer has its own expert
weights: switching an expert off means every layer of its group unless one layer is named
("L17/147040", 0-based decoder layer, or a `(layer, i, j)` triple).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch


@dataclass(frozen=True, order=True)
class ExpertRef:
    """One expert of a routing group: `group` is 0-based; `str()` gives the paper's 1-based "G5/147040"."""

    group: int
    i: int
    j: int
    experts_per_side: int = field(compare=False)

    @property
    def flat(self) -> int:
        return self.i * self.experts_per_side + self.j

    def __str__(self) -> str:
        return f"G{self.group + 1}/{self.flat}"

    @property
    def pair_label(self) -> str:
        return f"G{self.group + 1} ({self.i}, {self.j})"


@dataclass(frozen=True)
class ModelShape:
    """What naming and ablation need to know of a model: layers, experts per side, layers per group."""

    num_layers: int
    experts_per_side: int
    layers_per_group: int

    @classmethod
    def of(cls, config) -> "ModelShape":
        return cls(config.num_hidden_layers, config.moe_experts, config.moe_groups)

    @property
    def num_groups(self) -> int:
        return -(-self.num_layers // self.layers_per_group)

    def group_layers(self, group: int) -> range:
        start = group * self.layers_per_group
        return range(start, min(start + self.layers_per_group, self.num_layers))

    def group_of_layer(self, layer: int) -> int:
        return layer // self.layers_per_group

    def group_help(self) -> str:
        spans = ", ".join(
            f"G{g + 1} = layers {self.group_layers(g)[0]}-{self.group_layers(g)[-1]}" for g in range(self.num_groups)
        )
        return f"groups count from 1, layers from 0: {spans}"


_GROUP_FLAT = re.compile(r"^\s*([GL])\s*(\d+)\s*/\s*(\d+)\s*$", re.IGNORECASE)
_GROUP_PAIR = re.compile(r"^\s*([GL])\s*(\d+)\s*[/ ]?\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$", re.IGNORECASE)


def _check_range(what: str, value: int, limit: int, entry) -> None:
    if not 0 <= value < limit:
        raise ValueError(f"{entry!r}: {what} {value} is outside the model (valid: 0..{limit - 1}).")


def parse_expert_spec(spec: str, shape: ModelShape) -> tuple[str, int, int, int]:
    """Parse "G5/147040", "G5 (287, 96)", "L17/147040" or "L17 (287, 96)".

    Returns (kind, index, i, j): kind "G" with a 0-based group index, or "L" with a 0-based layer.
    Raises ValueError naming the entry and the valid range.
    """
    E = shape.experts_per_side
    match = _GROUP_FLAT.match(spec)
    if match:
        kind, index, flat = match.group(1).upper(), int(match.group(2)), int(match.group(3))
        _check_range("expert id", flat, E * E, spec)
        i, j = divmod(flat, E)
    elif match := _GROUP_PAIR.match(spec):
        kind, index, i, j = match.group(1).upper(), int(match.group(2)), int(match.group(3)), int(match.group(4))
        _check_range("i", i, E, spec)
        _check_range("j", j, E, spec)
    else:
        raise ValueError(
            f"{spec!r} is not an expert: write G<group>/<id> (e.g. G1/{E + 1}), G<group> (i, j), or L<layer>/<id>"
            f" for one decoder layer; ids run 0..{E * E - 1}, i and j 0..{E - 1}; {shape.group_help()}."
        )
    if kind == "G":
        if not 1 <= index <= shape.num_groups:
            raise ValueError(f"{spec!r}: group G{index} is outside the model (valid: G1..G{shape.num_groups}).")
        return kind, index - 1, i, j
    _check_range("layer", index, shape.num_layers, spec)
    return kind, index, i, j


def parse_expert_ref(spec: str, shape: ModelShape) -> ExpertRef:
    """Parse a group-level expert name ("G5/147040" or "G5 (287, 96)") into an ExpertRef."""
    kind, index, i, j = parse_expert_spec(spec, shape)
    if kind != "G":
        raise ValueError(f"{spec!r} names a layer; an expert page is per routing group: write G<group>/<id>.")
    return ExpertRef(index, i, j, shape.experts_per_side)


@dataclass(frozen=True)
class Ablation:
    """Experts switched off for one request: per decoder layer, the (i, j) pairs whose weight is zeroed.

    Immutable and free of model state, so concurrent requests never see each other's sets. Build it
    with `Ablation.build(entries, config)`; entries are `(layer, i, j)` triples, ExpertRefs (every
    layer of the group) or spec strings (see `parse_expert_spec`).
    """

    shape: ModelShape
    pairs: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]  # ((layer, ((i, j), ...)), ...), sorted
    _device_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, entries: Iterable, config) -> "Ablation":
        shape = config if isinstance(config, ModelShape) else ModelShape.of(config)
        E = shape.experts_per_side
        per_layer: dict[int, set[tuple[int, int]]] = {}
        for entry in entries:
            if isinstance(entry, str):
                kind, index, i, j = parse_expert_spec(entry, shape)
                layers = shape.group_layers(index) if kind == "G" else [index]
            elif isinstance(entry, ExpertRef):
                if entry.experts_per_side != E:
                    raise ValueError(f"{entry}: named for E={entry.experts_per_side}, this model has E={E}.")
                _check_range("group index", entry.group, shape.num_groups, entry)
                layers, i, j = shape.group_layers(entry.group), entry.i, entry.j
            else:
                try:
                    layer, i, j = (int(v) for v in entry)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{entry!r} is not an ablation entry: give (layer, i, j), an ExpertRef or a spec like 'G1/5'."
                    ) from None
                _check_range("layer", layer, shape.num_layers, entry)
                _check_range("i", i, E, entry)
                _check_range("j", j, E, entry)
                layers = [layer]
            for layer in layers:
                per_layer.setdefault(layer, set()).add((i, j))
        return cls(shape, tuple((layer, tuple(sorted(p))) for layer, p in sorted(per_layer.items())))

    @classmethod
    def coerce(cls, ablate, config) -> "Ablation | None":
        """Whatever a caller passed as `ablate` → an Ablation checked against this model, or None if empty."""
        if ablate is None:
            return None
        if isinstance(ablate, Ablation):
            if ablate.shape != ModelShape.of(config):
                raise ValueError(
                    f"This ablation was built for {ablate.shape}, not for this model ({ModelShape.of(config)})."
                )
            return ablate or None
        if isinstance(ablate, (str, ExpertRef)):
            ablate = [ablate]
        return cls.build(ablate, config) or None

    def __len__(self) -> int:
        return sum(len(p) for _, p in self.pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def layer_pairs(self, layer: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows i, cols j) LongTensors of the experts switched off in `layer`, on `device`; None if none."""
        key = (layer, str(device))
        cached = self._device_cache.get(key)
        if cached is None:
            pairs = dict(self.pairs).get(layer)
            if not pairs:
                return None
            both = torch.tensor(pairs, dtype=torch.long).T.to(device)
            cached = self._device_cache[key] = (both[0], both[1])
        return cached

    def triples(self) -> list[tuple[int, int, int]]:
        return [(layer, i, j) for layer, pairs in self.pairs for i, j in pairs]


class SparseExpertWeights(NamedTuple):
    """Every non-zero expert weight of a batch, as flat parallel tensors."""

    row: torch.Tensor  # int64, batch row
    position: torch.Tensor  # int64, position in the model's input
    expert: torch.Tensor  # int64, flat id i * E + j
    weight: torch.Tensor  # float32, w_ij = sum_h g1[h, i] * g2[h, j]


def dense_expert_weights(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """The definition, [..., E*E]: for tests and tiny models only (E*E = 262,144 at published scale)."""
    return torch.einsum("...hi,...hj->...ij", g1, g2).flatten(-2)


def _selected_entries(g: torch.Tensor, other: torch.Tensor, min_weight: float):
    """The entries of g [N, H, E] that can take part in a kept pair, in (token, head, e) order:
    (segment = token * H + head, e, value). With a `min_weight`, an entry e is dropped (in all heads) where
    sum_h g[h, e] * max(other[h]) < min_weight: that bounds every w it takes part in, so no pair reaching
    `min_weight` loses a term (a little slack covers float sums taken in another order)."""
    E = g.shape[-1]
    selected = g > 0
    if min_weight > 0:
        bound = torch.einsum("nhe,nh->ne", g, other.amax(-1))
        selected &= (bound >= min_weight * (1 - 1e-5)).unsqueeze(1)
    flat = selected.view(-1).nonzero().squeeze(1)
    return flat // E, flat % E, g.view(-1).index_select(0, flat)


def _heads_by_entry(segment: torch.Tensor, e: torch.Tensor, N: int, H: int, E: int) -> torch.Tensor:
    """[N * E] int64 bitmask: bit h is set where head h selects entry e of that token."""
    heads = torch.zeros(N * E, dtype=torch.long, device=e.device)
    return heads.index_add_(0, segment // H * E + e, 1 << (segment % H))


def sparse_expert_weights(
    g1: torch.Tensor, g2: torch.Tensor, min_weight: float = 0.0, max_chunk_pairs: int = 1 << 23
) -> SparseExpertWeights:
    """Non-zero w_ij of every token from (g1, g2) [B, T, H, E], never building [tokens, E*E].

    Each head selects a few entries per side, so each (token, head) proposes k1 * k2 candidate pairs.
    A pair selected by several heads is kept once, by its first head (a bitmask of the heads selecting
    each entry tells which), and only those rare pairs pay for the full sum over heads. Weights below
    `min_weight` (or zero) are dropped; with a `min_weight`, entries that cannot reach it are pruned
    before any pair is formed (exactly: see `_selected_entries`), which removes about 95% of the
    candidate pairs on router-like inputs. Pairs are formed in chunks of about `max_chunk_pairs`, so
    memory stays bounded for any batch.
    """
    if g1.shape != g2.shape or g1.dim() != 4:
        raise ValueError(f"g1 and g2 must both be [B, T, H, E]; got {tuple(g1.shape)} and {tuple(g2.shape)}.")
    B, T, H, E = g1.shape
    if H > 62:
        raise ValueError(f"At most 62 router heads are supported (a head bitmask is int64); got {H}.")
    N = B * T
    g1, g2 = g1.reshape(N, H, E).float(), g2.reshape(N, H, E).float()
    segment1, i, value1 = _selected_entries(g1, g2, min_weight)
    segment2, j, value2 = _selected_entries(g2, g1, min_weight)
    heads1, heads2 = _heads_by_entry(segment1, i, N, H, E), _heads_by_entry(segment2, j, N, H, E)
    # per entry, once (a pair then costs a few gathers of these): the heads other than its own that select
    # the side-1 entry, those of them before its own head, and every head selecting the side-2 entry
    token1, own1 = segment1 // H, 1 << (segment1 % H)
    others1 = heads1.index_select(0, token1 * E + i) & ~own1
    sides = _Entries(
        token1, i, value1, others1, others1 & (own1 - 1), j, value2, heads2.index_select(0, segment2 // H * E + j)
    )
    count2 = torch.bincount(segment2, minlength=N * H)  # side-2 entries of each (token, head), stored in order
    start2 = count2.cumsum(0) - count2
    pairs = count2.index_select(0, segment1)  # pairs each side-1 entry proposes
    first_pair = pairs.cumsum(0) - pairs
    partner_base = start2.index_select(0, segment1) - first_pair  # side-2 entry of pair p: partner_base + p
    chunk_of_entry = first_pair // max_chunk_pairs  # non-decreasing
    parts, lo = [], 0
    for size in torch.unique_consecutive(chunk_of_entry, return_counts=True)[1].tolist():
        entry = torch.arange(lo, lo + size, device=g1.device).repeat_interleave(pairs[lo : lo + size])
        pair = torch.arange(entry.numel(), device=g1.device) + first_pair[lo]
        parts.append(_pair_weights(g1, g2, sides, entry, partner_base.index_select(0, entry) + pair, min_weight))
        lo += size
    if not parts:
        empty = torch.empty(0, dtype=torch.long, device=g1.device)
        return SparseExpertWeights(empty, empty, empty, torch.empty(0, device=g1.device))
    token, i, j, weight = (torch.cat(column) for column in zip(*parts, strict=True))
    return SparseExpertWeights(token // T, token % T, i * E + j, weight)


class _Entries(NamedTuple):
    """Selected entries of both sides, with their head bitmasks (see sparse_expert_weights)."""

    token1: torch.Tensor
    i: torch.Tensor
    value1: torch.Tensor
    others1: torch.Tensor  # heads other than the entry's own selecting (token, i)
    earlier1: torch.Tensor  # those of them numbered before its own head
    j: torch.Tensor
    value2: torch.Tensor
    heads2: torch.Tensor  # every head selecting (token, j)


def _pair_weights(g1, g2, sides: _Entries, entry, partner, min_weight):
    """(token, i, j, weight) of candidate pairs (side-1 entry, side-2 entry of the same token and head):
    a pair also selected by an earlier head is dropped, so each (i, j) appears once."""
    heads2 = sides.heads2.index_select(0, partner)
    first = ((sides.earlier1.index_select(0, entry) & heads2) == 0).nonzero().squeeze(1)
    entry, partner, heads2 = entry.index_select(0, first), partner.index_select(0, first), heads2.index_select(0, first)
    weight = sides.value1.index_select(0, entry) * sides.value2.index_select(0, partner)
    multi = ((sides.others1.index_select(0, entry) & heads2) != 0).nonzero().squeeze(1)  # other heads select it too
    if multi.numel():
        t, mi, mj = (
            x.index_select(0, y)
            for x, y in ((sides.token1, entry[multi]), (sides.i, entry[multi]), (sides.j, partner[multi]))
        )
        weight[multi] = (g1[t, :, mi] * g2[t, :, mj]).sum(-1)  # the full sum over heads
    if min_weight > 0:
        strong = (weight >= min_weight).nonzero().squeeze(1)
        entry, partner, weight = (
            entry.index_select(0, strong),
            partner.index_select(0, strong),
            weight.index_select(0, strong),
        )
    return sides.token1.index_select(0, entry), sides.i.index_select(0, entry), sides.j.index_select(0, partner), weight
