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


def _heads_selecting(g: torch.Tensor) -> torch.Tensor:
    """[N, E] int64 bitmask: bit h is set where head h selects the entry (g [N, H, E] > 0)."""
    head_bit = 1 << torch.arange(g.shape[1], device=g.device, dtype=torch.long)
    return ((g > 0).long() * head_bit[:, None]).sum(1)


def sparse_expert_weights(
    g1: torch.Tensor, g2: torch.Tensor, min_weight: float = 0.0, max_chunk_pairs: int = 1 << 23
) -> SparseExpertWeights:
    """Non-zero w_ij of every token from (g1, g2) [B, T, H, E], never building [tokens, E*E].

    Each head selects a few entries per side, so each (token, head) proposes k1 * k2 candidate pairs.
    A pair selected by several heads is kept once, by its first head (a bitmask of the heads selecting
    each entry tells which), and only those rare pairs pay for the full sum over heads. Weights below
    `min_weight` (or zero) are dropped. Tokens are processed in chunks of about `max_chunk_pairs`
    candidates, so memory stays bounded for any batch.
    """
    if g1.shape != g2.shape or g1.dim() != 4:
        raise ValueError(f"g1 and g2 must both be [B, T, H, E]; got {tuple(g1.shape)} and {tuple(g2.shape)}.")
    B, T, H, E = g1.shape
    if H > 62:
        raise ValueError(f"At most 62 router heads are supported (a head bitmask is int64); got {H}.")
    g1, g2 = g1.reshape(B * T, H, E).float(), g2.reshape(B * T, H, E).float()
    device = g1.device
    pairs_per_token = (g1 > 0).sum((-2, -1)) * (g2 > 0).sum(-1).amax(-1)  # candidates per token  [N]
    chunk_of_token = (pairs_per_token.cumsum(0) - pairs_per_token) // max_chunk_pairs  # non-decreasing
    parts, lo = [], 0
    for size in torch.unique_consecutive(chunk_of_token, return_counts=True)[1].tolist():
        parts.append(_sparse_chunk(g1[lo : lo + size], g2[lo : lo + size], min_weight, lo, T, E))
        lo += size
    if not parts:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return SparseExpertWeights(empty, empty, empty, torch.empty(0, device=device))
    return SparseExpertWeights(*(torch.cat(column) for column in zip(*parts, strict=True)))


def _sparse_chunk(g1, g2, min_weight, first_token, T, E):
    """One chunk of tokens: every selected entry i of g1 meets the (zero-padded) selected entries j of
    g2 in the same (token, head); pairs seen by an earlier head are dropped, so each (i, j) appears once."""
    N, H, _ = g1.shape
    token, head, i = (g1 > 0).nonzero(as_tuple=True)  # side-1 entries
    value1, segment = g1[token, head, i], token * H + head
    k2 = int((g2 > 0).sum(-1).max())
    value2, j = g2.topk(k2, dim=-1)  # [N, H, k2], zero-padded where a head selects fewer
    heads2 = _heads_selecting(g2).gather(1, j.view(N, H * k2)).view(N * H, k2)
    value2, j, heads2 = (x.reshape(N * H, k2).index_select(0, segment) for x in (value2, j, heads2))
    shared = _heads_selecting(g1)[token, i][:, None] & heads2  # heads that select both i and j
    earlier = ((1 << head) - 1)[:, None]
    keep = ((value2 > 0) & ((shared & earlier) == 0)).view(-1).nonzero().squeeze(1)  # flat (entry, slot)
    entry = keep // k2
    token, head, i = token.index_select(0, entry), head.index_select(0, entry), i.index_select(0, entry)
    j, shared = j.view(-1).index_select(0, keep), shared.view(-1).index_select(0, keep)
    weight = value1.index_select(0, entry) * value2.view(-1).index_select(0, keep)
    multi = (shared != (1 << head)).nonzero().squeeze(1)  # selected by other heads too: sum over all heads
    if multi.numel():
        t, mi, mj = token[multi], i[multi], j[multi]
        weight[multi] = (g1[t, :, mi] * g2[t, :, mj]).sum(-1)
    if min_weight > 0:
        strong = (weight >= min_weight).nonzero().squeeze(1)
        token, i, j, weight = token[strong], i[strong], j[strong], weight[strong]
    token = token + first_token
    return token // T, token % T, i * E + j, weight
