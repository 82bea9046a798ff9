"""Switching experts off: spec forms, per-request isolation under threads, and clear errors."""

import threading

import pytest
import torch

from explorer.model.ablation import Ablation
from explorer.model.naming import ExpertRef, ModelShape


@torch.no_grad()
def test_group_spec_equals_its_layer_triples(vd_tiny):
    model = vd_tiny.load_model()
    E, G = model.config.moe_experts, model.config.moe_groups
    spec = f"G2/{5 * E + 11}"  # group 2 = layers 2 and 3
    triples = [(2, 5, 11), (3, 5, 11)]
    by_spec = model(vd_tiny.input_ids, ablate=[spec]).logits
    by_triples = model(vd_tiny.input_ids, ablate=triples).logits
    by_ref = model(vd_tiny.input_ids, ablate=ExpertRef(1, 5, 11, E)).logits
    by_object = model(vd_tiny.input_ids, ablate=Ablation.build([spec], model.config)).logits
    assert G == 2
    torch.testing.assert_close(by_spec, by_triples, atol=0, rtol=0)
    torch.testing.assert_close(by_ref, by_triples, atol=0, rtol=0)
    torch.testing.assert_close(by_object, by_triples, atol=0, rtol=0)


@torch.no_grad()
def test_empty_ablation_is_the_plain_forward(vd_tiny):
    model = vd_tiny.load_model()
    plain = model(vd_tiny.input_ids).logits
    torch.testing.assert_close(model(vd_tiny.input_ids, ablate=[]).logits, plain, atol=0, rtol=0)


@torch.no_grad()
def test_switching_off_every_expert_removes_the_moe(conformance, ablation_path):
    """With all E*E weights zeroed every MoE output is zero: the model equals one whose MoE returns 0."""
    model = conformance.load_model()
    E, L = model.config.moe_experts, model.config.num_hidden_layers
    everything = [(layer, i, j) for layer in range(L) for i in range(E) for j in range(E)]
    ablated = model(conformance.input_ids, ablate=everything).logits
    for layer in model.model.layers:
        layer.moe.forward_original = layer.moe.forward
        layer.moe.forward = lambda x, *args, **kwargs: torch.zeros_like(x)
    try:
        no_moe = model(conformance.input_ids).logits
    finally:
        for layer in model.model.layers:
            layer.moe.forward = layer.moe.forward_original
    torch.testing.assert_close(ablated, no_moe, atol=1e-4, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_layer_with_experts_off_equals_the_definition(conformance, seed, ablation_path):
    """The sparse subtraction equals the definition: plain output minus w_ij E_ij(x) for every switched-off
    expert at every token, with a batch of two rows (the flat token index spans rows)."""
    model = conformance.load_model()
    E = model.config.moe_experts
    gen = torch.Generator().manual_seed(seed)
    ids = conformance.input_ids[:2]
    out = model.model(ids, use_cache=False, output_moe_inputs=True, output_router_probs=True)
    layer = model.model.layers[1]
    x, (g1, g2) = out.moe_inputs[1], out.router_probs[0]
    flat = torch.randperm(E * E, generator=gen)[: 40 + 60 * seed]
    rows, cols = flat // E, flat % E
    expected = layer.moe(x, g1, g2).clone()
    w = (g1.index_select(-1, rows) * g2.index_select(-1, cols)).sum(-2)  # dense [B, T, A]: the definition
    assert (w > 0).any(), "no switched-off expert is active: the test would check nothing"
    for b, t, a in (w > 0).nonzero().tolist():
        expected[b, t] -= w[b, t, a] * layer.moe.expert_output(x[b, t], int(rows[a]), int(cols[a]))
    torch.testing.assert_close(layer.moe(x, g1, g2, switched_off=(rows, cols)), expected, atol=1e-5, rtol=1e-4)


def test_two_threads_generate_with_different_ablations(vd_tiny):
    model = vd_tiny.load_model()
    prompt = torch.tensor(vd_tiny.cases["greedy_prompt"])
    sets = {"a": vd_tiny.cases["ablations"][0], "b": vd_tiny.cases["ablations"][2]}

    def generate(ablate):
        with torch.no_grad():
            return model.generate(prompt, max_new_tokens=16, do_sample=False, ablate=ablate).tolist()

    alone = {name: generate(ablate) for name, ablate in sets.items()}
    assert alone["a"] != alone["b"], "the two ablation sets should change the generation differently"
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def worker(name):
        try:
            barrier.wait()
            for round_ in range(5):
                results[name, round_] = generate(sets[name])
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(name,)) for name in sets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for (name, _), tokens in results.items():
        assert tokens == alone[name]


@torch.no_grad()
def test_sampled_generation_with_ablation_and_seed_is_reproducible(vd_tiny):
    model = vd_tiny.load_model()
    prompt = torch.tensor(vd_tiny.cases["greedy_prompt"])
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=20, ablate=["G1/17"]).tolist())
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    "entry, message",
    [
        ((4, 0, 0), r"\(4, 0, 0\): layer 4 is outside the model \(valid: 0..3\)"),
        ((0, 16, 0), r"i 16 is outside the model \(valid: 0..15\)"),
        ((0, 0, -1), r"j -1 is outside the model \(valid: 0..15\)"),
        ("G3/1", r"G3 is outside the model \(valid: G1..G2\)"),
        ("G1/256", r"expert id 256 is outside the model \(valid: 0..255\)"),
        ("bogus", r"'bogus' is not an expert"),
        ((0, 1), r"is not an ablation entry"),
    ],
)
def test_bad_ablation_entries(vd_tiny, entry, message):
    model = vd_tiny.load_model()
    with pytest.raises(ValueError, match=message):
        model(vd_tiny.input_ids, ablate=[entry])


def test_ablation_built_for_another_model_is_refused(vd_tiny):
    model = vd_tiny.load_model()
    other = Ablation.build([(0, 1, 1)], ModelShape(num_layers=24, experts_per_side=512, layers_per_group=4))
    with pytest.raises(ValueError, match="built for"):
        model(vd_tiny.input_ids, ablate=other)


def test_ablation_dedupes_and_counts():
    shape = ModelShape(4, 16, 2)
    ablation = Ablation.build(["G1/17", (0, 1, 1), (1, 1, 1), "L3 (2, 3)"], shape)
    assert len(ablation) == 3 and ablation.triples() == [(0, 1, 1), (1, 1, 1), (3, 2, 3)]
