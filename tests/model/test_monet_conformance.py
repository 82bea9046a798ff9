"""Our Monet reproduces the reference implementation's outputs (../shared/conformance) within 1e-4 in float32."""

import json
import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from explorer.model.monet import MonetConfig, MonetForCausalLM, MonetModel

ATOL = 1e-4


@torch.no_grad()
def test_logits(conformance, model):
    logits = model(conformance.input_ids).logits
    torch.testing.assert_close(logits, conformance.expected["logits"], atol=ATOL, rtol=0)


@torch.no_grad()
def test_left_padded_batch_on_unpadded_positions(conformance, model):
    logits = model(conformance.input_ids, attention_mask=conformance.attention_mask).logits
    real = conformance.attention_mask.bool()
    torch.testing.assert_close(logits[real], conformance.expected["logits_padded"][real], atol=ATOL, rtol=0)


@torch.no_grad()
def test_router_probs_per_layer(conformance, model):
    router_probs = model(conformance.input_ids, output_router_probs=True).router_probs
    assert len(router_probs) == model.config.num_hidden_layers
    for layer, probs in enumerate(router_probs):
        if layer % model.config.moe_groups:
            assert probs is None
            continue
        g1, g2 = probs
        torch.testing.assert_close(g1, conformance.expected[f"router.{layer}.g1"], atol=ATOL, rtol=0)
        torch.testing.assert_close(g2, conformance.expected[f"router.{layer}.g2"], atol=ATOL, rtol=0)


@torch.no_grad()
def test_router_probs_off_by_default(conformance, model):
    assert model(conformance.input_ids).router_probs is None


@torch.no_grad()
@pytest.mark.parametrize("case", [0, 1, 2])
def test_ablation_cases(conformance, model, case, ablation_path):
    triples = conformance.cases["ablations"][case]
    logits = model(conformance.input_ids, ablate=triples).logits
    torch.testing.assert_close(logits, conformance.expected[f"ablation.{case}.logits"], atol=ATOL, rtol=0)


@torch.no_grad()
def test_greedy_generation_with_cache(conformance, model):
    prompt = torch.tensor(conformance.cases["greedy_prompt"])
    expected = conformance.cases["greedy_output"]
    new_tokens = len(expected[0]) - prompt.shape[1]
    output = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=True)
    assert output.tolist() == expected


def test_auto_classes_return_our_classes(conformance):
    assert isinstance(AutoConfig.from_pretrained(conformance.checkpoint), MonetConfig)
    assert type(AutoModel.from_pretrained(conformance.checkpoint)) is MonetModel
    assert type(AutoModelForCausalLM.from_pretrained(conformance.checkpoint)) is MonetForCausalLM


def test_published_legacy_fields_load_without_remote_code(conformance, tmp_path):
    """The published config.json points auto_map at remote code that no longer imports: it must never run."""
    folder = tmp_path / "published-like"
    shutil.copytree(conformance.checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        auto_map={
            "AutoConfig": "modeling_monet_that_does_not_exist.MonetConfig",
            "AutoModelForCausalLM": "modeling_monet_that_does_not_exist.MonetForCausalLM",
        },
        rope_theta=10000.0,
        rope_scaling=None,
        output_router_probs=False,
        intermediate_size=None,
        mlp_bias=None,
    )
    (folder / "config.json").write_text(json.dumps(config))
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(loaded) is MonetForCausalLM
    assert loaded.config.rope_parameters["rope_theta"] == 10000.0
    with torch.no_grad():
        logits = loaded(conformance.input_ids).logits
    torch.testing.assert_close(logits, conformance.expected["logits"], atol=ATOL, rtol=0)


def test_unknown_decomposition_is_a_clear_error():
    with pytest.raises(ValueError, match="moe_decompose 'diagonal'.*vertical.*horizontal"):
        MonetConfig(moe_decompose="diagonal", hidden_size=64, num_attention_heads=4, moe_experts=16, moe_topk=4)


def test_save_and_reload_round_trip(vd_tiny, tmp_path):
    model = vd_tiny.load_model()
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(vd_tiny.input_ids).logits, vd_tiny.expected["logits"], atol=ATOL, rtol=0)
