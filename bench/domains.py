"""Is the embedded model worth shipping? (issue 3): domain experts and the paper's domain removal.

Prints, for the model in assets/ (or --model):
  - held-out loss per domain;
  - the share of experts whose top-20 contexts are at least 80% one domain;
  - domain removal: switch off the experts skewed toward D (mean weight on D >= 2x the next domain;
    routing is shared in a group, so in every layer of their group) and compare the relative rise of
    D's held-out loss with the mean relative rise of the other domains (goal: >= 3x for every domain).

Experts are chosen on a sample of training windows and losses measured on the held-out split, so the
selection never sees the text it is scored on.

Run: python -m bench.domains [--model assets/monet-embedded] [--windows 48]
"""

import argparse
import time
from pathlib import Path

import torch

from explorer.model.device import load_model
from explorer.paths import EMBEDDED_CORPUS, EMBEDDED_MODEL_DIR
from precompute.domain_experts import domain_removal, domain_routing


def domain_windows(model_dir: Path, corpus: Path, split: str, seq_len: int, max_windows: int, seed: int = 0):
    """Token windows [n, seq_len] per domain from one split of the labelled corpus, a seeded sample."""
    from tokenizers import Tokenizer

    from precompute.corpus.build import load_corpus
    from precompute.training.train import encode_documents, pack

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    docs = [d for d in load_corpus(corpus) if d["split"] == split]
    encoded = encode_documents(tokenizer, docs)[split]
    generator = torch.Generator().manual_seed(seed)
    windows = {}
    for domain, documents in encoded.items():
        packed = pack(documents, seq_len, keep_tail=False)
        order = torch.randperm(len(packed), generator=generator)[:max_windows].tolist()
        windows[domain] = torch.stack([packed[k] for k in sorted(order)])
    return windows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    parser.add_argument("--corpus", type=Path, default=EMBEDDED_CORPUS.parent)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--windows", type=int, default=48, help="windows per domain and split")
    parser.add_argument("--ratio", type=float, default=2.0, help="the skew rule: D's mean weight >= ratio x next")
    args = parser.parse_args()
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    select = domain_windows(args.model, args.corpus, "train", args.seq_len, args.windows)
    heldout = domain_windows(args.model, args.corpus, "heldout", args.seq_len, args.windows)
    routing = domain_routing(model, select, top_k=20)
    before, rows = domain_removal(model, heldout, routing, ratio=args.ratio)

    E2 = routing.mean_weight.shape[1]
    fired = routing.top_count >= 20
    pure = (routing.top_domain_share >= 0.8) & fired
    print(f"model {args.model}: {routing.mean_weight.shape[0]} routing groups x {E2} experts")
    print(
        f"experts with 20 top contexts: {int(fired.sum())}; of them >= 80% one domain: "
        f"{int(pure.sum())} ({pure.sum().item() / max(1, fired.sum().item()):.1%})"
    )
    print()
    print("| domain | held-out loss | experts off | loss after | rise | others' mean rise | ratio | >= 3x |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        measurable = abs(row.rise) >= 1e-3  # a rise under 0.1% is noise: no verdict either way
        verdict = ("yes" if row.ratio >= 3 else "no") if measurable else "n/a (no measurable rise)"
        print(
            f"| {row.domain} | {row.loss_before:.3f} | {row.experts_off} | {row.loss_after:.3f} | "
            f"{row.rise:+.1%} | {row.others_mean_rise:+.2%} | {row.ratio:.1f} | {verdict} |"
        )
    print(
        f"\n{sum(r.ratio >= 3 and abs(r.rise) >= 1e-3 for r in rows)}/{len(rows)} domains meet the 3x bar "
        f"with a measurable rise ({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
