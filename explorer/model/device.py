"""Where and in which precision the model runs: CUDA with bfloat16 when there is a GPU, else CPU float32."""

import torch
from transformers import AutoModelForCausalLM

import explorer  # noqa: F401  (registers model_type "monet")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)} or 'auto'.")
    return DTYPES[dtype]


def load_model(name_or_path, device: str | None = None, dtype: str | torch.dtype | None = None):
    """Load a Monet checkpoint (folder or hub id) for inference on the chosen device and dtype."""
    device = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=pick_dtype(dtype, device))
    return model.to(device).eval()
