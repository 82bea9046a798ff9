"""Train the embedded default Monet-VD from scratch on the labelled corpus (assets/corpus).

    python -m precompute train --out assets/monet-embedded --minutes 60 --threads 1 --precision bfloat16 --compile

Data: each train document is framed `<s> text </s>`; a domain's documents (order reshuffled
every epoch) are packed into one stream cut into windows of --seq-len tokens, so every window
holds one domain; windows of all domains are shuffled together. Held-out documents are
packed the same way (fixed order) and scored per domain.

Objective (Monet paper, arXiv 2412.04139, eqs. 16-18): L = L_LM + λ_unif L_unif + λ_amb L_amb, with
g = g1 or g2 of each router layer ([B, T, H, E]), both averaged over the two sides and router layers:
- L_amb = 1/H Σ_h (1 - max_e g_he), averaged over tokens (eq. 17, λ_amb = 1e-3 as in the paper):
  low when each head routes a token mostly to one entry.
- L_unif = -1/(H E) Σ_h Σ_e log u_he (eq. 16): the KL divergence from the uniform distribution to
  the per-head usage u, plus log E (its floor; the paper reports 6.28 against log 512 = 6.24).
  The paper's u is g averaged over the batch's tokens (`--no-smooth-uniformity`). With our
  2k-token batches an entry that no token selected has u = 0 and, behind the threshold, no
  gradient: 75-85 % of the (head, entry) pairs went unused within 20 steps and never came
  back. So by default u is a smooth selection frequency: mean over tokens of
  sigmoid((n - σ) / 0.1), n the router score normalised over the batch per head (what the
  router's BatchNorm computes in training mode), σ = Φ^-1(1 - moe_topk / E) its threshold,
  normalised over entries. Same floor (every entry selected equally often), and the log keeps
  a gradient on entries far below the threshold. λ_unif = 1e-2 (with 1e-3 usage balanced
  more slowly than the LM loss moved the routers).
The router BatchNorms run in training mode (batch statistics), which also updates the running
statistics used at inference.

Schedule: AdamW, linear warmup then cosine decay to --min-lr-ratio. With --steps the schedule
runs over that many steps and the run is deterministic (same seed, same weights, on one device
type); with only --minutes it runs over wall-clock time, so the run ends on time on a shared
machine (the number of steps then depends on speed; training.json records it, and `--steps N`
repeats it exactly).
"""

import json
import math
import os
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from statistics import NormalDist

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm import tqdm

from explorer.model.monet import MonetConfig, MonetForCausalLM
from precompute.cli import option, required_option
from precompute.corpus.build import load_corpus
from precompute.training.tokenizer import SPECIAL_TOKENS, save_tokenizer, train_tokenizer

BOS, EOS = SPECIAL_TOKENS.index("<s>"), SPECIAL_TOKENS.index("</s>")
SELECTION_TEMPERATURE = 0.1  # of the smooth selection indicator, in units of the normalised router score


@dataclass
class TrainConfig:
    """Options of `python -m precompute train`: the command line is generated from these fields and their help."""

    out: str = required_option("output model folder (model, tokenizer, training.json, README.md)")
    corpus: str = option("assets/corpus", "corpus folder (corpus.jsonl.gz)")
    tokenizer: str | None = option(None, "folder with a tokenizer.json to reuse; default: train one on the train split")
    minutes: float = option(30.0, "wall-clock budget of the training loop (ignored with --steps)")
    steps: int | None = option(None, "train exactly this many steps (deterministic schedule)")
    seed: int = option(0, "seed of weights and data order")
    threads: int | None = option(None, "CPU threads (default: torch's; 1 can be faster on a busy machine)")
    precision: str = option("float32", "float32, or bfloat16 autocast (weights and optimizer stay float32)")
    compile: bool = option(False, "torch.compile the model (first steps pay the compilation)")
    # model
    vocab_size: int = option(8192, "byte-level BPE vocabulary size")
    hidden_size: int = option(256, "d")
    layers: int = option(4, "decoder layers")
    attention_heads: int = option(4, "attention heads (no grouped-query attention)")
    experts: int = option(64, "moe_experts E: experts per side, E*E per layer")
    moe_heads: int = option(4, "router heads H")
    moe_dim: int = option(16, "expert hidden width m")
    moe_topk: int = option(4, "expected entries selected per head and side")
    moe_groups: int = option(2, "layers sharing one router")
    tie_embeddings: bool = option(True, "tie input and output embeddings (keeps the checkpoint small)")
    # optimisation
    seq_len: int = option(256, "tokens per training window (also the model's context)")
    batch_size: int = option(8, "windows per step")
    lr: float = option(3e-3, "peak learning rate")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak")
    warmup: float = option(0.03, "linear warmup, as a fraction of the run")
    weight_decay: float = option(0.1, "AdamW weight decay of matrices")
    grad_clip: float = option(1.0, "gradient norm clip")
    uniformity_weight: float = option(1e-2, "lambda of the uniformity (load balancing) loss")
    ambiguity_weight: float = option(1e-3, "lambda of the ambiguity loss")
    smooth_uniformity: bool = option(True, "uniformity on a smooth selection indicator (reaches unselected experts)")
    # reporting
    log_every: int = option(10, "steps between loss records in training.json")
    eval_every: int = option(250, "steps between held-out evaluations")
    eval_windows: int = option(16, "windows per domain in the periodic evaluations (the final one uses all)")


# ---------------------------------------------------------------- data


def encode_documents(tokenizer: Tokenizer, docs: list[dict]) -> dict[str, dict[str, list[list[int]]]]:
    """Token ids of each document, framed `<s> ... </s>`, by split and domain."""
    encoded = tokenizer.encode_batch([d["text"] for d in docs])
    by_split = {"train": defaultdict(list), "heldout": defaultdict(list)}
    for doc, enc in zip(docs, encoded, strict=True):
        by_split[doc["split"]][doc["domain"]].append([BOS, *enc.ids, EOS])
    return {split: dict(sorted(domains.items())) for split, domains in by_split.items()}


def pack(documents: list[list[int]], seq_len: int, keep_tail: bool) -> list[torch.Tensor]:
    stream = torch.tensor([t for doc in documents for t in doc], dtype=torch.long)
    windows = list(stream.split(seq_len))
    if windows and len(windows[-1]) < seq_len and not (keep_tail and len(windows[-1]) > 1):
        windows.pop()
    return windows


def train_batches(train_docs: dict[str, list[list[int]]], seq_len: int, batch_size: int, seed: int):
    """Endless batches [batch_size, seq_len]; each epoch reshuffles document order and windows."""
    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        windows = []
        for docs in train_docs.values():
            order = torch.randperm(len(docs), generator=generator).tolist()
            windows += pack([docs[k] for k in order], seq_len, keep_tail=False)
        order = torch.randperm(len(windows), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield torch.stack([windows[k] for k in order[start : start + batch_size]])
        epoch += 1


# ---------------------------------------------------------------- objective


def capture_router_scores(model) -> list[torch.Tensor]:
    """A list that receives the raw router scores w1 x and w2 x ([B, T, H*E]) of every training-mode forward."""
    scores = []

    def keep(module, args, output):
        if module.training:
            scores.append(output)

    for layer in model.model.layers:
        if layer.router is not None:
            layer.router.w1.register_forward_hook(keep)
            layer.router.w2.register_forward_hook(keep)
    return scores


def selection_frequency(scores: torch.Tensor, config) -> torch.Tensor:
    """How often each (head, entry) is selected in the batch, smoothly: [H, E] from raw scores [B, T, H*E].

    The router selects an entry when its score, normalised per head over the batch (its BatchNorm in
    training mode), reaches sigma = Phi^-1(1 - moe_topk / E); a sigmoid of that margin stands in
    for the hard test, so the frequency, and its log, move with every entry's scores.
    """
    z = scores.unflatten(-1, (config.moe_heads, -1)).flatten(0, -3).float()  # [tokens, H, E]
    normed = (z - z.mean((0, 2), keepdim=True)) / (z.var((0, 2), unbiased=False, keepdim=True) + 1e-5).sqrt()
    sigma = NormalDist().inv_cdf(1 - config.moe_topk / config.moe_experts)
    return torch.sigmoid((normed - sigma) / SELECTION_TEMPERATURE).mean(0)


def router_losses(router_probs, router_scores=None, config=None) -> dict[str, torch.Tensor]:
    """Monet's uniformity and ambiguity losses (eqs. 16, 17), averaged over sides and router layers.

    With router_scores (see capture_router_scores) the uniformity loss takes the usage from
    selection_frequency instead of the thresholded g, so entries that no token of the batch
    selected still get a gradient. Also reports `unused`: the fraction of (head, entry) pairs
    no token selected.
    """
    sides = [g for probs in router_probs if probs is not None for g in probs]  # g1, g2: [B, T, H, E]
    usage = [g.flatten(0, -3).mean(0) for g in sides]  # [H, E]: mean routing probability over the batch
    if router_scores is not None:
        usage_for_loss = [selection_frequency(z, config) for z in router_scores]
        usage_for_loss = [u / u.sum(-1, keepdim=True) for u in usage_for_loss]
    else:
        usage_for_loss = [u.clamp_min(1e-9) for u in usage]
    return {
        "uniformity": torch.stack([-u.log().mean() for u in usage_for_loss]).mean(),
        "ambiguity": torch.stack([(1 - g.amax(-1)).mean() for g in sides]).mean(),
        "unused": torch.stack([(u == 0).float().mean() for u in usage]).mean().detach(),
    }


def train_step(forward, model, optimizer, ids: torch.Tensor, cfg: TrainConfig, router_scores=None):
    """One optimisation step on a batch of token windows; returns the model output and the router losses.

    `forward` is the model or its torch.compile'd wrapper. With precision bfloat16 the forward runs under
    autocast (matrix products in bfloat16, this CPU's avx512_bf16), the weights, gradients and AdamW state
    stay float32."""
    if router_scores is not None:
        router_scores.clear()
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bfloat16"):
        output = forward(ids, labels=ids, output_router_probs=True, use_cache=False)
        aux = router_losses(output.router_probs, router_scores, model.config)
        loss = output.loss + cfg.uniformity_weight * aux["uniformity"] + cfg.ambiguity_weight * aux["ambiguity"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return output, aux


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    if progress < cfg.warmup:
        return cfg.lr * progress / cfg.warmup
    decay = (progress - cfg.warmup) / (1 - cfg.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(decay, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


@torch.no_grad()
def heldout_loss(model, windows: list[torch.Tensor], seq_len: int, batch_size: int, device, ablate=None) -> float:
    """Mean next-token cross-entropy (nats) over token windows, with the experts of `ablate` switched off.

    Windows of `seq_len` tokens run in batches, shorter ones (a tail) alone. The project's one held-out
    loss: training's evaluation and `python -m bench.domains` both call it."""
    full = [w for w in windows if len(w) == seq_len]
    batches = [torch.stack(full[k : k + batch_size]) for k in range(0, len(full), batch_size)]
    batches += [w[None] for w in windows if len(w) < seq_len]
    total, count = 0.0, 0
    for ids in batches:
        ids = ids.to(device)
        logits = model(ids, ablate=ablate, use_cache=False).logits[:, :-1].float()
        total += F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
        count += ids[:, 1:].numel()
    return total / count


@torch.no_grad()
def evaluate(model, heldout_docs, cfg: TrainConfig, device, max_windows: int | None = None) -> dict[str, float]:
    """Mean next-token loss (nats) on each domain's held-out documents, router in inference mode."""
    model.eval()
    losses = {}
    for domain, docs in heldout_docs.items():
        windows = pack(docs, cfg.seq_len, keep_tail=True)[:max_windows]  # the last window may be shorter
        losses[domain] = heldout_loss(model, windows, cfg.seq_len, cfg.batch_size, device)
    model.train()
    return losses


# ---------------------------------------------------------------- model


def build_model(cfg: TrainConfig, vocab_size: int) -> MonetForCausalLM:
    config = MonetConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.attention_heads,
        num_key_value_heads=cfg.attention_heads,
        hidden_act="relu2",
        max_position_embeddings=cfg.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        moe_experts=cfg.experts,
        moe_heads=cfg.moe_heads,
        moe_dim=cfg.moe_dim,
        moe_topk=cfg.moe_topk,
        moe_groups=cfg.moe_groups,
        moe_decompose="vertical",
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return MonetForCausalLM(config)


def optimizer_for(model, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


# ---------------------------------------------------------------- training


def train(cfg: TrainConfig, docs: list[dict] | None = None, show_progress: bool = True) -> dict:
    """Train, save the model, tokenizer, training.json and model card to cfg.out; returns the summary."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out)
    started = time.time()

    docs = docs if docs is not None else load_corpus(cfg.corpus)
    if cfg.tokenizer:
        tokenizer = Tokenizer.from_file(str(Path(cfg.tokenizer) / "tokenizer.json"))
    else:
        tokenizer = train_tokenizer((d["text"] for d in docs if d["split"] == "train"), cfg.vocab_size)
    encoded = encode_documents(tokenizer, docs)
    train_tokens = {domain: sum(map(len, d)) for domain, d in encoded["train"].items()}

    model = build_model(cfg, tokenizer.get_vocab_size()).to(device)
    model.train()
    optimizer = optimizer_for(model, cfg)
    forward = torch.compile(model) if cfg.compile else model
    batches = train_batches(encoded["train"], cfg.seq_len, cfg.batch_size, cfg.seed)
    router_scores = capture_router_scores(model) if cfg.smooth_uniformity else None
    budget = cfg.minutes * 60

    history, evals = [], []
    step, tokens, train_seconds = 0, 0, 0.0
    bar = tqdm(total=cfg.steps or round(budget), unit="step" if cfg.steps else "s", disable=not show_progress)
    loop_start = time.time()
    while True:
        elapsed = time.time() - loop_start
        progress = step / cfg.steps if cfg.steps else elapsed / budget
        if progress >= 1:
            break
        lr = learning_rate(cfg, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr

        tick = time.time()
        ids = next(batches).to(device)
        output, aux = train_step(forward, model, optimizer, ids, cfg, router_scores)
        step += 1
        tokens += ids.numel()
        train_seconds += time.time() - tick

        if step % cfg.log_every == 0 or step == 1:
            record = {"step": step, "tokens": tokens, "seconds": round(time.time() - loop_start, 1), "lr": lr}
            record |= {"loss": round(output.loss.item(), 4)} | {k: round(v.item(), 4) for k, v in aux.items()}
            history.append(record)
            bar.set_postfix(
                loss=f"{record['loss']:.3f}", unused=f"{record['unused']:.2f}", tok_s=f"{tokens / train_seconds:.0f}"
            )
        if step % cfg.eval_every == 0:
            heldout = evaluate(model, encoded["heldout"], cfg, device, cfg.eval_windows)
            evals.append({"step": step, "tokens": tokens, "heldout_loss": heldout})
            bar.write(f"step {step}: held-out loss " + " ".join(f"{d}={v:.3f}" for d, v in heldout.items()))
        if cfg.steps:
            bar.update(1)
        else:
            bar.update(min(round(time.time() - loop_start), bar.total) - bar.n)
    bar.close()

    heldout = evaluate(model, encoded["heldout"], cfg, device)
    evals.append({"step": step, "tokens": tokens, "heldout_loss": heldout})
    summary = {
        "steps": step,
        "tokens": tokens,
        "minutes": round((time.time() - started) / 60, 2),
        "train_minutes": round(train_seconds / 60, 2),
        "tokens_per_second": round(tokens / max(train_seconds, 1e-9)),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or 'x86'})",
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": history[-1]["loss"] if history else None,
        "heldout_loss": heldout,
        "heldout_loss_mean": sum(heldout.values()) / len(heldout),
        "train_tokens_per_domain": train_tokens,
        "config": asdict(cfg),
        "versions": {
            "torch": torch.__version__,
            "transformers": version("transformers"),
            "tokenizers": version("tokenizers"),
        },
        "history": history,
        "evals": evals,
    }
    save(model, tokenizer, summary, out)
    return summary


def save(model, tokenizer: Tokenizer, summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out, model.config.max_position_embeddings)
    (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "README.md").write_text(model_card(summary, model.config))


def _schedule_flags(cfg: dict) -> str:
    """The run's budget, seed and speed options as command-line flags (speed ones absent from older files)."""
    flags = f"--minutes {cfg['minutes']:g} --seed {cfg['seed']}"
    flags += f" --threads {cfg['threads']}" if cfg.get("threads") else ""
    flags += " --precision bfloat16" if cfg.get("precision") == "bfloat16" else ""
    return flags + (" --compile" if cfg.get("compile") else "")


def model_card(summary: dict, config) -> str:
    cfg, last = summary["config"], summary["history"][-1]
    uniformity_on = "on a smooth selection frequency" if cfg["smooth_uniformity"] else "on the routing g1, g2"
    rows = "\n".join(
        f"| {domain} | {summary['train_tokens_per_domain'].get(domain, 0):,} | {loss:.3f} | {math.exp(loss):.1f} |"
        for domain, loss in summary["heldout_loss"].items()
    )
    experts = config.moe_experts
    groups = config.num_routing_groups
    return f"""# Monet-VD, embedded default model of Monet Explorer

A small Monet-VD (Mixture of Monosemantic Experts, vertical decomposition; Park et al., ICLR
2025, arXiv 2412.04139) trained from scratch on this repository's labelled multi-domain corpus
(`assets/corpus`: Python standard library code; English scripture, dictionary, manual pages and
licences; German, Spanish and Italian fortunes). It exists so the explorer works offline out of the
box and so experts can be checked against known domains. It is a toy: expect fluent-looking but meaningless text.

Load it with this project's code (no remote code): `import explorer` then
`transformers.AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)`.
Documents were framed `<s> text </s>` in training; the tokenizer adds no `<s>` by itself, so
prepend it (id {BOS}) for prompts that start a document.

## Shapes
| field | value |
|---|---|
| hidden_size | {config.hidden_size} |
| layers | {config.num_hidden_layers} |
| attention heads (kv heads) | {config.num_attention_heads} ({config.num_key_value_heads}) |
| moe_experts E (per side) | {experts} ({experts * experts:,} experts per layer) |
| moe_heads H / moe_dim m / moe_topk | {config.moe_heads} / {config.moe_dim} / {config.moe_topk} |
| moe_groups | {config.moe_groups} ({groups} routing groups: G1 = layers 0-{config.moe_groups - 1}, ...) |
| vocabulary | {config.vocab_size} (byte-level BPE; `<unk>` 0, `<s>` 1, `</s>` 2) |
| context | {config.max_position_embeddings} tokens |
| tied input/output embeddings | {config.tie_word_embeddings} |
| parameters | {summary["parameters"]:,} (float32) |

## Training
- {summary["steps"]:,} steps, {summary["tokens"]:,} tokens ({cfg["batch_size"]} x {cfg["seq_len"]} per step),
  {summary["minutes"]} minutes on {summary["device"]} ({summary["tokens_per_second"]:,} tokens/s), seed {cfg["seed"]}.
- AdamW (β = 0.9, 0.95, weight decay {cfg["weight_decay"]}), peak lr {cfg["lr"]}, warmup {cfg["warmup"]:.0%},
  cosine decay to {cfg["min_lr_ratio"]:.0%}, gradient clip {cfg["grad_clip"]}.
- Loss: next-token cross-entropy + {cfg["uniformity_weight"]} L_unif + {cfg["ambiguity_weight"]} L_amb, the paper's
  uniformity and ambiguity losses (eqs. 16-17); L_unif {uniformity_on} (see `precompute/training/train.py`).
  Last logged: uniformity {last["uniformity"]}, ambiguity {last["ambiguity"]},
  unused (head, entry) pairs in a batch {last["unused"]:.1%}.
- Router BatchNorm statistics come from training mode (momentum 0.1) and are used at inference.

## Held-out loss per domain
Mean next-token loss in nats on the held-out split (about 5 % of each domain's documents, by hash).

| domain | train tokens | held-out loss | perplexity |
|---|---|---|---|
{rows}

## Retrain
```
apt-get install -y bible-kjv dict-gcide manpages fortunes-de fortunes-es fortunes-it  # only to rebuild the corpus
python -m precompute corpus --out assets/corpus                   # optional: the corpus is shipped
python -m precompute train --out {summary["config"]["out"]} {_schedule_flags(cfg)}
```
`--steps {summary["steps"]}` instead of `--minutes` repeats this run's schedule exactly on the same kind of device.
Full settings and the loss curve: `training.json`.

## Licences
Corpus sources: CPython standard library (PSF licence), the King James Bible (`bible-kjv-text`, public
domain), GCIDE (`dict-gcide`, GPL-2+), the Linux man-pages (`manpages`, mostly verbatim-copy licences),
`/usr/share/common-licenses` (the licences' own terms: verbatim copying allowed),
`fortunes-de` and `fortunes-es` (GPL-2+; fortunes presumed public domain), `fortunes-it`
(public domain / freeware). See `assets/README.md`.
"""


def run_training(cfg: TrainConfig) -> None:
    """`python -m precompute train`: train with a progress bar, then print the summary's headline figures."""
    summary = train(cfg)
    keys = ("steps", "tokens", "minutes", "tokens_per_second", "heldout_loss")
    print(json.dumps({k: summary[k] for k in keys}, indent=1))
