"""Monet Explorer: configuration and launch (a Hugging Face Space runs this file).

    python app.py                                   # the embedded model and index in assets/
    python app.py --model MonetLLM/monet-vd-1.4B-100BT-hf --index /data/monet-vd-1.4B.duckdb

Every option also reads an environment variable (MONET_MODEL, MONET_INDEX, ...), so a Space is
configured by its settings alone. A missing model or index never stops the app: the page says what
is missing and how to fix it.
"""

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home, before gradio is imported

from explorer.app.generation import Limits  # noqa: E402
from explorer.paths import ASSETS_DIR, EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR  # noqa: E402

EMBEDDED_PRESETS_PATH = ASSETS_DIR / "presets.json"

OPTIONS = [  # flag, environment variable, default, help
    ("--model", "MONET_MODEL", str(EMBEDDED_MODEL_DIR), "Monet checkpoint folder or hub id"),
    (
        "--index",
        "MONET_INDEX",
        None,
        "expert index (DuckDB) built for that model; default: the embedded index when the model is the embedded one",
    ),
    (
        "--presets",
        "MONET_PRESETS",
        None,
        "demo presets (JSON: the Start here row and talk mode); default: assets/presets.json for the embedded model",
    ),
    ("--device", "MONET_DEVICE", "auto", "cpu, cuda, cuda:1 ... (auto: cuda when available)"),
    (
        "--dtype",
        "MONET_DTYPE",
        "auto",
        "float32, bfloat16, float16 (auto: bfloat16 on GPU, and on a CPU with native bfloat16 (AVX512-BF16, AMX)"
        " for models of 100M parameters or more; float32 otherwise)",
    ),
    ("--host", "MONET_HOST", None, "address to serve on (default: GRADIO_SERVER_NAME or 127.0.0.1)"),
    ("--port", "MONET_PORT", None, "port to serve on (default: GRADIO_SERVER_PORT or 7860)"),
    ("--model-concurrency", "MONET_MODEL_CONCURRENCY", "2", "requests running the model at once"),
    ("--max-prompt-tokens", "MONET_MAX_PROMPT_TOKENS", str(Limits.max_prompt_tokens), "longest prompt accepted"),
    ("--max-new-tokens", "MONET_MAX_NEW_TOKENS", str(Limits.max_new_tokens), "most new tokens per generation"),
    ("--max-text-tokens", "MONET_MAX_TEXT_TOKENS", str(Limits.max_text_tokens), "longest text for perplexity"),
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, env, default, help_text in OPTIONS:
        parser.add_argument(flag, default=os.environ.get(env, default), help=f"{help_text} (env {env})")
    parser.add_argument(
        "--share",
        action="store_true",
        default=os.environ.get("MONET_SHARE") == "1",
        help="also serve on a public gradio.live link (env MONET_SHARE=1)",
    )
    args = parser.parse_args(argv)
    if args.model == str(EMBEDDED_MODEL_DIR):  # the embedded model brings its own index and presets
        args.index = args.index if args.index is not None else str(EMBEDDED_INDEX_PATH)
        args.presets = args.presets if args.presets is not None else str(EMBEDDED_PRESETS_PATH)
    return args


def build_app(args: argparse.Namespace):
    from explorer.app.explorer import AppSettings, Explorer
    from explorer.app.presets import load_presets
    from explorer.web import ui

    limits = Limits(int(args.max_prompt_tokens), int(args.max_new_tokens), int(args.max_text_tokens))
    explorer = Explorer.load(AppSettings(args.model, args.index, args.device, args.dtype, limits))
    presets = load_presets(args.presets, explorer.resolve_ablation)  # checked against what was loaded
    for problem in presets.problems:  # also on the page, beside the load problems
        print(f"note: {problem}")
    demo = ui.build(explorer, model_concurrency=int(args.model_concurrency), presets=presets)
    return demo.queue(max_size=64, default_concurrency_limit=4), explorer


def main(argv=None) -> None:
    from explorer.web import ui

    args = parse_args(argv)
    demo, explorer = build_app(args)
    for problem in explorer.problems:
        print(f"note: {problem}")
    port = int(args.port) if args.port else None
    demo.launch(server_name=args.host, server_port=port, share=args.share, **ui.launch_options())


if __name__ == "__main__":
    main()
