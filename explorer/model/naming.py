"""Expert naming: "G5/147040" ⇄ (group, i, j), and the group arithmetic of a model's shape.

Naming follows the paper: an expert is (routing group, i, j), written "G5/147040" (flat id i*E + j)
or "G5 (287, 96)". Groups count from 1 in text, as the authors do ("Group 5 = layers 16-19" when
moe_groups = 4); inside the code a group index is 0-based. A routing group's layers share its
router, so an expert's activations belong to the group, while every layer has its own expert
weights: switching an expert off means every layer of its group unless one layer is named
("L17/147040", 0-based decoder layer, or a `(layer, i, j)` triple).
"""

import re
from dataclasses import dataclass, field


def group_number(group: int) -> int:
    """The paper's number of a 0-based routing group (group 4 is "G5"): the authors count groups from 1."""
    return group + 1


def group_name(group: int) -> str:
    """ "G5" for the 0-based group 4."""
    return f"G{group_number(group)}"


@dataclass(frozen=True, order=True)
class ExpertRef:
    """One expert of a routing group: `group` is 0-based; `str()` gives the paper's 1-based "G5/147040"."""

    group: int
    i: int
    j: int
    experts_per_side: int = field(compare=False)

    @classmethod
    def from_flat(cls, group: int, flat: int, experts_per_side: int) -> "ExpertRef":
        """The expert with flat id `flat` = i * E + j of (0-based) `group`."""
        i, j = divmod(int(flat), experts_per_side)
        return cls(int(group), i, j, experts_per_side)

    @property
    def flat(self) -> int:
        return self.i * self.experts_per_side + self.j

    def __str__(self) -> str:
        return f"{group_name(self.group)}/{self.flat}"

    @property
    def pair_label(self) -> str:
        return f"{group_name(self.group)} ({self.i}, {self.j})"


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

    def layer_span(self, group: int) -> str:
        """ "16-19": the decoder layers of a group, 0-based as transformers counts them."""
        layers = self.group_layers(group)
        return f"{layers[0]}-{layers[-1]}"

    def group_help(self) -> str:
        spans = ", ".join(f"{group_name(g)} = layers {self.layer_span(g)}" for g in range(self.num_groups))
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
