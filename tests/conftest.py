"""Shared fixtures: the reference conformance checkpoints in ../shared (CI has them beside the clone)."""

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import explorer  # noqa: E402,F401  (registers model_type "monet")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MONET_SHARED", REPO.parent / "shared"))
CONFORMANCE = SHARED / "conformance"
CONFORMANCE_NAMES = ("monet-vd-tiny", "monet-hd-tiny")


def conformance_dir(name: str) -> Path:
    folder = CONFORMANCE / name
    if not (folder / "checkpoint" / "config.json").exists():
        pytest.skip(f"conformance fixtures not found at {folder}: put the project's shared/ folder beside the repo")
    return folder


class Conformance:
    """One reference folder: its checkpoint, cases.json and expected.safetensors."""

    def __init__(self, name: str):
        from safetensors.torch import load_file

        self.name = name
        self.folder = conformance_dir(name)
        self.checkpoint = self.folder / "checkpoint"
        self.cases = json.loads((self.folder / "cases.json").read_text())
        self.expected = load_file(self.folder / "expected.safetensors")
        self.input_ids = torch.tensor(self.cases["input_ids"])
        self.attention_mask = torch.tensor(self.cases["attention_mask"])

    def load_model(self, **kwargs):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.checkpoint, **kwargs).eval()


@pytest.fixture(scope="session", params=CONFORMANCE_NAMES)
def conformance(request) -> Conformance:
    return Conformance(request.param)


@pytest.fixture(scope="session")
def vd_tiny() -> Conformance:
    return Conformance("monet-vd-tiny")


@pytest.fixture(scope="session")
def model(conformance):
    return conformance.load_model()
