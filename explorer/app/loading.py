"""Loading what the app runs on: the model, its tokenizer and the expert index, and the check that they belong together.

`load(settings)` never raises: a missing model, a missing, corrupt or mismatched index become
`problems`, sentences the page shows, each saying how to fix it.
"""

from dataclasses import dataclass, field

import numpy as np

from explorer.app.generation import Limits
from explorer.index.reader import ExpertIndex, IndexUnavailable

VOCABULARY_PROBES = 64  # token ids compared between the index and the tokenizer


@dataclass(frozen=True)
class AppSettings:
    model: str
    index: str | None
    device: str = "auto"
    dtype: str = "auto"
    limits: Limits = field(default_factory=Limits)


@dataclass
class Loaded:
    model: object | None
    tokenizer: object | None
    index: ExpertIndex | None
    problems: list[str]


def check_index_matches_model(index: ExpertIndex, model, tokenizer) -> str | None:
    """A sentence saying how the index differs from the model, or None when they match."""
    meta, config = index.meta_dict(), model.config
    expected = {
        "num_layers": config.num_hidden_layers,
        "moe_groups": config.moe_groups,
        "moe_experts": config.moe_experts,
        "moe_heads": config.moe_heads,
        "moe_decompose": config.moe_decompose,
    }
    differ = [f"{key} {meta.get(key)} (model: {value})" for key, value in expected.items() if meta.get(key) != value]
    if not differ and tokenizer is not None and not _same_vocabulary(index, tokenizer):
        differ.append("its vocabulary (the tokenizer decodes token ids differently)")
    if differ:
        return (
            f"The index {index.path} was built for another model ({meta.get('model')}): it differs in "
            f"{'; '.join(differ)}. Expert pages and search are off; pass the index built for this model."
        )
    return None


def _same_vocabulary(index: ExpertIndex, tokenizer) -> bool:
    """Whether the index's token texts equal the tokenizer's decode of a spread of token ids."""
    probe = sorted({int(t) for t in np.linspace(0, len(tokenizer) - 1, VOCABULARY_PROBES)})
    try:
        return all(index.token_text(t) == tokenizer.decode([t]) for t in probe)
    except IndexError:  # the index's vocabulary is smaller
        return False


def load(settings: AppSettings) -> Loaded:
    """The model, tokenizer and index of `settings`, each None where it could not be loaded (see `problems`)."""
    from transformers import AutoTokenizer

    from explorer.model.device import load_model

    problems, model, tokenizer, index = [], None, None, None
    try:
        model = load_model(settings.model, settings.device, settings.dtype)
    except (OSError, ValueError, RuntimeError) as error:
        problems.append(
            f"No model could be loaded from {settings.model} ({first_line(error)}). Set --model"
            " or MONET_MODEL to a Monet checkpoint folder or hub id"
            " (e.g. MonetLLM/monet-vd-1.4B-100BT-hf)."
        )
    if model is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(settings.model)
        except (OSError, ValueError, TypeError) as error:
            problems.append(f"No tokenizer in {settings.model} ({first_line(error)}): text input is off.")
    if not settings.index:
        problems.append(
            "No expert index configured: set --index or MONET_INDEX. Inspector and live"
            " ablation work without one; expert pages and search need it."
        )
    else:
        try:
            index = ExpertIndex(settings.index)
        except IndexUnavailable as error:
            problems.append(str(error))
    if index is not None and model is not None:
        mismatch = check_index_matches_model(index, model, tokenizer)
        if mismatch:
            problems.append(mismatch)
            index.close()
            index = None
    return Loaded(model, tokenizer, index, problems)


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
