"""The app's model-side pieces on the tiny conformance checkpoints: generation, scoring, inspector, expert outputs."""

import pytest
import torch
from transformers import AutoTokenizer

from explorer.app.expert_output import token_effects
from explorer.app.generation import (
    GenerationSettings,
    Limits,
    compare_on_text,
    decode_tokens,
    removed_mass_share,
    side_by_side,
)
from explorer.app.inspector import experts_firing_most, inspect_prompt, why_next_token
from explorer.app.tokens import RequestRejected, encode, token_pieces
from explorer.model.ablation import Ablation
from explorer.model.naming import ModelShape
from explorer.model.sparse import dense_expert_weights


@pytest.fixture(scope="module")
def tiny(vd_tiny):
    return vd_tiny.load_model()


@pytest.fixture(scope="module")
def tokenizer(vd_tiny):
    return AutoTokenizer.from_pretrained(vd_tiny.checkpoint)


# -- tokens ---------------------------------------------------------------------------------------------
def test_token_pieces_join_to_the_text(tokenizer):
    text = "The capital of France is Paris.\nÜber 日本 ok"
    pieces = token_pieces(tokenizer, tokenizer(text)["input_ids"])
    assert "".join(pieces) == text
    assert "Ü" in pieces


@pytest.mark.parametrize(
    "text, message", [("", "empty"), ("   \n", "empty"), ("x" * 100_000, "too long"), ("ab " * 300, "limit is 100")]
)
def test_encode_refuses_empty_and_huge_text(tokenizer, text, message):
    with pytest.raises(RequestRejected, match=message):
        encode(tokenizer, text, max_tokens=100, what="prompt")


# -- generation -----------------------------------------------------------------------------------------
def test_greedy_decoding_equals_transformers_generate(tiny, vd_tiny):
    prompt = vd_tiny.cases["greedy_prompt"][0]
    ours = list(decode_tokens(tiny, prompt, None, GenerationSettings(max_new_tokens=12)))
    expected = vd_tiny.cases["greedy_output"][0][len(prompt) :]
    assert ours == expected


def test_ablated_decoding_equals_generate_with_ablation(tiny, vd_tiny):
    prompt = vd_tiny.cases["greedy_prompt"][0]
    ablation = Ablation.build(["G1/17", "G2 (3, 4)", (1, 0, 0)], tiny.config)
    ours = list(decode_tokens(tiny, prompt, ablation, GenerationSettings(max_new_tokens=10)))
    theirs = tiny.generate(
        torch.tensor([prompt]), max_new_tokens=10, do_sample=False, ablate=ablation, eos_token_id=None, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert ours == theirs[: len(ours)]


def test_sampling_is_reproducible_and_private(tiny):
    settings = GenerationSettings(max_new_tokens=15, temperature=1.0, top_p=0.9, seed=7)
    torch.manual_seed(0)
    first = list(decode_tokens(tiny, [5, 6, 7], None, settings))
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(decode_tokens(tiny, [5, 6, 7], None, settings)) == first
    assert list(decode_tokens(tiny, [5, 6, 7], None, GenerationSettings(15, 1.0, 0.9, seed=8))) != first


def test_side_by_side_streams_both_and_scores_the_baseline(tiny):
    ablation = Ablation.build([f"G1/{e}" for e in range(0, 256, 3)], tiny.config)
    updates = list(side_by_side(tiny, [5, 6, 7, 8], ablation, GenerationSettings(max_new_tokens=6)))
    assert [len(u.baseline_ids) for u in updates[:-1]] == [1, 2, 3, 4, 5, 6]
    last = updates[-1]
    assert last.finished and last.effect is not None
    assert last.baseline_ids == list(decode_tokens(tiny, [5, 6, 7, 8], None, GenerationSettings(6)))
    assert last.ablated_ids == list(decode_tokens(tiny, [5, 6, 7, 8], ablation, GenerationSettings(6)))
    assert last.effect.token_ids == last.baseline_ids
    assert last.baseline_ids != last.ablated_ids  # a third of G1 switched off changes a random model's output


def test_compare_on_text_matches_a_manual_computation(tiny):
    ids = [3, 14, 15, 92, 65, 35, 89, 79]
    ablation = Ablation.build(["G1/17", "G2/200"], tiny.config)
    effect = compare_on_text(tiny, ids, ablation, first_scored=1)
    with torch.no_grad():
        logits = tiny(torch.tensor([ids]), ablate=ablation).logits[0].log_softmax(-1)
    manual = [float(logits[t - 1, ids[t]]) for t in range(1, len(ids))]
    assert effect.ablated_logprobs == pytest.approx(manual, abs=1e-5)
    assert len(effect.deltas) == len(ids) - 1
    assert effect.ablated_perplexity == pytest.approx(torch.tensor(manual).mean().neg().exp().item(), rel=1e-5)
    empty = compare_on_text(tiny, ids, None)
    assert empty.deltas == pytest.approx([0.0] * 7, abs=1e-6) and empty.removed_mass_share == 0.0


def test_removed_mass_share_by_brute_force(tiny):
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    shape = ModelShape.of(tiny.config)
    ablation = Ablation.build(["G1/17", "L3/40"], tiny.config)
    with torch.no_grad():
        probs = tiny(ids, ablate=ablation, output_router_probs=True).router_probs
    dense = {
        layer: dense_expert_weights(*probs[shape.group_layers(shape.group_of_layer(layer))[0]])
        for layer in range(shape.num_layers)
    }
    removed = sum(float(dense[layer][..., i * 16 + j].sum()) for layer, i, j in ablation.triples())
    total = sum(float(d.sum()) for d in dense.values())
    assert removed_mass_share(probs, ablation, shape) == pytest.approx(removed / total, rel=1e-5)
    everything = [(layer, i, j) for layer in range(4) for i in range(16) for j in range(16)]
    switch_all = Ablation.build(everything, tiny.config)
    with torch.no_grad():
        probs = tiny(ids, ablate=switch_all, output_router_probs=True).router_probs
    assert removed_mass_share(probs, switch_all, shape) == pytest.approx(1.0, rel=1e-5)


def test_settings_limits_have_clear_messages():
    limits = Limits(max_new_tokens=50)
    with pytest.raises(RequestRejected, match="1..50"):
        GenerationSettings(max_new_tokens=51).checked(limits, 10, 256)
    with pytest.raises(RequestRejected, match="context of 256"):
        GenerationSettings(max_new_tokens=50).checked(limits, 240, 256)
    with pytest.raises(RequestRejected, match="top-p"):
        GenerationSettings(top_p=0).checked(limits, 10, 256)


# -- inspector ------------------------------------------------------------------------------------------
def test_inspector_lists_exactly_the_dense_weights_above_threshold(tiny):
    ids = [3, 14, 15, 92, 65, 35]
    inspection = inspect_prompt(tiny, ids, [str(t) for t in ids], min_weight=0.01)
    with torch.no_grad():
        probs = tiny(torch.tensor([ids]), output_router_probs=True).router_probs
    for group in range(2):
        g1, g2 = probs[group * 2]
        dense = dense_expert_weights(g1, g2)[0]  # [T, E*E]
        per_head = torch.einsum("thi,thj->thij", g1[0], g2[0]).flatten(-2)  # [T, H, E*E]
        for t in range(len(ids)):
            listed = inspection.experts_at(t, group)
            expected = (dense[t] >= 0.01).nonzero().squeeze(1).tolist()
            assert sorted(e.expert for e in listed) == expected
            assert [e.weight for e in listed] == sorted((e.weight for e in listed), reverse=True)
            for e in listed:
                assert e.weight == pytest.approx(float(dense[t, e.expert]), abs=1e-6)
                assert e.head_weights == pytest.approx(per_head[t, :, e.expert].tolist(), abs=1e-6)
                assert sum(e.head_weights) == pytest.approx(e.weight, abs=1e-6)
    counts = inspection.active_counts()
    assert counts.shape == (6, 2) and counts.sum() == len(inspection.weight)
    as_json = inspection.to_json(per_group=3)
    assert set(as_json["tokens"][0]["groups"]) == {"G1", "G2"}
    assert len(as_json["tokens"][0]["groups"]["G1"]) <= 3


def test_experts_firing_most_sums_weights_over_the_text(tiny):
    ids = [3, 14, 15, 92, 65, 35, 3, 14]
    inspection = inspect_prompt(tiny, ids, [""] * len(ids))
    top = experts_firing_most(inspection, n=5)
    assert len(top) == 5 and top[0].total_weight >= top[-1].total_weight
    first = top[0].ref
    mask = (inspection.group == first.group) & (inspection.expert == first.flat)
    assert top[0].total_weight == pytest.approx(float(inspection.weight[mask].sum()))
    assert all(f.ref.group == 1 for f in experts_firing_most(inspection, n=5, group=1))


# -- expert outputs -------------------------------------------------------------------------------------
def test_expert_outputs_sum_to_the_moe_layer(conformance):
    """sum_ij w_ij E_ij(x) over every expert of a layer equals the layer's factorised MoE output, and the MoE
    inputs the model returns are the ones its own forward used (the residual stream adds up to its output)."""
    model = conformance.load_model()
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.no_grad():
        out = model.model(ids, use_cache=False, output_moe_inputs=True, output_router_probs=True)
        torch.testing.assert_close(model.model.norm(out.pre_norm_hidden_state), out.last_hidden_state)
        torch.testing.assert_close(model.model.layers[0].router(out.moe_inputs[0]), out.router_probs[0])
        E = model.config.moe_experts
        for layer_index in (0, 1):  # a router layer and a layer reusing its group's routing
            layer = model.model.layers[layer_index]
            x = out.moe_inputs[layer_index]
            g1, g2 = out.router_probs[0]
            weights = dense_expert_weights(g1, g2)  # [1, T, E*E]
            total = sum(
                weights[..., i * E + j, None] * layer.moe.expert_output(x, i, j) for i in range(E) for j in range(E)
            )
            torch.testing.assert_close(total, layer.moe(x, g1, g2), atol=1e-5, rtol=1e-4)


def test_token_effects_rank_the_logit_lens_of_the_mean_output(tiny):
    windows = [([3, 14, 15, 92, 65], 2), ([7, 8, 9], 1)]
    effects = token_effects(tiny, 0, 1, 2, windows, n=5)
    assert effects.contexts == 2 and len(effects.promoted) == 5 and len(effects.suppressed) == 5
    assert effects.promoted[0][1] >= effects.promoted[-1][1] > effects.suppressed[-1][1] >= effects.suppressed[0][1]
    assert token_effects(tiny, 0, 1, 2, []).promoted == []


# -- why this token -------------------------------------------------------------------------------------
def test_expert_outputs_along_a_direction_equal_each_experts_output(conformance):
    model = conformance.load_model()
    gen = torch.Generator().manual_seed(3)
    d, E = model.config.hidden_size, model.config.moe_experts
    x, direction = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    moe = model.model.layers[2].moe
    with torch.no_grad():
        along = moe.expert_outputs_along(x, direction)
        one_by_one = torch.tensor([[float(direction @ moe.expert_output(x, i, j)) for j in range(E)] for i in range(E)])
    torch.testing.assert_close(along, one_by_one, atol=1e-5, rtol=1e-4)


def test_why_next_token_contributions_sum_to_each_groups_moe_output(conformance):
    """The pushes of all active experts of a group sum to its layers' MoE outputs read along the same path,
    and one expert's push is w_ij * r . E_ij(x) summed over the group's layers (checked from the definition)."""
    model = conformance.load_model()
    ids = conformance.cases["input_ids"][0][:12]
    why = why_next_token(model, ids, position=7, n=10_000)
    assert why.token_id == ids[8] and why.experts > 0
    shape = ModelShape.of(model.config)
    for group in range(shape.num_groups):
        pushes = sum(p.logit for p in why.up + why.down if p.ref.group == group)
        layers = sum(why.layer_logits[layer] for layer in shape.group_layers(group))
        assert pushes == pytest.approx(layers, abs=1e-4)
    strongest = why.up[0]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_moe_inputs=True, use_cache=False)
        h = out.pre_norm_hidden_state[0, 7]
        r = (
            model.lm_head.weight[ids[8]]
            * model.model.norm.weight
            * torch.rsqrt(h.pow(2).mean() + model.config.rms_norm_eps)
        )
        by_definition = sum(
            strongest.weight
            * float(
                r
                @ model.model.layers[layer].moe.expert_output(
                    out.moe_inputs[layer][0, 7], strongest.ref.i, strongest.ref.j
                )
            )
            for layer in shape.group_layers(strongest.ref.group)
        )
    assert strongest.logit == pytest.approx(by_definition, rel=1e-4, abs=1e-6)
    assert why.up == sorted(why.up, key=lambda p: -p.logit) and all(p.logit < 0 for p in why.down)
