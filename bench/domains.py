"""Is the embedded model worth shipping? (issue 3): the index's domain experts and the paper's domain removal.

Prints, for the model in assets/ (or --model) and its index (or --index):
  - held-out loss per domain;
  - the domain purity of the index's top contexts: of the experts with at least 20 top contexts, the share
    whose top contexts are at least 80% one domain;
  - domain removal: switch off the experts the index calls specialised in D (explorer.index.domains, the
    rule the app's `domain:NAME` uses: mean weight on D >= 2x that on the next domain, with enough active
    tokens; routing is shared in a group, so in every layer of their group) and compare the relative rise
    of D's held-out loss with the mean relative rise of the other domains (goal: >= 3x for every domain).

The experts come from the index; losses are measured on held-out documents the index never read (those
outside the shards it covers), so the selection never sees the text it is scored on.

Run: python -m bench.domains [--model assets/monet-embedded] [--index assets/monet-embedded.duckdb] [--windows 48]
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.app.loading import check_index_matches_model
from explorer.index.domains import DOMAIN_RATIO, MIN_ACTIVE_TOKENS, specialised_experts, top_context_purity
from explorer.index.reader import ExpertIndex
from explorer.model.ablation import Ablation
from explorer.model.device import load_model
from explorer.model.naming import ExpertRef
from explorer.paths import EMBEDDED_CORPUS, EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR
from precompute.indexing.options import parse_shard
from precompute.training.train import heldout_loss

MEASURABLE_RISE = 1e-3  # a relative rise under 0.1% is noise: no verdict either way
BATCH_SIZE = 8


def read_by_index(index: ExpertIndex):
    """Whether the index read the document at a corpus position (its shards: position % n == k)."""
    if "(split " in index.meta_dict()["corpus"]:  # positions would count within that split only
        sys.exit(f"{index.path} was built from one split of its corpus: this bench needs an index of the whole file.")
    shards = [parse_shard(shard) for shard in index.meta_dict()["shards"]]
    return lambda position: any(position % n == k for k, n in shards)


def heldout_windows(model_dir: Path, corpus: Path, seq_len: int, max_windows: int, skip, seed: int = 0):
    """Token windows [n, seq_len] per domain of the held-out documents whose corpus position `skip` refuses,
    a seeded sample of at most `max_windows`."""
    from tokenizers import Tokenizer

    from precompute.corpus.build import load_corpus
    from precompute.training.train import encode_documents, pack

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    docs = [d for position, d in enumerate(load_corpus(corpus)) if d["split"] == "heldout" and not skip(position)]
    encoded = encode_documents(tokenizer, docs)["heldout"]
    generator = torch.Generator().manual_seed(seed)
    windows = {}
    for domain, documents in encoded.items():
        packed = pack(documents, seq_len, keep_tail=False)
        order = torch.randperm(len(packed), generator=generator)[:max_windows].tolist()
        windows[domain] = [packed[k] for k in sorted(order)]
    return windows


@dataclass
class RemovalRow:
    domain: str
    experts_off: int
    loss_before: float
    loss_after: float
    rise: float  # relative rise of this domain's loss
    others_mean_rise: float  # mean relative rise of the other domains' losses

    @property
    def measurable(self) -> bool:
        return abs(self.rise) >= MEASURABLE_RISE

    @property
    def ratio(self) -> float | None:
        """rise / others' mean rise (the paper's claim is that it is large); None when the others did not rise."""
        return self.rise / self.others_mean_rise if self.others_mean_rise > 0 else None

    @property
    def meets_bar(self) -> bool:
        return self.measurable and (self.ratio is None and self.rise > 0 or (self.ratio or 0) >= 3)


def domain_removal(model, index: ExpertIndex, windows: dict, seq_len: int, ratio: float) -> list[RemovalRow]:
    """For each domain D: switch off the experts specialised in D and measure every domain's held-out loss."""

    def loss(domain: str, ablation=None) -> float:
        return heldout_loss(model, windows[domain], seq_len, BATCH_SIZE, model.device, ablation)

    before = {domain: loss(domain) for domain in windows}
    rows = []
    for domain in windows:
        experts = [
            ExpertRef.from_flat(found.group, found.expert, index.experts_per_side)
            for found in specialised_experts(index, domain, ratio)
        ]
        ablation = Ablation.build(experts, model.config) or None
        after = {other: loss(other, ablation) for other in windows}
        rises = {other: (after[other] - before[other]) / before[other] for other in windows}
        others = [rises[other] for other in windows if other != domain]
        rows.append(
            RemovalRow(domain, len(experts), before[domain], after[domain], rises[domain], sum(others) / len(others))
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    parser.add_argument("--index", type=Path, default=EMBEDDED_INDEX_PATH, help="the model's expert index")
    parser.add_argument("--corpus", type=Path, default=EMBEDDED_CORPUS.parent, help="the corpus the index was built on")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--windows", type=int, default=48, help="held-out windows per domain")
    parser.add_argument("--ratio", type=float, default=DOMAIN_RATIO, help="the rule: D's mean weight >= ratio x next")
    args = parser.parse_args()
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    index = ExpertIndex(args.index)
    mismatch = check_index_matches_model(index, model, None)
    if mismatch:
        sys.exit(mismatch)
    windows = heldout_windows(args.model, args.corpus, args.seq_len, args.windows, read_by_index(index))
    rows = domain_removal(model, index, windows, args.seq_len, args.ratio)

    purity = top_context_purity(index, min_contexts=20, min_share=0.8)
    print(f"model {args.model}, index {args.index}: {model.config.moe_experts**2} experts per routing group")
    print(
        f"experts with >= {purity.min_contexts} top contexts in the index: {purity.experts}; of them"
        f" >= {purity.min_share:.0%} one domain: {purity.pure} ({purity.pure / max(1, purity.experts):.1%})"
    )
    print(
        f"domain experts: mean weight on the domain >= {args.ratio:g}x the next domain's,"
        f" active on >= {MIN_ACTIVE_TOKENS} tokens; held-out windows of {args.seq_len} tokens per domain:"
        f" {', '.join(f'{d} {len(w)}' for d, w in windows.items())}"
    )
    print()
    print("| domain | held-out loss | experts off | loss after | rise | others' mean rise | ratio | >= 3x |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        shown = "n/a (others did not rise)" if row.ratio is None else f"{row.ratio:.1f}"
        verdict = ("yes" if row.meets_bar else "no") if row.measurable else "n/a (no measurable rise)"
        print(
            f"| {row.domain} | {row.loss_before:.3f} | {row.experts_off} | {row.loss_after:.3f} | "
            f"{row.rise:+.1%} | {row.others_mean_rise:+.2%} | {shown} | {verdict} |"
        )
    print(
        f"\n{sum(row.meets_bar for row in rows)}/{len(rows)} domains meet the 3x bar "
        f"with a measurable rise ({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
