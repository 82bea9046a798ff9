"""A control for a switched-off set: as many experts, of the same groups and layers, as often active, drawn at random.

Switching experts off always costs something; the question is whether the chosen set costs more than any set like
it would. The control answers that: for each expert of the set, a random expert of the same routing group whose
density in the index (the share of indexed tokens where it is active) is among the CONTROL_POOL nearest to its
own, never one of the set's (in any layer of the group) and never picked twice. An expert switched off in every
layer of its group gets a control switched off in every layer of that group; one switched off in one layer only
(`L3/17`) gets a control in that layer. So the control switches off exactly as many (layer, expert) pairs as the
set, in the same layers. The draw is seeded (numpy's PCG64 with `seed`), so the same set always gets the same
control, on any machine.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from explorer.model.ablation import Ablation
from explorer.model.naming import ExpertRef, ModelShape

CONTROL_POOL = 4  # a control is drawn among this many nearest densities
CONTROL_SEED = 0


class NoControl(ValueError):
    """No disjoint control of the same size exists (the set holds most of a group)."""


@dataclass(frozen=True)
class ControlSet:
    ablation: Ablation
    text: str  # the control as an ablation text ("G1/5, L3/17"), to switch it off by hand
    experts: int  # distinct (group or layer, expert) units, as many as the set's
    set_density: float  # mean index density of the set's experts
    control_density: float  # mean index density of the control's experts
    seed: int
    pairs: tuple[tuple[str, str], ...] = ()  # (the set's expert, its control), by name

    def to_json(self) -> dict:
        return {
            "ablate": self.text,
            "experts": self.experts,
            "set_mean_density": self.set_density,
            "control_mean_density": self.control_density,
            "seed": self.seed,
        }


def _units(ablation: Ablation, shape: ModelShape) -> dict[int, list[tuple[int | None, int]]]:
    """Per group: (layer or None for every layer of the group, flat id) of each switched-off unit, sorted."""
    E = shape.experts_per_side
    per_layer = {layer: set(pairs) for layer, pairs in ablation.pairs}
    units: dict[int, list[tuple[int | None, int]]] = {}
    for group in range(shape.num_groups):
        layers = list(shape.group_layers(group))
        in_every = set.intersection(*(per_layer.get(layer, set()) for layer in layers))
        found = [(None, i * E + j) for i, j in sorted(in_every)]
        found += [(layer, i * E + j) for layer in layers for i, j in sorted(per_layer.get(layer, set()) - in_every)]
        if found:
            units[group] = found
    return units


def _unit_name(group: int, layer: int | None, flat: int, E: int) -> str:
    """ "G1/5" for an expert of every layer of its group, "L3/5" for one layer's."""
    return str(ExpertRef.from_flat(group, flat, E)) if layer is None else f"L{layer}/{flat}"


def _nearest_unused(sorted_density: np.ndarray, used: np.ndarray, density: float, pool: int) -> list[int]:
    """Positions in sorted_density of up to `pool` unused entries nearest to `density` (walking out both ways)."""
    right = int(np.searchsorted(sorted_density, density))
    left = right - 1
    found: list[int] = []
    while len(found) < pool and (left >= 0 or right < len(sorted_density)):
        if left >= 0 and used[left]:
            left -= 1
            continue
        if right < len(sorted_density) and used[right]:
            right += 1
            continue
        take_left = right >= len(sorted_density) or (
            left >= 0 and density - sorted_density[left] <= sorted_density[right] - density
        )
        if take_left:
            found.append(left)
            left -= 1
        else:
            found.append(right)
            right += 1
    return found


def control_set(
    ablation: Ablation, shape: ModelShape, densities: Callable[[int], np.ndarray], seed: int = CONTROL_SEED
) -> ControlSet:
    """The control of a set (module docstring); densities(group) gives the group's [E, E] index densities.

    Raises NoControl when a group has fewer experts outside the set than the set has units in it."""
    rng = np.random.default_rng(seed)
    E = shape.experts_per_side
    entries: list = []
    matched: list[tuple[str, str]] = []
    set_densities: list[float] = []
    control_densities: list[float] = []
    for group, units in _units(ablation, shape).items():
        density = np.asarray(densities(group), dtype=float).ravel()
        excluded = np.zeros(E * E, dtype=bool)
        excluded[[flat for _, flat in units]] = True
        candidates = np.flatnonzero(~excluded)
        if len(candidates) < len(units):
            raise NoControl(
                f"The set switches off {len(units):,} experts of G{group + 1}, which leaves only"
                f" {len(candidates):,} others: no control of the same size."
            )
        # by density, ties in a random order (so equal densities, e.g. never active, are drawn evenly)
        order = np.lexsort((rng.random(len(candidates)), density[candidates]))
        candidates, sorted_density = candidates[order], density[candidates[order]]
        used = np.zeros(len(candidates), dtype=bool)
        for layer, flat in units:
            nearest = _nearest_unused(sorted_density, used, density[flat], CONTROL_POOL)
            pick = nearest[int(rng.integers(len(nearest)))]
            used[pick] = True
            ref = ExpertRef.from_flat(group, int(candidates[pick]), E)
            entries.append(ref if layer is None else (layer, ref.i, ref.j))
            matched.append((_unit_name(group, layer, flat, E), _unit_name(group, layer, ref.flat, E)))
            set_densities.append(float(density[flat]))
            control_densities.append(float(sorted_density[pick]))
    return ControlSet(
        Ablation.build(entries, shape),
        ", ".join(control for _, control in matched),
        len(matched),
        float(np.mean(set_densities)) if set_densities else 0.0,
        float(np.mean(control_densities)) if control_densities else 0.0,
        seed,
        tuple(matched),
    )
