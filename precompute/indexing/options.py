"""What an index job is asked to do, and the checks that it can: options, shards and their documents, the tokenizer,
the model's fingerprint.

`IndexOptions` is the command line of `python -m precompute index` (precompute.cli builds the arguments
from its fields and their help). The fingerprint identifies a model for resuming and merging.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from explorer.paths import EMBEDDED_CORPUS, EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR
from precompute.cli import CommandError, option
from precompute.corpus.documents import Document, read_documents

# Config entries that do not change what the model computes: left out of its fingerprint.
UNFINGERPRINTED_CONFIG = (
    "transformers_version",
    "_name_or_path",
    "output_router_probs",
    "use_cache",
    "dtype",
    "torch_dtype",
    "architectures",
)


class IndexJobError(CommandError, RuntimeError):
    """A job that cannot go on; the message names the file and the fix. Checkpoints are kept."""


@dataclass
class IndexOptions:
    """Options of `python -m precompute index`; the CLI is generated from these fields and their help."""

    model: str = option(str(EMBEDDED_MODEL_DIR), "model folder or hub id")
    corpus: str = option(
        str(EMBEDDED_CORPUS),
        ".txt/.jsonl/.jsonl.gz/.parquet file or folder (fields text, optional domain, id), or a Hugging"
        " Face dataset name (streamed; needs `pip install datasets`)",
    )
    split: str | None = option(None, "dataset split; for files, keep only records whose `split` field equals it")
    tokenizer: str | None = option(None, "tokenizer folder or hub id (default: --model)")
    out: str = option(str(EMBEDDED_INDEX_PATH), "the DuckDB index file to write")
    max_tokens: int | None = option(None, "stop after this many tokens (per shard); gives the progress bar an ETA")
    seq_len: int | None = option(
        None, "tokens per forward window (default: the model's max_position_embeddings, <= 512)"
    )
    batch_size: int = option(8, "windows per forward pass")
    top_k: int = option(32, "top contexts kept per expert")
    samples: int = option(8, "uniformly sampled activations kept per expert")
    context: int = option(8, "tokens kept on each side of an example for display")
    min_weight: float = option(
        1e-2, "density threshold: an expert is active where its weight >= this; lighter weights count as 0"
    )
    device: str = option("auto", "cpu, cuda, cuda:1, ... (auto: cuda if available)")
    dtype: str = option("auto", "float32, bfloat16, float16 (auto: bf16 on GPU)")
    checkpoint_every: int = option(1_000_000, "tokens between checkpoints")
    shard: str = option("0/1", "k/n: index only documents whose index % n == k")
    no_embeddings: bool = option(False, "skip sentence embeddings (no semantic search, no coherence scores)")
    scores_for: str = option(
        "all",
        "experts whose scores (causal effect; coherence unless --no-embeddings) are computed once the index is"
        " written (see `python -m precompute scores --help`), or 'none'",
    )
    force: bool = option(False, "overwrite an existing --out file")
    quiet: bool = option(False, "no progress bars")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise IndexJobError(f"--shard {text!r}: write k/n, e.g. 0/4 for the first of four shards.") from None
    if not 0 <= k < n:
        raise IndexJobError(f"--shard {text!r}: k must lie in 0..n-1.")
    return k, n


def refuse_to_overwrite(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise IndexJobError(f"{out} already exists: pass --force to overwrite it, or choose another --out.")


def shard_documents(corpus: str, split: str | None, shard: tuple[int, int]) -> Iterator[Document]:
    """The corpus' documents that shard k/n indexes: those whose index % n == k, in corpus order."""
    k, n = shard
    for document in read_documents(corpus, split):
        if document.index % n == k:
            yield document


def tokenize(tokenizer, text: str) -> list[int]:
    """A document's token ids, as the index job runs them (its own <s> / </s> included when the tokenizer adds them)."""
    return tokenizer(text, verbose=False)["input_ids"]


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise IndexJobError(
            f"No usable tokenizer at {source} ({error}). Put tokenizer.json + tokenizer_config.json in the model"
            " folder, or pass --tokenizer FOLDER_OR_HUB_ID."
        ) from None


def fingerprint(model, tokenizer) -> dict:
    """What identifies a model for resuming and merging: its config, a weight sample and the vocabulary."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in UNFINGERPRINTED_CONFIG}
    weights = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(parameter.detach().flatten()[:64].float().cpu().numpy().tobytes())
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    return {"config": config, "weights": weights.hexdigest(), "vocab": vocab}
