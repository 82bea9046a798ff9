"""The trainer of the embedded default model: objective, schedule, data order, and a tiny end-to-end run."""

import json
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import explorer  # noqa: F401  (registers model_type "monet")
from precompute.corpus.build import load_corpus
from precompute.training.train import TrainConfig, learning_rate, pack, router_losses, train, train_batches

CORPUS = Path(__file__).resolve().parents[2] / "assets" / "corpus"


def tiny_config(out: Path, **overrides) -> TrainConfig:
    settings = dict(
        out=str(out), steps=16, seed=7, vocab_size=320, hidden_size=64, layers=2, attention_heads=2,
        experts=16, moe_heads=2, moe_dim=8, moe_topk=4, moe_groups=2, seq_len=32, batch_size=4,
        lr=1e-2, warmup=0.1, log_every=1, eval_every=8, eval_windows=2,
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tiny_docs():
    """A few documents of every domain and both splits."""
    counts, docs = Counter(), []
    for doc in load_corpus(CORPUS):
        key = (doc["domain"], doc["split"])
        if counts[key] < (25 if doc["split"] == "train" else 3):
            counts[key] += 1
            docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def tiny_runs(tiny_docs, tmp_path_factory):
    """The same tiny run twice (same seed) and once with another seed; one thread is much faster for tiny shapes."""
    threads, runs = torch.get_num_threads(), {}
    for name, seed in (("a", 7), ("b", 7), ("other", 8)):
        out = tmp_path_factory.mktemp(name)
        runs[name] = out, train(tiny_config(out, seed=seed, threads=1), docs=tiny_docs, show_progress=False)
    torch.set_num_threads(threads)
    return runs


def test_same_seed_gives_identical_weights(tiny_runs):
    weights_a = load_file(tiny_runs["a"][0] / "model.safetensors")
    weights_b = load_file(tiny_runs["b"][0] / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    weights_other = load_file(tiny_runs["other"][0] / "model.safetensors")
    assert not torch.equal(weights_a["model.embed_tokens.weight"], weights_other["model.embed_tokens.weight"])


def test_training_reduces_the_loss(tiny_runs):
    summary = tiny_runs["a"][1]
    losses = [record["loss"] for record in summary["history"]]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < losses[0] - 0.5
    first, last = summary["evals"][0]["heldout_loss"], summary["evals"][-1]["heldout_loss"]
    assert sum(last.values()) < sum(first.values())


def test_saved_folder_reloads_with_auto_classes(tiny_runs):
    out, summary = tiny_runs["a"]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "monet" and model.config.moe_decompose == "vertical"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    norm = model.model.layers[0].router.norm1
    assert norm.running_var.ne(1).any()  # BatchNorm router statistics were learned and saved
    ids = torch.tensor([[1, *tokenizer("Grüße aus Köln")["input_ids"]]])
    with torch.no_grad():
        output = model(ids, labels=ids, output_router_probs=True)
    assert torch.isfinite(output.logits).all() and output.logits.shape[-1] == len(tokenizer)
    assert len(output.router_probs) == 2 and output.router_probs[1] is None
    saved = json.loads((out / "training.json").read_text())
    assert saved["steps"] == 16 and saved["tokens"] == 16 * 4 * 32
    assert set(saved["heldout_loss"]) == set(summary["train_tokens_per_domain"])
    assert "Held-out loss per domain" in (out / "README.md").read_text()


def test_router_losses_at_their_extremes():
    experts = 8
    uniform = torch.full((2, 3, 4, experts), 1 / experts)
    one_hot = torch.nn.functional.one_hot(torch.arange(2 * 3 * 4).remainder(experts), experts).float()
    one_hot = one_hot.view(2, 3, 4, experts)
    uniformity, ambiguity, _ = router_losses([(uniform, uniform), None]).values()
    assert uniformity.item() == pytest.approx(math.log(experts))  # the floor: mean usage is uniform
    assert ambiguity.item() == pytest.approx(1 - 1 / experts)
    uniformity, ambiguity, unused = router_losses([(one_hot, one_hot)]).values()
    assert ambiguity.item() == 0
    assert uniformity.item() >= math.log(experts) - 1e-6


def test_smooth_uniformity_reaches_entries_no_token_selected():
    config = SimpleNamespace(moe_heads=2, moe_experts=8, moe_topk=2)
    uniform = torch.full((4, 64, 2, 8), 1 / 8)
    balanced = torch.randn(4, 64, 2 * 8, generator=torch.Generator().manual_seed(0))
    losses = router_losses([(uniform, uniform)], [balanced, balanced], config)
    assert losses["uniformity"].item() == pytest.approx(math.log(8), abs=0.05)
    offset = balanced.clone()
    offset[..., 0] -= 10  # head 0, entry 0 is far below every other score: never selected
    offset.requires_grad_(True)
    losses = router_losses([(uniform, uniform)], [offset], config)
    assert losses["uniformity"].item() > math.log(8) + 0.1
    losses["uniformity"].backward()
    assert offset.grad[..., 0].sum() < 0  # descending the loss raises the dead entry's scores


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(out="", lr=1.0, warmup=0.1, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0.0) == 0
    assert learning_rate(cfg, 0.05) == pytest.approx(0.5)
    assert learning_rate(cfg, 0.1) == pytest.approx(1.0)
    assert learning_rate(cfg, 1.0) == pytest.approx(0.1)
    rates = [learning_rate(cfg, p / 100) for p in range(10, 101)]
    assert rates == sorted(rates, reverse=True)


def test_batches_are_deterministic_and_windows_single_domain():
    domains = {"a": [[1, 10, 11, 2]] * 20, "b": [[1, 20, 21, 22, 2]] * 20}
    first = [next(batches) for batches in [train_batches(domains, 8, 2, seed=3)] for _ in range(5)]
    again = [next(batches) for batches in [train_batches(domains, 8, 2, seed=3)] for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    for window in torch.cat(first):
        tokens = set(window.tolist()) - {1, 2}
        assert tokens <= {10, 11} or tokens <= {20, 21, 22}
    assert [len(w) for w in pack([[1, 5, 6, 2]] * 3, 5, keep_tail=True)] == [5, 5, 2]
    assert [len(w) for w in pack([[1, 5, 6, 2]] * 3, 5, keep_tail=False)] == [5, 5]
    assert [len(w) for w in pack([[1, 5, 2]] * 3, 4, keep_tail=True)] == [4, 4]  # a 1-token tail predicts nothing
