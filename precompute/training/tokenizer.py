"""Byte-level BPE tokenizer for the embedded default model, trained on the corpus' train split.

Byte-level, so any UTF-8 text (umlauts, ñ, code) round-trips. Special tokens sit where the
published Llama-style Monet tokenizers keep them: `<unk>` 0, `<s>` 1, `</s>` 2. Like the
conformance fixtures, the tokenizer adds no BOS by itself; the trainer frames every
document as `<s> text </s>`.

    python -m precompute tokenizer --corpus assets/corpus --out FOLDER   (train does this itself)
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from precompute.cli import option, required_option
from precompute.corpus.build import load_corpus

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
VOCAB_SIZE = 8192


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is <unk>
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: str | Path, model_max_length: int) -> None:
    """Write tokenizer.json and tokenizer_config.json, loadable with AutoTokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": model_max_length,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")


def as_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@dataclass
class TokenizerOptions:
    """Options of `python -m precompute tokenizer`."""

    out: str = required_option("output folder (tokenizer.json, tokenizer_config.json)")
    corpus: str = option("assets/corpus", "corpus folder (corpus.jsonl.gz); its train split is used")
    vocab_size: int = option(VOCAB_SIZE, "byte-level BPE vocabulary size")
    model_max_length: int = option(2048, "model_max_length written to tokenizer_config.json")


def run_tokenizer(options: TokenizerOptions) -> None:
    """Train and save the tokenizer (seconds on the shipped corpus: no progress bar needed)."""
    train_texts = [d["text"] for d in load_corpus(options.corpus) if d["split"] == "train"]
    tokenizer = train_tokenizer(train_texts, options.vocab_size)
    save_tokenizer(tokenizer, options.out, options.model_max_length)
    print(f"vocab {tokenizer.get_vocab_size()} -> {options.out}")
