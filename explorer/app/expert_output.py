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

from explorer.app.generation import on_gpu
from explorer.model.naming import ModelShape


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
    moe_inputs = model.model(batch.to(model.device), use_cache=False, output_moe_inputs=True).moe_inputs
    rows = torch.arange(len(windows))
    positions = torch.tensor([position for _, position in windows])
    direction = sum(
        model.model.layers[layer].moe.expert_output(moe_inputs[layer][rows, positions], i, j).float().mean(0)
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
