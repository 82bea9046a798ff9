"""A switched-off set per batch row (RowAblation): each row of one forward equals that row run alone with its set."""

import pytest
import torch

from explorer.model.ablation import Ablation, RowAblation
from explorer.model.naming import ExpertRef, ModelShape


def _random_sets(config, rows: int, seed: int) -> list[list]:
    """Per row: nothing, one group-level expert, or a few (layer, i, j) triples of several layers."""
    gen = torch.Generator().manual_seed(seed)
    E, L = config.moe_experts, config.num_hidden_layers
    shape = ModelShape.of(config)
    sets = []
    for r in range(rows):
        kind = r % 3
        if kind == 0:
            sets.append([])
        elif kind == 1:
            group = int(torch.randint(shape.num_groups, (1,), generator=gen))
            sets.append([ExpertRef.from_flat(group, int(torch.randint(E * E, (1,), generator=gen)), E)])
        else:
            picks = torch.randint(E, (12, 2), generator=gen)
            layers = torch.randint(L, (12,), generator=gen)
            sets.append([(int(l), int(i), int(j)) for l, (i, j) in zip(layers, picks, strict=True)])
    return sets


@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1])
def test_each_row_equals_its_own_run(conformance, seed):
    model = conformance.load_model()
    ids = conformance.input_ids
    rows = ids.shape[0] * 3
    batch = ids.repeat(3, 1)
    sets = _random_sets(model.config, rows, seed)
    together = model(batch, ablate=RowAblation.build(sets, model.config)).logits
    changed = 0
    for r, chosen in enumerate(sets):
        alone = model(batch[r : r + 1], ablate=chosen).logits[0]
        torch.testing.assert_close(together[r], alone, atol=1e-5, rtol=1e-4)
        changed += not torch.equal(alone, model(batch[r : r + 1]).logits[0])
    assert changed >= 2, "no row's set changed its logits: the test would check nothing"


@torch.no_grad()
def test_group_experts_switch_off_every_layer_of_the_group(vd_tiny):
    model = vd_tiny.load_model()
    shape = ModelShape.of(model.config)
    E = shape.experts_per_side
    ids = vd_tiny.input_ids
    groups, flats = torch.tensor([0, 1] * (ids.shape[0] // 2 + 1))[: ids.shape[0]], torch.arange(ids.shape[0]) * 37
    by_tensor = RowAblation.group_experts(shape, groups, flats // E, flats % E)
    refs = [ExpertRef.from_flat(int(g), int(f), E) for g, f in zip(groups, flats, strict=True)]
    by_refs = RowAblation.build(refs, model.config)
    assert len(by_tensor) == len(by_refs) == ids.shape[0] * shape.layers_per_group
    torch.testing.assert_close(model(ids, ablate=by_tensor).logits, model(ids, ablate=by_refs).logits, atol=0, rtol=0)


def test_a_row_ablation_must_fit_the_batch(vd_tiny):
    model = vd_tiny.load_model()
    ablation = RowAblation.build([["G1/3"], []], model.config)
    with pytest.raises(ValueError, match="2 rows"):
        model(vd_tiny.input_ids[:1], ablate=ablation)
    with pytest.raises(ValueError, match="outside the model"):
        RowAblation.build([["G9/3"]], model.config)
    with pytest.raises(ValueError, match="built for"):
        RowAblation.build([Ablation.build(["G1/3"], ModelShape(8, 16, 2))], model.config)
