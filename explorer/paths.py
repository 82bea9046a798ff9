"""Where the shipped assets live: the embedded default model, its index and its corpus."""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
ASSETS_DIR = REPO_DIR / "assets"
EMBEDDED_MODEL_DIR = ASSETS_DIR / "monet-embedded"
EMBEDDED_INDEX_PATH = ASSETS_DIR / "monet-embedded.duckdb"
EMBEDDED_CORPUS = ASSETS_DIR / "corpus" / "corpus.jsonl.gz"
