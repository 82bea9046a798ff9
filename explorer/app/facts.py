"""What the overview shows about the loaded model and index, as structured data (the web layer words it)."""

from dataclasses import dataclass

from explorer.index.reader import ExpertIndex
from explorer.model.naming import ModelShape


@dataclass(frozen=True)
class GroupFacts:
    group: int  # 0-based
    layers: range  # the decoder layers sharing the group's router
    experts_ever_active: int | None  # experts active at least once in the index; None without an index


@dataclass(frozen=True)
class ModelFacts:
    decomposition: str  # "VD" or "HD"
    layers: int
    hidden_size: int
    experts_per_side: int
    experts_per_layer: int
    router_heads: int
    moe_topk: int
    expert_width: int
    vocab_size: int
    device: str
    dtype: str
    groups: list[GroupFacts]


@dataclass(frozen=True)
class IndexFacts:
    path: str
    corpus: str
    tokens_processed: int
    documents_processed: int
    top_k: int
    context: int
    min_weight: float
    created: str
    dtype: str
    embedding_model: str | None
    domains: list[str]


@dataclass(frozen=True)
class Facts:
    model_id: str
    problems: list[str]
    model: ModelFacts | None  # None: no model loaded
    index: IndexFacts | None  # None: no index loaded


def model_facts(model, shape: ModelShape, ever_active: list[int] | None) -> ModelFacts:
    c = model.config
    groups = [
        GroupFacts(g, shape.group_layers(g), None if ever_active is None else ever_active[g])
        for g in range(shape.num_groups)
    ]
    return ModelFacts(
        {"vertical": "VD", "horizontal": "HD"}[c.moe_decompose],
        c.num_hidden_layers,
        c.hidden_size,
        c.moe_experts,
        c.moe_experts**2,
        c.moe_heads,
        c.moe_topk,
        c.moe_dim,
        c.vocab_size,
        str(model.device),
        str(model.dtype).removeprefix("torch."),
        groups,
    )


def index_facts(index: ExpertIndex) -> IndexFacts:
    meta = index.meta_dict()
    return IndexFacts(
        str(index.path),
        meta.get("corpus"),
        meta.get("tokens_processed"),
        meta.get("documents_processed"),
        meta.get("top_k"),
        meta.get("context"),
        meta.get("min_weight"),
        meta.get("created"),
        meta.get("dtype"),
        meta.get("embedding_model"),
        list(index.domain_tokens()),
    )
