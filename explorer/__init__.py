"""Monet Explorer: an exact Monet model for transformers 5, its expert index and its app.

Importing this package registers model_type "monet" with AutoConfig, AutoModel and
AutoModelForCausalLM, so `AutoModelForCausalLM.from_pretrained(folder_or_hub_id)` loads the
published MonetLLM checkpoints with this project's code, never with their remote code.

The rooms, each importing only the ones before it:
    explorer.model   torch + transformers: the model, expert naming, ablation, sparse expert weights
    explorer.index   the DuckDB index file: its schema and the read API
    explorer.app     what the app answers, without gradio
    explorer.web     gradio: layout, HTML, charts, the named API
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from explorer.model.ablation import Ablation
from explorer.model.device import load_model
from explorer.model.monet import MonetConfig, MonetForCausalLM, MonetModel
from explorer.model.naming import ExpertRef, ModelShape, parse_expert_ref, parse_expert_spec
from explorer.model.sparse import SparseExpertWeights, dense_expert_weights, sparse_expert_weights

AutoConfig.register("monet", MonetConfig, exist_ok=True)
AutoModel.register(MonetConfig, MonetModel, exist_ok=True)
AutoModelForCausalLM.register(MonetConfig, MonetForCausalLM, exist_ok=True)

_INDEX_NAMES = {"ExpertIndex", "IndexUnavailable", "IndexMeta"}


def __getattr__(name: str):
    # The index reader pulls in DuckDB: load it when asked for, so `import explorer` stays a model import.
    if name in _INDEX_NAMES:
        from explorer.index import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'explorer' has no attribute {name!r}")


__all__ = [
    "Ablation",
    "ExpertIndex",
    "ExpertRef",
    "IndexMeta",
    "IndexUnavailable",
    "ModelShape",
    "MonetConfig",
    "MonetForCausalLM",
    "MonetModel",
    "SparseExpertWeights",
    "dense_expert_weights",
    "load_model",
    "parse_expert_ref",
    "parse_expert_spec",
    "sparse_expert_weights",
]
