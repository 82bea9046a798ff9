"""Prompt inspector: which experts are active at each token of a text, per routing group, and through which heads.

One forward pass with the router distributions; per routing group, `sparse_expert_weights` gives every
(token, expert, weight) with weight >= min_weight, and the weight is split into the router heads that
carry it (head h contributes g1[h, i] * g2[h, j]). Results stay as flat numpy arrays; lists per token
are cut on demand, so a long prompt at 262,144 experts per group costs one forward plus a little.
"""

from dataclasses import dataclass

import numpy as np
import torch

from explorer.app.generation import on_gpu
from explorer.model.naming import ExpertRef, ModelShape, group_name
from explorer.model.sparse import sparse_expert_weights

ACTIVE_WEIGHT = 1e-2  # the authors' threshold for an "active" expert


@dataclass(frozen=True)
class ActiveExpert:
    group: int  # 0-based
    expert: int  # flat id i * E + j
    i: int
    j: int
    weight: float
    head_weights: tuple[float, ...]  # each router head's part of the weight (sums to `weight`)

    @property
    def name(self) -> str:
        return f"{group_name(self.group)}/{self.expert}"

    def heads_text(self) -> str:
        """Heads carrying the weight, largest first, e.g. "h1 70%, h0 30%"."""
        order = sorted(range(len(self.head_weights)), key=lambda h: -self.head_weights[h])
        return ", ".join(f"h{h} {self.head_weights[h] / self.weight:.0%}" for h in order if self.head_weights[h] > 0)

    def to_json(self) -> dict:
        return {
            "expert": self.name,
            "i": self.i,
            "j": self.j,
            "weight": self.weight,
            "head_weights": list(self.head_weights),
        }


@dataclass(frozen=True)
class PromptInspection:
    token_ids: list[int]
    tokens: list[str]  # display pieces
    shape: ModelShape
    min_weight: float
    # flat arrays, one entry per active (token, group, expert)
    position: np.ndarray
    group: np.ndarray
    expert: np.ndarray
    weight: np.ndarray
    head_weights: np.ndarray  # [N, H]

    def experts_at(self, position: int, group: int, limit: int | None = None) -> list[ActiveExpert]:
        """Active experts of one routing group at one token, heaviest first."""
        rows = np.flatnonzero((self.position == position) & (self.group == group))
        rows = rows[np.argsort(-self.weight[rows], kind="stable")][:limit]
        E = self.shape.experts_per_side
        return [
            ActiveExpert(
                group,
                int(self.expert[r]),
                int(self.expert[r]) // E,
                int(self.expert[r]) % E,
                float(self.weight[r]),
                tuple(float(w) for w in self.head_weights[r]),
            )
            for r in rows
        ]

    def active_counts(self) -> np.ndarray:
        """[tokens, groups] number of active experts."""
        counts = np.zeros((len(self.token_ids), self.shape.num_groups), dtype=int)
        np.add.at(counts, (self.position, self.group), 1)
        return counts

    def to_json(self, per_group: int = 20) -> dict:
        """Per token, the heaviest `per_group` active experts of each group (group names count from 1)."""
        return {
            "min_weight": self.min_weight,
            "tokens": [
                {
                    "token": piece,
                    "token_id": token_id,
                    "groups": {
                        f"{group_name(g)}": [e.to_json() for e in self.experts_at(t, g, per_group)]
                        for g in range(self.shape.num_groups)
                    },
                }
                for t, (piece, token_id) in enumerate(zip(self.tokens, self.token_ids, strict=True))
            ],
        }


def _head_weights(g1: torch.Tensor, g2: torch.Tensor, sparse, E: int) -> torch.Tensor:
    """Each head's part g1[h, i] * g2[h, j] of the listed weights: [N, H]."""
    i, j = sparse.expert // E, sparse.expert % E
    return g1[sparse.row, sparse.position, :, i] * g2[sparse.row, sparse.position, :, j]


@on_gpu
@torch.no_grad()
def inspect_prompt(
    model, token_ids: list[int], tokens: list[str], min_weight: float = ACTIVE_WEIGHT
) -> PromptInspection:
    shape = ModelShape.of(model.config)
    output = model.model(torch.tensor([token_ids], device=model.device), use_cache=False, output_router_probs=True)
    parts = []
    for group in range(shape.num_groups):
        g1, g2 = (p.float() for p in output.router_probs[shape.group_layers(group)[0]])
        sparse = sparse_expert_weights(g1, g2, min_weight=min_weight)
        heads = _head_weights(g1, g2, sparse, shape.experts_per_side)
        group_column = torch.full_like(sparse.expert, group)
        parts.append((sparse.position, group_column, sparse.expert, sparse.weight, heads))
    position, group, expert, weight, heads = (torch.cat(column).cpu().numpy() for column in zip(*parts, strict=True))
    return PromptInspection(list(token_ids), list(tokens), shape, min_weight, position, group, expert, weight, heads)


@dataclass(frozen=True)
class FiringExpert:
    ref: ExpertRef
    total_weight: float  # summed over the text's tokens
    active_tokens: int

    def to_json(self) -> dict:
        return {"expert": str(self.ref), "total_weight": self.total_weight, "active_tokens": self.active_tokens}


def experts_firing_most(inspection: PromptInspection, n: int = 20, group: int | None = None) -> list[FiringExpert]:
    """The experts with the largest summed weight over the whole text (optionally one group's only)."""
    keep = np.ones_like(inspection.group, dtype=bool) if group is None else inspection.group == group
    E = inspection.shape.experts_per_side
    key = inspection.group[keep].astype(np.int64) * E * E + inspection.expert[keep]
    keys, inverse = np.unique(key, return_inverse=True)
    totals = np.bincount(inverse, weights=inspection.weight[keep])
    counts = np.bincount(inverse)
    best = np.lexsort((keys, -totals))[:n]
    return [
        FiringExpert(
            ExpertRef.from_flat(int(keys[b] // (E * E)), int(keys[b] % (E * E)), E),
            float(totals[b]),
            int(counts[b]),
        )
        for b in best
    ]


@dataclass(frozen=True)
class ExpertPush:
    ref: ExpertRef
    weight: float  # w_ij at the position (the same in every layer of the group)
    logit: float  # its exact contribution to the token's logit along the direct path, summed over the group's layers

    def to_json(self) -> dict:
        return {"expert": str(self.ref), "weight": self.weight, "logit": self.logit}


@dataclass(frozen=True)
class TokenWhy:
    """Which experts pushed one next-token logit, read along the direct path (see `why_next_token`)."""

    position: int  # the token whose output is read
    token_id: int  # the next token whose logit is explained
    logit: float  # its logit
    layer_logits: list[float]  # each layer's MoE output along the same path: the sum of its experts' pushes
    up: list[ExpertPush]  # strongest positive pushes first
    down: list[ExpertPush]  # strongest negative pushes first
    experts: int  # active experts at the position, over all groups

    def to_json(self) -> dict:
        return {
            "position": self.position,
            "token_id": self.token_id,
            "logit": self.logit,
            "layer_logits": self.layer_logits,
            "up": [push.to_json() for push in self.up],
            "down": [push.to_json() for push in self.down],
            "active_experts": self.experts,
        }


@on_gpu
@torch.no_grad()
def why_next_token(model, token_ids: list[int], position: int, token_id: int | None = None, n: int = 10) -> TokenWhy:
    """Each active expert's exact contribution to the logit of the token after `position`.

    The logit is unembedding[v] . (gain * h / rms(h)) of the final residual stream h, and h is a sum of
    every layer's outputs; every expert's term w_ij E_ij(x) of it reaches the logit along the direct path
    (through the final norm at this position's scale, then the unembedding) as w_ij * r . E_ij(x), with
    r = unembedding[v] * gain / rms(h). The contributions of all experts of a layer sum exactly to that
    layer's MoE output along r. `token_id` defaults to the text's next token, or the model's top
    prediction after the last one.
    """
    shape = ModelShape.of(model.config)
    ids = torch.tensor([token_ids], device=model.device)
    out = model(ids, use_cache=False, output_router_probs=True, output_moe_inputs=True)
    if token_id is None:
        token_id = token_ids[position + 1] if position + 1 < len(token_ids) else int(out.logits[0, position].argmax())
    h = out.pre_norm_hidden_state[0, position].float()
    norm = model.model.norm
    scale = torch.rsqrt(h.pow(2).mean() + norm.variance_epsilon)
    direction = model.lm_head.weight[token_id].float() * norm.weight.float() * scale
    E = shape.experts_per_side
    pushes, layer_logits, active = [], [], 0
    for group in range(shape.num_groups):
        g1, g2 = (p[:, position : position + 1].float() for p in out.router_probs[shape.group_layers(group)[0]])
        sparse = sparse_expert_weights(g1, g2)
        active += sparse.expert.numel()
        per_expert = torch.zeros(sparse.expert.numel(), dtype=torch.float64, device=h.device)
        for layer in shape.group_layers(group):
            moe = model.model.layers[layer].moe
            x = out.moe_inputs[layer][0, position]
            along = moe.expert_outputs_along(x.to(direction.dtype), direction.to(x.dtype)).float().flatten()
            per_expert += (sparse.weight * along[sparse.expert]).double()
            layer_logits.append(float(direction @ moe(x[None, None], g1, g2)[0, 0].float()))
        pushes += [
            ExpertPush(ExpertRef.from_flat(group, int(e), E), float(w), float(c))
            for e, w, c in zip(sparse.expert.tolist(), sparse.weight.tolist(), per_expert.tolist(), strict=True)
        ]
    pushes.sort(key=lambda push: push.logit)
    up = [push for push in reversed(pushes[-n:]) if push.logit > 0]
    down = [push for push in pushes[:n] if push.logit < 0]
    return TokenWhy(position, token_id, float(out.logits[0, position, token_id]), layer_logits, up, down, active)


@on_gpu
@torch.no_grad()
def expert_weights_on_text(model, token_ids: list[int], ref: ExpertRef) -> list[float]:
    """One expert's exact weight w_ij = sum_h g1[h, i] g2[h, j] at every token of a text (one forward; the
    same weight in every layer of its group), with nothing cut below a threshold."""
    shape = ModelShape.of(model.config)
    output = model.model(torch.tensor([token_ids], device=model.device), use_cache=False, output_router_probs=True)
    g1, g2 = (p.float() for p in output.router_probs[shape.group_layers(ref.group)[0]])
    return (g1[0, :, :, ref.i] * g2[0, :, :, ref.j]).sum(-1).tolist()
