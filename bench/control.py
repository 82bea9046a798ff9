"""How specific are the demo presets' switched-off sets? Each against its control (issue 11, item 5).

For every preset of a presets file (default assets/presets.json), the set is switched off, and so is its control:
as many experts of the same groups and layers, each drawn at random among those nearest in index density to one of
the set's (explorer.app.control, seed 0). Prints, on the preset's own text, on its control text, and on up to
--docs held-out corpus documents of the set's domain (for `domain:NAME` sets): the mean KL(plain || switched off)
of the next-token distributions for set and control, and specificity = the set's mean KL / the control's (the
definition the app shows, explorer.app.generation.SPECIFICITY_HELP; KL is pooled over all tokens of the documents).

Run: python -m bench.control [--model assets/monet-embedded] [--index assets/monet-embedded.duckdb]
     [--presets assets/presets.json] [--corpus assets/corpus/corpus.jsonl.gz] [--docs 24]
"""

import argparse
import math
import re
import time

from explorer.app.explorer import AppSettings, Explorer
from explorer.app.presets import read_presets
from explorer.paths import ASSETS_DIR, EMBEDDED_CORPUS, EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR

DOMAIN_SET = re.compile(r"^\s*domain\s*:\s*(\S+)\s*$")


def pooled(explorer: Explorer, texts: list[str], ablate: str) -> tuple[float, float, int]:
    """(set's mean KL, control's mean KL, tokens) over all scored tokens of the texts."""
    set_kl, control_kl = [], []
    for text in texts:
        effect = explorer.measure_text(text, ablate).effect
        set_kl += effect.kl
        control_kl += effect.control.kl
    return math.fsum(set_kl) / len(set_kl), math.fsum(control_kl) / len(control_kl), len(set_kl)


def heldout_texts(explorer: Explorer, corpus: str, domain: str, n: int, max_tokens: int = 200) -> list[str]:
    """The first n held-out documents of a domain, each cut to its first max_tokens tokens."""
    from precompute.corpus.build import load_corpus

    docs = [d["text"] for d in load_corpus(corpus) if d["split"] == "heldout" and d["domain"] == domain][:n]
    return [
        explorer.decode(explorer.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]) for text in docs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(EMBEDDED_MODEL_DIR))
    parser.add_argument("--index", default=str(EMBEDDED_INDEX_PATH))
    parser.add_argument("--presets", default=str(ASSETS_DIR / "presets.json"))
    parser.add_argument("--corpus", default=str(EMBEDDED_CORPUS))
    parser.add_argument("--docs", type=int, default=24, help="held-out documents of the set's domain")
    args = parser.parse_args()
    explorer = Explorer.load(AppSettings(args.model, args.index, "cpu", "float32"))
    if explorer.problems:
        raise SystemExit("; ".join(explorer.problems))
    print(f"model {args.model} · index {args.index}")
    print(f"{'preset':26s} {'on':22s} {'tokens':>6s} {'KL set':>8s} {'KL control':>10s} {'specificity':>11s}")
    for preset in read_presets(args.presets):
        start = time.perf_counter()
        control = explorer.measure_text(preset.prompt, preset.ablate).effect.control
        rows = [("its text", [preset.prompt]), ("its control text", [preset.control])]
        domain = DOMAIN_SET.match(preset.ablate)
        if domain:
            rows.append(
                (f"held-out {domain.group(1)} docs", heldout_texts(explorer, args.corpus, domain.group(1), args.docs))
            )
        for where, texts in rows:
            if not texts:
                continue
            set_kl, control_kl, tokens = pooled(explorer, texts, preset.ablate)
            specificity = f"{set_kl / control_kl:11.2f}" if control_kl > 0 else f"{'-':>11s}"
            print(f"{preset.title:26s} {where:22s} {tokens:6d} {set_kl:8.4f} {control_kl:10.4f} {specificity}")
        print(
            f"{'':26s} {control.control.experts:,} experts; mean density set {control.control.set_density:.4%},"
            f" control {control.control.control_density:.4%} ({time.perf_counter() - start:.1f} s)"
        )


if __name__ == "__main__":
    main()
