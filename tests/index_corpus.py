"""A tiny labelled corpus and index-building helper shared by the index tests (not a test module)."""

import json
from pathlib import Path

from precompute.indexing.job import IndexOptions

DOCUMENTS = [
    ("prose", "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again."),
    ("code", "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"),
    ("prose", "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age."),
    ("german", "Der schnelle braune Fuchs springt über den faulen Hund. Ein Hund ist kein Fuchs, sagt man."),
    ("code", "for i in range(10):\n    if i % 2:\n        print(i * i)\n"),
    ("prose", "The quick brown fox jumps over the lazy dog."),
    ("german", "Über den Wolken muss die Freiheit wohl grenzenlos sein."),
    ("code", "class Stack:\n    def __init__(self):\n        self.items = []\n"),
    ("prose", "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again."),
]


def write_corpus(folder: Path) -> Path:
    path = folder / "corpus.jsonl"
    lines = [
        json.dumps({"id": f"doc{n}", "text": text, "domain": domain}) for n, (domain, text) in enumerate(DOCUMENTS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_options(checkpoint: Path, corpus: Path, out: Path, **overrides) -> IndexOptions:
    settings = dict(
        model=str(checkpoint),
        corpus=str(corpus),
        out=str(out),
        seq_len=24,
        batch_size=3,
        top_k=4,
        samples=3,
        context=3,
        min_weight=0.01,
        device="cpu",
        dtype="float32",
        checkpoint_every=10**9,
        no_embeddings=True,
        quiet=True,
    )
    return IndexOptions(**{**settings, **overrides})
