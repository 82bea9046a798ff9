"""Where and in which precision the model runs, and the CPU's fast bfloat16 linear layers.

`auto` picks CUDA with bfloat16 when there is a GPU. On a CPU it picks bfloat16 for large models
(>= BFLOAT16_CPU_MIN_PARAMETERS, e.g. the published 850M-4.1B) when the CPU multiplies bfloat16
natively (AVX512-BF16 or AMX-BF16): decoding one token reads every weight once, so half the bytes
is nearly twice the tokens/s. Small models (the embedded default, the test checkpoints) stay float32
on a CPU: they are not memory-bound, and float32 is what reproduces the reference bit for bit.

On a CPU, a bfloat16 model's linear layers hold their weights pre-packed by oneDNN in the layout its
bfloat16 instructions read (PackedLinear): torch's plain bfloat16 linear re-lays the weight out on
every call, which makes batch-1 products barely faster than float32 (measured in `python -m bench.model`).
"""

import re
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

import explorer  # noqa: F401  (registers model_type "monet")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BFLOAT16_CPU_MIN_PARAMETERS = 100_000_000  # below this a CPU model is not memory-bound: auto keeps float32


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (the avx512_bf16 or amx_bf16 flag of Linux's /proc/cpuinfo)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device, parameters: int | None = None) -> torch.dtype:
    """The dtype to run in; `auto`: bfloat16 on CUDA, and on a CPU with native bfloat16 for a model of at least
    BFLOAT16_CPU_MIN_PARAMETERS `parameters` (unknown: float32); float32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16
        large = parameters is not None and parameters >= BFLOAT16_CPU_MIN_PARAMETERS
        return torch.bfloat16 if large and cpu_has_native_bfloat16() else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)} or 'auto'.")
    return DTYPES[dtype]


def count_parameters(name_or_path) -> int:
    """The parameters of a checkpoint's model, from its config alone (built on the meta device: no memory)."""
    config = AutoConfig.from_pretrained(name_or_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def load_model(name_or_path, device: str | None = None, dtype: str | torch.dtype | None = None):
    """Load a Monet checkpoint (folder or hub id) for inference on the chosen device and dtype (see pick_dtype);
    a bfloat16 model on a CPU gets oneDNN's pre-packed linear layers."""
    device = pick_device(device)
    parameters = count_parameters(name_or_path) if dtype in (None, "auto") and device.type == "cpu" else None
    dtype = pick_dtype(dtype, device, parameters)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    model = model.to(device).eval()
    if device.type == "cpu" and dtype == torch.bfloat16 and can_pack_bfloat16():
        pack_linear_layers(model)
    return model


def can_pack_bfloat16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class PackedLinear(nn.Module):
    """A bfloat16 nn.Linear for inference on a CPU, its weight pre-packed by oneDNN for the CPU's bfloat16
    instructions: the same products (bit for bit: tests/model/test_bfloat16_cpu.py), about 3x faster than
    torch's plain bfloat16 linear at batch 1. `weight` unpacks a plain copy when read, which only a few
    requests do (one expert's output, a token's reading direction); `keep_weight` keeps the plain one too."""

    def __init__(self, linear: nn.Linear, keep_weight: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)  # laid out for batch 1, fine for any
        self.bias = linear.bias
        self.kept_weight = linear.weight if keep_weight else None

    @property
    def weight(self) -> torch.Tensor:
        return self.kept_weight if self.kept_weight is not None else self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linear_layers(model: nn.Module) -> nn.Module:
    """Swap every bfloat16 nn.Linear of `model` for a PackedLinear, in place. The output layer keeps its plain
    weight too (the app reads rows of it for every expert page), the others are held packed only."""
    output_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(parent, name, PackedLinear(child, keep_weight=child is output_layer))
    return model
