"""Which training settings are fastest on this CPU? (issue 12): tokens/s of the embedded model's training step.

Each option runs the real optimisation step (precompute.training.train.train_step: forward, Monet's router
losses, backward, AdamW) on random token windows of the embedded model's shapes, after warm-up steps that
pay torch.compile's compilation. The options take turns, round after round, so a busy machine slows them
alike; the table prints the median tokens/s and the ratio to float32 with torch's default threads.
Whether an option also *trains as well* is a separate check: `--quality N` trains N steps of the real
corpus from the same seed with float32 and with bfloat16 and prints both losses.

`--compare OLD NEW` prints two trained models' held-out loss per character on the domains both were
trained on (per character, because their tokenizers differ).

Run: python -m bench.training [--rounds 3] [--steps 5] [--quality 0] [--compare OLD NEW]
"""

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from precompute.training.train import TrainConfig, build_model, capture_router_scores, optimizer_for, train_step

OPTIONS = {  # name -> (changes to the default TrainConfig, threads)
    "float32": ({}, None),
    "float32, 1 thread": ({}, 1),
    "bfloat16 autocast": ({"precision": "bfloat16"}, None),
    "float32 + compile": ({"compile": True}, None),
    "bfloat16 + compile": ({"precision": "bfloat16", "compile": True}, None),
    "float32, seq 128 x 16": ({"seq_len": 128, "batch_size": 16}, None),
    "bfloat16, seq 128 x 16": ({"precision": "bfloat16", "seq_len": 128, "batch_size": 16}, None),
}


class Runner:
    """One option's model, optimizer and compiled forward, kept across rounds."""

    def __init__(self, cfg: TrainConfig, threads: int | None):
        torch.manual_seed(0)
        self.cfg, self.threads = cfg, threads
        self.model = build_model(cfg, cfg.vocab_size)
        self.model.train()
        self.optimizer = optimizer_for(self.model, cfg)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.scores = capture_router_scores(self.model)

    def steps(self, n: int) -> float:
        """tokens/s over n steps."""
        default_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        ids = torch.randint(3, self.cfg.vocab_size, (self.cfg.batch_size, self.cfg.seq_len))
        start = time.perf_counter()
        for _ in range(n):
            train_step(self.forward, self.model, self.optimizer, ids, self.cfg, self.scores)
        seconds = time.perf_counter() - start
        torch.set_num_threads(default_threads)
        return n * ids.numel() / seconds


def speed_table(rounds: int, steps: int) -> None:
    base = TrainConfig(out="unused")
    runners = {name: Runner(replace(base, **changes), threads) for name, (changes, threads) in OPTIONS.items()}
    for name, runner in runners.items():
        start = time.perf_counter()
        runner.steps(3)  # warm-up (compilation)
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
    measured = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            measured[name].append(runner.steps(steps))
    reference = statistics.median(measured["float32"])
    print(f"\ntraining step, embedded shapes, {torch.get_num_threads()} threads by default, {rounds} rounds")
    print(f"{'option':26s} {'tokens/s':>9s} {'x float32':>10s}")
    for name, values in measured.items():
        median = statistics.median(values)
        print(f"{name:26s} {median:9.0f} {median / reference:10.2f}")


def quality(steps: int, tokenizer: str | None) -> None:
    """Held-out loss after `steps` steps of the real corpus, float32 against bfloat16, same seed and data."""
    from precompute.training.train import train

    for precision in ("float32", "bfloat16"):
        cfg = TrainConfig(
            out=f"/tmp/bench-training-{precision}",
            tokenizer=tokenizer,
            steps=steps,
            precision=precision,
            eval_every=10**9,
        )
        summary = train(cfg, show_progress=False)
        print(
            f"{precision}: {steps} steps, {summary['tokens_per_second']} tokens/s,"
            f" train loss {summary['final_train_loss']:.4f}, held-out mean {summary['heldout_loss_mean']:.4f}"
        )


def nats_per_character(model_dir: str, domains: list[str], corpus: str = "assets/corpus") -> dict[str, float]:
    """Held-out loss per character (nats) of a trained model on the current corpus's held-out documents.

    Per-token losses of models with different tokenizers do not compare; per character they do: the
    summed next-token loss over the domain's held-out windows, divided by the characters of its documents."""
    from tokenizers import Tokenizer

    from explorer.model.device import load_model
    from precompute.corpus.build import load_corpus
    from precompute.training.train import encode_documents, heldout_loss, pack

    model = load_model(model_dir, device="cpu")
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    docs = [d for d in load_corpus(corpus) if d["split"] == "heldout" and d["domain"] in domains]
    encoded = encode_documents(tokenizer, docs)["heldout"]
    seq_len = model.config.max_position_embeddings
    result = {}
    for domain in domains:
        windows = pack(encoded[domain], seq_len, keep_tail=True)
        predicted = sum(len(w) - 1 for w in windows)
        loss = heldout_loss(model, windows, seq_len, 8, model.device)
        result[domain] = loss * predicted / sum(len(d["text"]) for d in docs if d["domain"] == domain)
    return result


def compare(old: str, new: str) -> None:
    """Nats per character of two models on the held-out documents of the domains both were trained on."""
    trained = [set(json.loads(Path(m, "training.json").read_text())["train_tokens_per_domain"]) for m in (old, new)]
    domains = sorted(trained[0] & trained[1])
    losses = {m: nats_per_character(m, domains) for m in (old, new)}
    print(f"\nheld-out loss per character (nats), domains both models trained on: {old} -> {new}")
    for domain in domains:
        before, after = losses[old][domain], losses[new][domain]
        print(f"{domain:10s} {before:.4f} -> {after:.4f} ({after / before - 1:+.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quality", type=int, default=0, help="also train N real steps in float32 and bfloat16")
    parser.add_argument(
        "--tokenizer", default=None, help="folder with tokenizer.json for --quality (default: train one)"
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="two model folders: loss per character")
    args = parser.parse_args()
    if not args.no_speed:
        speed_table(args.rounds, args.steps)
    if args.quality:
        quality(args.quality, args.tokenizer)
    if args.compare:
        compare(*args.compare)


if __name__ == "__main__":
    main()
