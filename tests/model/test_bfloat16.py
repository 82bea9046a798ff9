"""bfloat16 against the float32 reference (tests/fixtures/conformance), on this CPU and, where there is one, on CUDA.

The tolerance (BF16_TOLERANCE), measured on the two conformance checkpoints with the CPU's packed bfloat16
linear layers: rounding the weights to bfloat16 moves a few router scores across their threshold (18 of the
7,680 selections of monet-vd-tiny flip, 0.23%; 9 on HD, 0.12%), and a flipped selection adds or drops whole
experts at that token. So the largest logit error is not small (up to 45% of the largest |logit| of
monet-vd-tiny, whose logits lie within 0.7 of each other; float32 arithmetic on the rounded weights gives the
same: it is the rounding, not the arithmetic), while the distributions barely move. Over the plain, padded
and three ablated forwards: mean KL(float32 || bfloat16) per position at most 1.8e-4 nats (VD) and 3.3e-5
(HD); top-1 agreement at least 0.89 (VD) and 0.92 (HD) on these near-uniform random models; greedy decoding
keeps all 16 tokens (VD) and 90% (HD). The checks below hold these with some margin.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from explorer.model import device as device_module
from explorer.model.device import PackedLinear, load_model, pack_linear_layers, pick_dtype


@dataclass(frozen=True)
class Tolerance:
    max_mean_kl: float = 1e-3  # nats, KL(float32 || bfloat16) averaged over positions
    min_top1: float = 0.85  # share of positions whose most likely next token is the same
    max_selection_flips: float = 0.005  # share of router entries selected in one precision only


BF16_TOLERANCE = Tolerance()


def assert_within_tolerance(logits: torch.Tensor, reference: torch.Tensor, tolerance: Tolerance = BF16_TOLERANCE):
    logits, reference = logits.float().cpu(), reference.float()
    log_p, log_q = F.log_softmax(reference, -1), F.log_softmax(logits, -1)
    mean_kl = float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
    top1 = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
    assert mean_kl <= tolerance.max_mean_kl, f"mean KL {mean_kl:.2e} nats"
    assert top1 >= tolerance.min_top1, f"top-1 agreement {top1:.3f}"


def assert_routing_within_tolerance(router_probs, expected, tolerance: Tolerance = BF16_TOLERANCE):
    flips, entries = 0, 0
    for layer, probs in enumerate(router_probs):
        if probs is None:
            continue
        for side, g in zip(("g1", "g2"), probs, strict=True):
            reference = expected[f"router.{layer}.{side}"]
            flips += int(((g.float().cpu() > 0) != (reference > 0)).sum())
            entries += reference.numel()
    assert flips / entries <= tolerance.max_selection_flips, f"{flips} of {entries} router selections flipped"


def check_conformance(model, conformance, device="cpu"):
    ids = conformance.input_ids.to(device)
    out = model(ids, output_router_probs=True)
    assert_within_tolerance(out.logits, conformance.expected["logits"])
    assert_routing_within_tolerance(out.router_probs, conformance.expected)
    real = conformance.attention_mask.bool()
    padded = model(ids, attention_mask=conformance.attention_mask.to(device)).logits.cpu()
    assert_within_tolerance(padded[real], conformance.expected["logits_padded"][real])
    for case, triples in enumerate(conformance.cases["ablations"]):
        ablated = model(ids, ablate=triples).logits
        assert_within_tolerance(ablated, conformance.expected[f"ablation.{case}.logits"])


@torch.no_grad()
def test_bf16_cpu_conformance(conformance):
    model = load_model(conformance.checkpoint, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    check_conformance(model, conformance)


@torch.no_grad()
def test_bf16_cpu_greedy_generation_keeps_most_tokens(conformance):
    model = load_model(conformance.checkpoint, device="cpu", dtype="bfloat16")
    prompt = torch.tensor(conformance.cases["greedy_prompt"])
    expected = torch.tensor(conformance.cases["greedy_output"])
    output = model.generate(prompt, max_new_tokens=expected.shape[1] - prompt.shape[1], do_sample=False)
    new = slice(prompt.shape[1], None)
    assert float((output[:, new] == expected[:, new]).float().mean()) >= 0.8  # measured: 1.0 (VD), 0.9 (HD)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: bf16 conformance on a GPU")
@torch.no_grad()
def test_bf16_cuda_conformance(conformance):
    model = load_model(conformance.checkpoint, device="cuda", dtype="bfloat16")
    check_conformance(model, conformance, device="cuda")


@torch.no_grad()
@pytest.mark.skipif(not device_module.can_pack_bfloat16(), reason="torch has no oneDNN bfloat16 here")
def test_packed_linear_gives_the_plain_bfloat16_products():
    torch.manual_seed(0)
    for bias in (True, False):
        linear = torch.nn.Linear(96, 40, bias=bias).bfloat16()
        packed = PackedLinear(linear)
        for shape in [(1, 96), (1, 1, 96), (3, 7, 96)]:
            x = torch.randn(shape).bfloat16()
            torch.testing.assert_close(packed(x), linear(x), atol=0, rtol=0)
        torch.testing.assert_close(packed.weight, linear.weight, atol=0, rtol=0)  # unpacked on demand, exactly


@torch.no_grad()
def test_a_packed_model_equals_its_plain_bfloat16_self(vd_tiny):
    """Packing changes no product: logits, an ablated forward and one expert's output are those of the same
    bfloat16 model with torch's plain linear layers. The output layer keeps its plain weight."""
    plain = vd_tiny.load_model(dtype=torch.bfloat16)
    packed = pack_linear_layers(vd_tiny.load_model(dtype=torch.bfloat16))
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    assert packed.lm_head.kept_weight is not None and packed.model.layers[0].moe.u1.kept_weight is None
    ids = vd_tiny.input_ids
    torch.testing.assert_close(packed(ids).logits, plain(ids).logits, atol=0, rtol=0)
    ablate = vd_tiny.cases["ablations"][0]
    torch.testing.assert_close(packed(ids, ablate=ablate).logits, plain(ids, ablate=ablate).logits, atol=0, rtol=0)
    x = torch.randn(2, plain.config.hidden_size).bfloat16()
    torch.testing.assert_close(
        packed.model.layers[1].moe.expert_output(x, 3, 5), plain.model.layers[1].moe.expert_output(x, 3, 5)
    )


def test_auto_dtype_on_a_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    big, small = 1_400_000_000, 200_000
    monkeypatch.setattr(device_module, "cpu_has_native_bfloat16", lambda: True)
    assert pick_dtype("auto", cpu, big) == torch.bfloat16
    assert pick_dtype("auto", cpu, small) == torch.float32  # not memory-bound: float32 is as fast, and exact
    assert pick_dtype("auto", cpu) == torch.float32  # size unknown
    assert pick_dtype("auto", cuda, small) == torch.bfloat16
    assert pick_dtype("bfloat16", cpu, small) == torch.bfloat16
    monkeypatch.setattr(device_module, "cpu_has_native_bfloat16", lambda: False)
    assert pick_dtype("auto", cpu, big) == torch.float32


def test_auto_keeps_the_small_checkpoints_in_float32(vd_tiny):
    model = load_model(vd_tiny.checkpoint, device="cpu", dtype="auto")
    assert model.dtype == torch.float32
    assert device_module.count_parameters(vd_tiny.checkpoint) == sum(p.numel() for p in model.parameters())


def test_this_machine_reports_its_bfloat16_flag():
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    assert device_module.cpu_has_native_bfloat16() == bool(flags & {"avx512_bf16", "amx_bf16"})
