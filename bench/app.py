"""App benchmarks (issue 5): server-side figures measured in one run on this machine, printed, never asserted.

On a synthetic index at the published scale (6 routing groups x 512 x 512 experts, K = 32 top contexts;
bench/synthetic_index.py, real schema and writer) and a random Monet with the published routing shapes
(24 layers, groups of 4, E 512, H 8, moe_topk 32; hidden size --hidden, narrow by default so it fits a
laptop, which makes the inspector's overhead look larger, not smaller):

  a. expert page data: the index part of an expert page (Explorer.expert_page) and the whole render
     (pages.expert_view: HTML, charts, CSV/JSON files), random experts; goal <= 100 ms.
  b. search by id, by token, by text inside top contexts; goal <= 200 ms. (By meaning and "similar"
     need embeddings, which the synthetic index has none of.)
  c. prompt inspector on a 200-token prompt against a plain forward of the same model; goal <= 2x.
  d. overview: a group's E x E density map and its PNG, most/least active.

Run: python -m bench.app [--index PATH] [--hidden 256] [--repeats 20]
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.synthetic_index import build_synthetic_index
from explorer.app.explorer import Explorer
from explorer.app.generation import Limits
from explorer.app.inspector import inspect_prompt
from explorer.index.reader import ExpertIndex
from explorer.index.text_search import search_text
from explorer.model.monet import MonetConfig, MonetForCausalLM
from explorer.model.naming import ExpertRef
from explorer.web import html, pages

PUBLISHED_ROUTING = dict(
    num_hidden_layers=24,
    moe_groups=4,
    moe_experts=512,
    moe_heads=8,
    moe_topk=32,
    moe_dim=16,
    vocab_size=32000,
    moe_decompose="vertical",
)


def timed(fn, repeats: int) -> list[float]:
    """Wall times in ms of `repeats` calls (after one warm-up); fn gets the call number."""
    fn(-1)
    times = []
    for n in range(repeats):
        started = time.perf_counter()
        fn(n)
        times.append(1000 * (time.perf_counter() - started))
    return times


def report(name: str, times: list[float], goal_ms: float | None = None) -> None:
    median, worst = statistics.median(times), max(times)
    goal = f"  (goal <= {goal_ms:g} ms: {'met' if median <= goal_ms else 'MISSED'})" if goal_ms else ""
    print(f"  {name:<44} median {median:8.1f} ms   max {worst:8.1f} ms{goal}")


def random_model(hidden: int, tokens: int, router_scale: float) -> MonetForCausalLM:
    """Random weights; router weights scaled up so its softmaxes are peaked like a trained router's (with the
    default init about nothing reaches the 1e-2 threshold), then the router BatchNorm statistics calibrated
    so each head selects about moe_topk entries per side."""
    torch.manual_seed(0)
    config = MonetConfig(hidden_size=hidden, num_attention_heads=max(1, hidden // 64), **PUBLISHED_ROUTING)
    model = MonetForCausalLM(config).eval()
    routers = [layer.router for layer in model.model.layers if layer.router is not None]
    for router in routers:
        router.w1.weight.data *= router_scale
        router.w2.weight.data *= router_scale
    norms = [norm for router in routers for norm in (router.norm1, router.norm2)]
    for norm in norms:
        norm.train()
        norm.momentum = None  # cumulative average: one pass sets the statistics
    with torch.no_grad():
        model(torch.randint(0, config.vocab_size, (2, tokens)), use_cache=False)
    for norm in norms:
        norm.eval()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", help="synthetic index to reuse (built at --build-at when missing)")
    parser.add_argument("--build-at", default="/tmp/monet-bench/synthetic-published.duckdb")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--router-scale", type=float, default=30.0, help="peakedness of the random router")
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    path = Path(args.index or args.build_at)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building the synthetic index at {path} (once; minutes) ...", flush=True)
        print(build_synthetic_index(path))
    index = ExpertIndex(path)
    meta = index.meta_dict()
    print(
        f"index: {path} ({path.stat().st_size / 1e9:.1f} GB): {meta['num_groups']} groups x "
        f"{meta['moe_experts']}^2 experts, K = {meta['top_k']}, {meta['tokens_processed']:,} tokens"
    )

    model = random_model(args.hidden, args.prompt_tokens, args.router_scale)
    explorer = Explorer(model, None, index, "random Monet, published routing shapes", [], Limits())
    E, groups = explorer.shape.experts_per_side, explorer.shape.num_groups
    rng = np.random.default_rng(0)
    refs = [
        ExpertRef(int(rng.integers(groups)), int(rng.integers(E)), int(rng.integers(E)), E)
        for _ in range(8 * (args.repeats + 1))
    ]

    fresh = iter(refs)  # every call a new random expert: the index's small example cache never helps

    print("\na. expert page data (random experts, each read once)")
    report(
        "index queries (Explorer.expert_page)", timed(lambda n: explorer.expert_page(next(fresh)), args.repeats), 100
    )
    report(
        "whole page render (pages.expert_view)",
        timed(lambda n: pages.expert_view(explorer, str(next(fresh))), args.repeats),
        100,
    )
    print("  where the index time goes:")
    parts = {
        "stats": lambda r: index.stats(r.group, r.flat),
        "expert_examples (top + samples, windows)": lambda r: index.expert_examples(r.group, r.flat),
        "histogram": lambda r: index.histogram(r.group, r.flat),
        "domain_means": lambda r: index.domain_means(r.group, r.flat),
        "siblings": lambda r: index.siblings(r.group, r.i, r.j),
    }
    for name, part in parts.items():
        report(f"  {name}", timed(lambda n, part=part: part(next(fresh)), args.repeats))
    print("  (top_examples, quantile_examples and top_tokens are read from expert_examples' rows)")

    print("\nb. search")
    searches = [
        ("by id (G5/147040)", lambda n: explorer.search(f"G{refs[n].group + 1}/{refs[n].flat}"), args.repeats),
        ("by token (tok1234), all groups", lambda n: explorer.search(f"tok{1000 + n}", "token"), args.repeats),
        ("by text inside top contexts, one group", lambda n: explorer.search(f"tok{2000 + n}tok", "text", 0), 5),
        ("by text inside top contexts, all groups", lambda n: explorer.search(f"tok{3000 + n}tok", "text"), 5),
        ("by text, a needle in every document (tok1)", lambda n: explorer.search("tok1", "text"), 3),
    ]
    for name, search, repeats in searches:
        try:
            report(name, timed(search, repeats), 200)
        except Exception as error:  # a figure, not a crash: the failure is the finding
            print(f"  {name:<44} FAILED: {type(error).__name__}: {str(error).splitlines()[0]}")
    for needle in ("tok3000tok", "tok1"):
        found = search_text(index, needle)
        print(
            f"  text {needle!r}: {found.documents_containing:,} documents contain it,"
            f" {found.documents_searched:,} searched (exact when equal)"
        )

    print(f"\nc. prompt inspector, {args.prompt_tokens} tokens, hidden {args.hidden}, 24 layers, E 512, H 8")
    ids = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens))
    pieces = [f"t{t}" for t in ids[0].tolist()]
    token_ids = ids[0].tolist()
    steps = {  # interleaved and best of several, against other jobs on the machine
        "plain forward (logits)": lambda: model(ids, use_cache=False),
        "decoder only": lambda: model.model(ids, use_cache=False),
        "inspector": lambda: inspect_prompt(model, token_ids, pieces),
    }
    best = {name: float("inf") for name in steps}
    for _ in range(max(3, args.repeats // 4)):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            best[name] = min(best[name], 1000 * (time.perf_counter() - started))
    inspection = inspect_prompt(model, token_ids, pieces)
    busiest = int(inspection.active_counts().sum(1).argmax())
    rendered = min(
        timed(
            lambda n: (
                pages.inspector_tokens_html(inspection, busiest),
                pages.token_experts_html(explorer, inspection, busiest),
            ),
            5,
        )
    )
    active = inspection.active_counts()
    print("  " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in best.items()) + f", render {rendered:.0f} ms")
    print(f"  active experts per token and group: median {np.median(active):.0f}, max {active.max()}")
    ratio = (best["inspector"] + rendered) / best["plain forward (logits)"]
    print(
        f"  inspector (with render) / plain forward = {ratio:.2f}x  (goal <= 2x: {'met' if ratio <= 2 else 'MISSED'});"
        f" / decoder only = {(best['inspector'] + rendered) / best['decoder only']:.2f}x"
    )

    print("\nd. overview")
    report("group density map (index)", timed(lambda n: index.group_density_map(n % groups), max(3, groups)))
    density = index.group_density_map(0)
    report("E x E map as HTML (PNG + marginals)", timed(lambda n: html.density_map_html(density, 0), 5))
    report("most and least active", timed(lambda n: explorer.most_and_least_active(n % groups), args.repeats))


if __name__ == "__main__":
    main()
