"""The tokens an expert promotes and suppresses: its output direction read through the final norm and unembedding.

An expert's output E_ij(x) depends on the token it runs on (VD: through a_i and a'_j; HD: through a_i),
so it has no single direction. We take the one it actually writes where it matters: its mean output
at its top contexts from the index, summed over the layers of its routing group (each layer has its
own expert weights). The contexts are re-run through the model as the short windows the index keeps
(the model sees only that window, an approximation of the full document). The direction goes through
the final RMSNorm's gain and the unembedding, the direct path to the logits ("logit lens"; later
layers are ignored). Values are logit changes per unit of the expert's weight; the ranking is what
to read: highest = promoted, lowest = suppressed.
"""

from dataclasses import dataclass

import torch
from transformers.masking_utils import create_causal_mask

from explorer.app.generation import on_gpu
from explorer.model.naming import ModelShape


@torch.no_grad()
def post_attention_inputs(model, input_ids: torch.Tensor, layers: range) -> tuple[dict, torch.Tensor]:
    """The MoE input x (post-attention RMSNorm output) of each layer in `layers`, and the final hidden state.

    Mirrors MonetDecoderLayer.forward step by step (a test checks it against the model's own forward),
    so nothing is hooked into the shared model while other requests use it.
    """
    base = model.model
    hidden = base.embed_tokens(input_ids)
    position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    mask = create_causal_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None, position_ids=position_ids
    )
    position_embeddings = base.rotary_emb(hidden, position_ids=position_ids)
    captured, router_probs = {}, None
    for layer in base.layers:
        attended, _ = layer.self_attn(
            hidden_states=layer.input_layernorm(hidden), position_embeddings=position_embeddings, attention_mask=mask
        )
        hidden = hidden + attended
        x = layer.post_attention_layernorm(hidden)
        router_probs = layer.router(x) if layer.router is not None else router_probs
        if layer.layer_idx in layers:
            captured[layer.layer_idx] = x
        hidden = hidden + layer.moe(x, *router_probs)
    return captured, hidden


def expert_output(moe, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """E_ij(x) of one expert of one layer for inputs x [..., d] (see ../shared/MONET.md for the formulas)."""
    E = moe.experts
    if hasattr(moe, "u1"):  # vertical decomposition
        half = moe.u1.out_features // E
        rows, cols = slice(i * half, (i + 1) * half), slice(j * half, (j + 1) * half)
        a = moe.act_fn(x @ moe.u1.weight[rows].T + moe.u1.bias[rows])
        a_prime = moe.act_fn(x @ moe.u2.weight[cols].T + moe.u2.bias[cols])
        first = a @ moe.v11.weight[:, rows].T + a_prime @ moe.v12.weight[:, rows].T + moe.b1[i]
        second = a @ moe.v21.weight[:, cols].T + a_prime @ moe.v22.weight[:, cols].T + moe.b2[j]
        return torch.cat((first, second), dim=-1)
    width = moe.u.out_features // E
    rows, cols = slice(i * width, (i + 1) * width), slice(j * width, (j + 1) * width)
    a = moe.act_fn(x @ moe.u.weight[rows].T + moe.u.bias[rows])
    return a @ moe.v.weight[:, cols].T + moe.b[j]


@dataclass(frozen=True)
class TokenEffects:
    promoted: list[tuple[int, float]]  # (token id, logit change per unit weight), strongest first
    suppressed: list[tuple[int, float]]
    contexts: int  # how many contexts the direction was averaged over


@on_gpu
@torch.no_grad()
def token_effects(model, group: int, i: int, j: int, windows: list[tuple[list[int], int]], n: int = 10) -> TokenEffects:
    """Promoted/suppressed tokens of expert (i, j) of `group`, from its contexts: (window token ids, position)."""
    if not windows:
        return TokenEffects([], [], 0)
    layers = ModelShape.of(model.config).group_layers(group)
    length = max(len(ids) for ids, _ in windows)
    batch = torch.zeros((len(windows), length), dtype=torch.long)  # right padding never reaches earlier tokens
    for row, (ids, _) in enumerate(windows):
        batch[row, : len(ids)] = torch.tensor(ids)
    captured, _ = post_attention_inputs(model, batch.to(model.device), layers)
    rows = torch.arange(len(windows))
    positions = torch.tensor([position for _, position in windows])
    direction = sum(
        expert_output(model.model.layers[layer].moe, captured[layer][rows, positions], i, j).float().mean(0)
        for layer in layers
    )
    gain = model.model.norm.weight.float()
    logits = (direction * gain).to(model.lm_head.weight.dtype) @ model.lm_head.weight.T
    logits = logits.float().cpu()
    top, bottom = logits.topk(n), (-logits).topk(n)
    return TokenEffects(
        [(int(t), float(v)) for v, t in zip(*top, strict=True)],
        [(int(t), -float(v)) for v, t in zip(*bottom, strict=True)],
        len(windows),
    )
