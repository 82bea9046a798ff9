"""A switched-off set against its control: the control sampler (same size, same groups and layers, matched
densities, seeded, disjoint) and the per-token KL / Δ log p numbers, recomputed here from the logits."""

import numpy as np
import pytest
import torch

from explorer.app.control import CONTROL_POOL, NoControl, control_set
from explorer.app.generation import GenerationSettings, compare_on_text, side_by_side
from explorer.model.ablation import Ablation
from explorer.model.naming import ExpertRef, ModelShape, parse_expert_spec

SHAPE = ModelShape(num_layers=4, experts_per_side=12, layers_per_group=2)  # 2 groups of 144 experts
E = SHAPE.experts_per_side


def _densities(seed: int = 3) -> dict[int, np.ndarray]:
    """Per group [E, E] densities: log-spread, a fifth never active (density 0), as in a real index."""
    rng = np.random.default_rng(seed)
    found = {}
    for group in range(SHAPE.num_groups):
        density = 10 ** rng.uniform(-5, -1, size=E * E)
        density[rng.random(E * E) < 0.2] = 0.0
        found[group] = density.reshape(E, E)
    return found


DENSITIES = _densities()
CHOSEN = ["G1/5", "G1/40", "G1/77", "G2/3", "G2/100", "L1/9", "L3/50", "L3/51"]


def _chosen_ablation(entries=CHOSEN) -> Ablation:
    return Ablation.build(entries, SHAPE)


def _by_layer(ablation: Ablation) -> dict[int, int]:
    return {layer: len(pairs) for layer, pairs in ablation.pairs}


def _group_flats(ablation: Ablation) -> dict[int, set[int]]:
    flats: dict[int, set[int]] = {}
    for layer, i, j in ablation.triples():
        flats.setdefault(SHAPE.group_of_layer(layer), set()).add(i * E + j)
    return flats


def test_the_control_has_the_same_size_in_the_same_layers_and_never_overlaps():
    chosen = _chosen_ablation()
    control = control_set(chosen, SHAPE, DENSITIES.__getitem__)
    assert len(control.ablation) == len(chosen)  # as many (layer, expert) pairs
    assert _by_layer(control.ablation) == _by_layer(chosen)  # in the same layers
    assert control.experts == len(CHOSEN)
    for group, flats in _group_flats(control.ablation).items():
        assert not flats & _group_flats(chosen)[group], "a control expert is in the set"
    assert len(set(control.text.split(", "))) == len(CHOSEN)  # none drawn twice
    # group-wide experts get group-wide controls, one layer's expert a control in that layer
    for own, other in control.pairs:
        own_kind, own_index, *_ = parse_expert_spec(own, SHAPE)
        other_kind, other_index, *_ = parse_expert_spec(other, SHAPE)
        assert (own_kind, own_index) == (other_kind, other_index)
    # and the control's text is a set the page accepts, naming exactly its ablation
    assert Ablation.build(control.text.split(", "), SHAPE) == control.ablation


def _density_of(name: str) -> float:
    kind, index, i, j = parse_expert_spec(name, SHAPE)
    group = index if kind == "G" else SHAPE.group_of_layer(index)
    return float(DENSITIES[group][i, j])


def test_each_control_expert_is_among_the_nearest_densities_outside_the_set():
    chosen = _chosen_ablation()
    control = control_set(chosen, SHAPE, DENSITIES.__getitem__)
    excluded = _group_flats(chosen)
    for own, other in control.pairs:
        kind, index, i, j = parse_expert_spec(own, SHAPE)
        group = index if kind == "G" else SHAPE.group_of_layer(index)
        outside = np.array([d for flat, d in enumerate(DENSITIES[group].ravel()) if flat not in excluded[group]])
        gaps = np.sort(np.abs(outside - _density_of(own)))
        # nearest among the unused ones: at most the POOL-th gap once the controls drawn before are set aside
        assert abs(_density_of(other) - _density_of(own)) <= gaps[CONTROL_POOL + len(CHOSEN)] + 1e-15
    assert control.set_density == pytest.approx(np.mean([_density_of(own) for own, _ in control.pairs]))
    assert control.control_density == pytest.approx(np.mean([_density_of(other) for _, other in control.pairs]))
    assert control.control_density == pytest.approx(control.set_density, rel=0.25)


def test_a_never_active_expert_gets_a_never_active_control_and_busy_experts_busy_ones():
    never = [f"G1/{flat}" for flat in np.flatnonzero(DENSITIES[0].ravel() == 0)[:5]]
    busiest = [f"G2/{flat}" for flat in np.argsort(-DENSITIES[1].ravel())[:5]]
    control = control_set(_chosen_ablation(never + busiest), SHAPE, DENSITIES.__getitem__)
    for own, other in control.pairs:
        if own in never:
            assert _density_of(other) == 0
        else:  # the 5 busiest are in the set: their controls are the next busiest ones
            assert _density_of(other) >= np.sort(DENSITIES[1].ravel())[-(5 + 5 + CONTROL_POOL)]


def test_the_control_is_seeded():
    chosen = _chosen_ablation()
    first = control_set(chosen, SHAPE, DENSITIES.__getitem__, seed=0)
    assert control_set(chosen, SHAPE, DENSITIES.__getitem__, seed=0) == first
    others = {control_set(chosen, SHAPE, DENSITIES.__getitem__, seed=seed).text for seed in range(1, 6)}
    assert others - {first.text}, "other seeds should draw other controls"


def test_a_set_holding_most_of_a_group_has_no_control():
    most = [ExpertRef.from_flat(0, flat, E) for flat in range(E * E // 2 + 1)]
    with pytest.raises(NoControl, match="no control of the same size"):
        control_set(Ablation.build(most, SHAPE), SHAPE, DENSITIES.__getitem__)


# -- KL and Δ log p, set and control, on the tiny model ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(vd_tiny):
    return vd_tiny.load_model()


def _control_for(model, chosen: Ablation, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = ModelShape.of(model.config)
    densities = {g: rng.random((shape.experts_per_side,) * 2) for g in range(shape.num_groups)}
    return control_set(chosen, shape, densities.__getitem__)


def _logprobs(model, ids, ablation):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids]), ablate=ablation).logits[0].double(), -1)


def test_kl_and_delta_log_p_of_set_and_control_recomputed_from_the_logits(tiny):
    ids, first = [5, 9, 14, 3, 77, 21, 8, 40, 2, 13], 3
    chosen = Ablation.build([f"G1/{flat}" for flat in range(0, 256, 5)] + ["L2/7"], tiny.config)
    control = _control_for(tiny, chosen)
    effect = compare_on_text(tiny, ids, chosen, first_scored=first, control=control)

    plain, ablated, controlled = (_logprobs(tiny, ids, a) for a in (None, chosen, control.ablation))
    rows, targets = torch.arange(first - 1, len(ids) - 1), torch.tensor(ids[first:])

    def kl(log_q):  # KL(plain || q) per scored position, by its definition
        return (plain[rows].exp() * (plain[rows] - log_q[rows])).sum(-1)

    def delta(log_q):
        return log_q[rows, targets] - plain[rows, targets]

    assert effect.kl == pytest.approx(kl(ablated).tolist(), abs=1e-6)
    assert effect.deltas == pytest.approx(delta(ablated).tolist(), abs=1e-5)
    assert effect.control.kl == pytest.approx(kl(controlled).tolist(), abs=1e-6)
    assert effect.control.deltas == pytest.approx(delta(controlled).tolist(), abs=1e-5)
    assert len(effect.kl) == len(effect.control.kl) == len(ids) - first
    assert all(value >= 0 for value in effect.kl + effect.control.kl) and max(effect.kl) > 0
    assert effect.specificity == pytest.approx(float(kl(ablated).mean() / kl(controlled).mean()), rel=1e-5)
    # torch's own KL agrees with the definition
    torch_kl = torch.nn.functional.kl_div(ablated[rows], plain[rows], log_target=True, reduction="none").sum(-1)
    assert effect.kl == pytest.approx(torch_kl.tolist(), abs=1e-6)

    answer = effect.to_json()
    for key in ("baseline_logprobs", "ablated_logprobs", "baseline_perplexity", "ablated_perplexity"):
        assert key in answer  # the old keys stay
    assert answer["mean_kl"] == pytest.approx(float(kl(ablated).mean()), abs=1e-6)
    assert answer["loss_rise"] == pytest.approx(-float(delta(ablated).mean()), abs=1e-5)
    assert answer["control"]["ablate"] == control.text
    assert answer["control"]["mean_kl"] == pytest.approx(float(kl(controlled).mean()), abs=1e-6)
    assert answer["specificity"] == pytest.approx(effect.specificity)


def test_without_a_control_the_effect_says_none(tiny):
    effect = compare_on_text(tiny, [5, 9, 14, 3], Ablation.build(["G1/5"], tiny.config))
    assert effect.control is None and effect.specificity is None
    plain = compare_on_text(tiny, [5, 9, 14, 3], None)
    assert plain.kl == pytest.approx([0.0] * 3, abs=1e-9)


def test_side_by_side_scores_the_control_on_the_plain_continuation(tiny):
    chosen = Ablation.build([f"G2/{flat}" for flat in range(0, 256, 7)], tiny.config)
    control = _control_for(tiny, chosen)
    prompt = [5, 6, 7, 8]
    last = list(side_by_side(tiny, prompt, chosen, GenerationSettings(max_new_tokens=6), control))[-1]
    again = compare_on_text(tiny, prompt + last.baseline_ids, chosen, first_scored=len(prompt), control=control)
    assert last.effect.control.kl == pytest.approx(again.control.kl, abs=1e-6)
    assert last.effect.specificity == pytest.approx(again.specificity, rel=1e-5)
