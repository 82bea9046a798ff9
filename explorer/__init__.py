"""Monet Explorer: an exact Monet model for transformers 5, its routing, its expert index and its app.

Importing this package registers model_type "monet" with AutoConfig, AutoModel and
AutoModelForCausalLM, so `AutoModelForCausalLM.from_pretrained(folder_or_hub_id)` loads the
published MonetLLM checkpoints with this project's code, never with their remote code.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from explorer.monet import MonetConfig, MonetForCausalLM, MonetModel

AutoConfig.register("monet", MonetConfig, exist_ok=True)
AutoModel.register(MonetConfig, MonetModel, exist_ok=True)
AutoModelForCausalLM.register(MonetConfig, MonetForCausalLM, exist_ok=True)

__all__ = ["MonetConfig", "MonetForCausalLM", "MonetModel"]
