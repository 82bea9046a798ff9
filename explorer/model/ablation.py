"""Switching experts off for one call: an immutable set of (layer, i, j) per request, never model state.

Entries are `(layer, i, j)` triples, ExpertRefs (every layer of the expert's routing group) or spec
strings ("G5/147040", "L17/147040"; see `explorer.model.naming`). A RowAblation gives each row of a
batch its own set, so one forward serves many sets (the expert scores switch one expert off per row).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from explorer.model.naming import ExpertRef, ModelShape, _check_range, parse_expert_spec
from explorer.model.sparse import (
    SwitchedOffMatrices,
    SwitchedOffSet,
    switched_off_matrices,
    switched_off_set,
)


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
        if isinstance(ablate, (Ablation, RowAblation)):
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

    def layer_set(self, layer: int, device) -> SwitchedOffSet | None:
        """The experts switched off in `layer` as the forward reads them; None if none. Layers switching the same
        experts off (every layer of a group, for a group spec) get the same object, so a forward computes their
        weights once per routing group (see SwitchingOff)."""
        key = (layer, "set", str(device))
        if key not in self._device_cache:
            pairs = dict(self.pairs).get(layer)
            found = None
            if pairs:
                same = ("set", pairs, str(device))
                if same not in self._device_cache:
                    self._device_cache[same] = switched_off_set(
                        *self.layer_pairs(layer, device), self.shape.experts_per_side
                    )
                found = self._device_cache[same]
            self._device_cache[key] = found
        return self._device_cache[key]

    def triples(self) -> list[tuple[int, int, int]]:
        return [(layer, i, j) for layer, pairs in self.pairs for i, j in pairs]


@dataclass(frozen=True, eq=False)
class RowAblation:
    """A switched-off set per batch row: row r runs exactly as it would alone with its own set, so one forward
    serves many sets. Stored flat, one entry per (row, layer, i, j); build it with `RowAblation.build` (any
    ablation per row) or `RowAblation.group_experts` (one expert per row, every layer of its group)."""

    shape: ModelShape
    batch_size: int
    row: torch.Tensor  # [N] batch row of each entry
    layer: torch.Tensor  # [N] decoder layer
    i: torch.Tensor  # [N]
    j: torch.Tensor  # [N]
    _device_cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, per_row: Sequence, config) -> "RowAblation":
        """per_row[r]: what row r switches off (anything `Ablation.coerce` takes; None or [] for nothing)."""
        shape = config if isinstance(config, ModelShape) else ModelShape.of(config)
        triples = []
        for r, ablate in enumerate(per_row):
            if isinstance(ablate, Ablation):
                if ablate.shape != shape:
                    raise ValueError(f"Row {r}: this ablation was built for {ablate.shape}, not for {shape}.")
            else:
                ablate = Ablation.build([ablate] if isinstance(ablate, (str, ExpertRef)) else ablate or [], shape)
            triples += [(r, *triple) for triple in ablate.triples()]
        row, layer, i, j = torch.tensor(triples, dtype=torch.long).reshape(-1, 4).T
        return cls(shape, len(per_row), row, layer, i, j)

    @classmethod
    def group_experts(cls, shape: ModelShape, group: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> "RowAblation":
        """Row r switches off expert (i[r], j[r]) in every layer of routing group group[r] (0-based)."""
        group, i, j = (torch.as_tensor(t, dtype=torch.long).cpu() for t in (group, i, j))
        E = shape.experts_per_side
        if not _within(group, shape.num_groups) or not (_within(i, E) and _within(j, E)):
            raise ValueError(f"Groups must lie in 0..{shape.num_groups - 1}, i and j in 0..{E - 1}.")
        offsets = torch.arange(shape.layers_per_group)
        layer = group[:, None] * shape.layers_per_group + offsets[None, :]  # [rows, G]
        inside = layer < shape.num_layers  # the last group may be shorter
        row = torch.arange(len(group))[:, None].expand_as(layer)
        wide = (i[:, None].expand_as(layer), j[:, None].expand_as(layer))
        return cls(shape, len(group), row[inside], layer[inside], wide[0][inside], wide[1][inside])

    def __len__(self) -> int:
        return len(self.row)

    def __bool__(self) -> bool:
        return len(self.row) > 0

    def layer_pairs(self, layer: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(rows i, cols j, batch rows) LongTensors of the entries of `layer`, on `device`; None if none."""
        key = (layer, str(device))
        if key not in self._device_cache:
            chosen = self.layer == layer
            found = tuple(t[chosen].to(device) for t in (self.i, self.j, self.row)) if chosen.any() else None
            self._device_cache[key] = found
        return self._device_cache[key]

    def layer_set(self, layer: int, device) -> SwitchedOffSet | None:
        """The entries of `layer` as the forward reads them; None if none. Layers with the same entries (every
        layer of a group, for `group_experts`) get the same object, so their weights are computed once."""
        key = (layer, "set", str(device))
        if key not in self._device_cache:
            pairs = self.layer_pairs(layer, device)
            found = None
            if pairs is not None:
                i, j, row = pairs
                same = ("set", str(device), *(t.cpu().numpy().tobytes() for t in pairs))
                if same not in self._device_cache:
                    E = self.shape.experts_per_side
                    self._device_cache[same] = switched_off_set(i, j, E, row, batch_size=self.batch_size)
                found = self._device_cache[same]
            self._device_cache[key] = found
        return self._device_cache[key]


class SwitchingOff:
    """One forward pass's view of an ablation: per layer, the weights of its switched-off experts where they are
    non-zero. The layers of a routing group share its routing, so layers that switch the same experts off
    (a group spec) share one computation. Made per call, so concurrent calls share nothing."""

    def __init__(self, ablation: "Ablation | RowAblation"):
        self.ablation = ablation
        self._last = None  # (set, g1, g2, matrices) of the last layer asked for

    def matrices(self, layer: int, g1: torch.Tensor, g2: torch.Tensor) -> SwitchedOffMatrices | None:
        switched_off = self.ablation.layer_set(layer, g1.device)
        if switched_off is None:
            return None
        last = self._last
        if last is not None and last[0] is switched_off and last[1] is g1 and last[2] is g2:
            return last[3]
        matrices = switched_off_matrices(g1.float(), g2.float(), switched_off)  # float32: the gating sums' precision
        self._last = (switched_off, g1, g2, matrices)
        return matrices


def _within(values: torch.Tensor, limit: int) -> bool:
    return len(values) == 0 or (int(values.min()) >= 0 and int(values.max()) < limit)
