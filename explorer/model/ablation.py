"""Switching experts off for one call: an immutable set of (layer, i, j) per request, never model state.

Entries are `(layer, i, j)` triples, ExpertRefs (every layer of the expert's routing group) or spec
strings ("G5/147040", "L17/147040"; see `explorer.model.naming`).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from explorer.model.naming import ExpertRef, ModelShape, _check_range, parse_expert_spec


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
