"""Monet (Mixture of Monosemantic Experts for Transformers, Park et al., ICLR 2025) for transformers 5.

One plain file, in the manner of transformers' modeling files: the config, the router, the two
expert decompositions (vertical, VD; horizontal, HD), the decoder layer, the base model and the
causal LM. Attention, RMSNorm, rotary embeddings, masks, the KV cache and `generate` are
transformers' own Llama building blocks. Weight names are exactly those of the published
MonetLLM checkpoints, so `from_pretrained` loads them without remote code.

Switching experts off (ablation) travels with the call, `model(ids, ablate=...)` or
`model.generate(ids, ablate=...)`, never as module state: two requests with different
ablations can run at the same time on one model. The chosen experts' weight is set to zero with
no renormalisation of the others, by subtracting their own terms from the factorised output
(exact, and cheap: no [tokens, E*E] tensor is ever built). See ../shared/MONET.md.
"""

from dataclasses import dataclass
from statistics import NormalDist

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm, LlamaRotaryEmbedding

from explorer.model.ablation import Ablation, RowAblation, SwitchingOff
from explorer.model.naming import ModelShape
from explorer.model.sparse import SwitchedOffMatrices, switched_off_matrices

DECOMPOSITIONS = ("vertical", "horizontal")


@strict
class MonetConfig(PreTrainedConfig):
    r"""Configuration of a Monet model; field names are those of the published config.json files.

    moe_experts (E): experts per side, so a layer holds E*E experts (i, j), flat id i*E + j.
    moe_heads (H): router heads. moe_dim (m): hidden width of one expert.
    moe_topk: expected entries selected per head and side. moe_groups (G): a router lives in
    layers l % G == 0 and layers l+1 .. l+G-1 reuse its routing.
    moe_decompose: "vertical" (VD) or "horizontal" (HD).
    Legacy fields of the published files (`rope_theta`, `rope_scaling: null`, `intermediate_size:
    null`, `mlp_bias: null`, `auto_map`) are accepted as they are; `auto_map` is never executed.
    """

    model_type = "monet"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 32000
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "relu2"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None
    attention_bias: bool = False
    attention_dropout: float | int | None = 0.0
    pretraining_tp: int | None = 1
    # Unused by Monet (no dense MLP); kept because the published config.json files carry them as null.
    intermediate_size: int | None = None
    mlp_bias: bool | None = None
    moe_dim: int = 16
    moe_experts: int = 512
    moe_heads: int = 8
    moe_topk: int = 32
    moe_groups: int = 4
    moe_decompose: str = "vertical"
    output_router_probs: bool = False

    def __post_init__(self, **kwargs):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self._check_moe_shapes()  # a plain ValueError, before transformers' own validators run
        super().__post_init__(**kwargs)

    def _check_moe_shapes(self):
        if self.moe_decompose not in DECOMPOSITIONS:
            raise ValueError(
                f"Unknown moe_decompose {self.moe_decompose!r}: Monet knows 'vertical' (VD) and 'horizontal' (HD)."
            )
        if not 0 < self.moe_topk < self.moe_experts:
            raise ValueError(f"moe_topk must lie in 1..{self.moe_experts - 1} (moe_experts - 1), got {self.moe_topk}.")
        if self.moe_decompose == "vertical" and (self.moe_dim % 2 or self.hidden_size % 2):
            raise ValueError("The vertical decomposition splits moe_dim and hidden_size in halves: both must be even.")

    @property
    def num_routing_groups(self) -> int:
        """Routing groups: layers g*G .. g*G+G-1 share the router of layer g*G (see ModelShape)."""
        return ModelShape.of(self).num_groups


@dataclass
class MonetModelOutputWithPast(BaseModelOutputWithPast):
    """`router_probs`: per decoder layer, `(g1, g2)` each [B, T, H, E] for router layers, None for the others.
    `moe_inputs`: per decoder layer, the MoE input x [B, T, d] (the post-attention RMSNorm output), and
    `pre_norm_hidden_state`: the residual stream before the final norm; both only when asked for."""

    router_probs: tuple | None = None
    moe_inputs: tuple | None = None
    pre_norm_hidden_state: torch.Tensor | None = None


@dataclass
class MonetCausalLMOutputWithPast(CausalLMOutputWithPast):
    router_probs: tuple | None = None
    moe_inputs: tuple | None = None
    pre_norm_hidden_state: torch.Tensor | None = None


class MonetRouter(nn.Module):
    """Product-key router: two distributions per head over E entries, each sparse by a BatchNorm threshold."""

    def __init__(self, config: MonetConfig):
        super().__init__()
        self.heads, self.experts = config.moe_heads, config.moe_experts
        self.w1 = nn.Linear(config.hidden_size, self.heads * self.experts, bias=False)
        self.w2 = nn.Linear(config.hidden_size, self.heads * self.experts, bias=False)
        self.norm1 = nn.BatchNorm1d(self.heads, affine=False)
        self.norm2 = nn.BatchNorm1d(self.heads, affine=False)
        # A standard-normal score above sigma is in the top moe_topk / E tail: about moe_topk entries per head.
        self.sigma = NormalDist().inv_cdf(1 - config.moe_topk / config.moe_experts)

    def _select(self, logits: torch.Tensor, norm: nn.BatchNorm1d) -> torch.Tensor:
        scores = logits.float()  # [B, T, H, E]
        normed = _batch_norm(norm, scores.flatten(0, 1)).view_as(scores)  # per head over tokens and entries
        threshold = normed.amax(-1, keepdim=True).clamp(max=self.sigma)  # at least one entry per head
        return torch.softmax(scores.masked_fill(normed < threshold, float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g1 = self._select(self.w1(x).unflatten(-1, (self.heads, self.experts)), self.norm1)
        g2 = self._select(self.w2(x).unflatten(-1, (self.heads, self.experts)), self.norm2)
        return g1, g2


def _batch_norm(norm: nn.BatchNorm1d, scores: torch.Tensor) -> torch.Tensor:
    """The router's BatchNorm of float32 scores. In eval mode its running statistics are read in float32 too,
    whatever dtype the model runs in (torch's CPU batch_norm refuses bfloat16 statistics for float32 input)."""
    if norm.training:
        return norm(scores)
    return F.batch_norm(scores, norm.running_mean.float(), norm.running_var.float(), training=False, eps=norm.eps)


def _gating_precision(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The gates and expert activations in float32 for the gating sums, whatever dtype the model runs in: they
    are small (E * m values per token), float32 keeps the router's precision, and bfloat16 batched products of
    these shapes are slow on a CPU. The large products (U, V) stay in the model's dtype."""
    return tuple(t.float() for t in tensors)


def _switched_off(g1, g2, switched_off) -> SwitchedOffMatrices:
    """The MoE's `switched_off` as SwitchedOffMatrices: computed here unless a forward already did (SwitchingOff
    computes them once for the layers of a group that switch the same experts off)."""
    if isinstance(switched_off, SwitchedOffMatrices):
        return switched_off
    return switched_off_matrices(g1, g2, switched_off)


def _add_product(target: torch.Tensor, matrix: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """target + matrix @ source for [..., E, width] tensors seen as [slots, width] (slot = token * E + e), in place
    (target is ours): in place, the product touches only the rows it changes, not a copy of all of them."""
    width = source.shape[-1]
    return target.reshape(-1, width).addmm_(matrix, source.reshape(-1, width)).view_as(target)


def _read_through(direction: torch.Tensor, v: nn.Linear, experts: int) -> torch.Tensor:
    """[E, width]: row e is the direction read back through expert block e of an output projection V."""
    return (direction @ v.weight).view(experts, -1)


class MonetMoVDE(nn.Module):
    """Vertical decomposition: E_ij(x) = [V11_i a_i + V12_i a'_j + b1_i ; V21_j a_i + V22_j a'_j + b2_j],
    with a_i = relu2(U1_i x + c1_i) and a'_j = relu2(U2_j x + c2_j)."""

    def __init__(self, config: MonetConfig):
        super().__init__()
        self.experts = config.moe_experts
        width, half = config.moe_experts * config.moe_dim // 2, config.hidden_size // 2
        self.act_fn = ACT2FN[config.hidden_act]
        self.u1 = nn.Linear(config.hidden_size, width)
        self.u2 = nn.Linear(config.hidden_size, width)
        self.v11 = nn.Linear(width, half, bias=False)
        self.v12 = nn.Linear(width, half, bias=False)
        self.v21 = nn.Linear(width, half, bias=False)
        self.v22 = nn.Linear(width, half, bias=False)
        self.b1 = nn.Parameter(torch.zeros(config.moe_experts, half))
        self.b2 = nn.Parameter(torch.zeros(config.moe_experts, half))

    def forward(self, x, g1, g2, switched_off=None):
        a1 = self.act_fn(self.u1(x).unflatten(-1, (self.experts, -1)))  # a_i:  [B, T, E, m/2]
        a2 = self.act_fn(self.u2(x).unflatten(-1, (self.experts, -1)))  # a'_j: [B, T, E, m/2]
        g1, g2, a1, a2 = _gating_precision(g1, g2, a1, a2)
        # Softmax rows sum to one, so sum_j w_ij = sum_h g1[h, i] and the E*E sum factorises per head.
        row_mass, col_mass = g1.sum(-2), g2.sum(-2)  # [B, T, E]
        a2_mixed = torch.einsum("bthi,bthm->btim", g1, torch.einsum("bthj,btjm->bthm", g2, a2))  # sum_j w_ij a'_j
        a1_mixed = torch.einsum("bthj,bthm->btjm", g2, torch.einsum("bthi,btim->bthm", g1, a1))  # sum_i w_ij a_i
        if switched_off is not None:  # subtract w_ij times each term of E_ij, at the tokens where w_ij != 0
            off = _switched_off(g1, g2, switched_off)
            row_mass, col_mass = row_mass + off.row_mass.view_as(row_mass), col_mass + off.col_mass.view_as(col_mass)
            a2_mixed, a1_mixed = _add_product(a2_mixed, off.rows, a2), _add_product(a1_mixed, off.cols, a1)
        weighted1, weighted2 = a1 * row_mass[..., None], a2 * col_mass[..., None]
        weighted1, weighted2, a1_mixed, a2_mixed, row_mass, col_mass = (
            t.to(x.dtype) for t in (weighted1, weighted2, a1_mixed, a2_mixed, row_mass, col_mass)
        )
        first = self.v11(weighted1.flatten(-2)) + self.v12(a2_mixed.flatten(-2)) + row_mass @ self.b1
        second = self.v21(a1_mixed.flatten(-2)) + self.v22(weighted2.flatten(-2)) + col_mass @ self.b2
        return torch.cat((first, second), dim=-1)

    def expert_output(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """E_ij(x) [..., d] of expert (i, j) alone, unweighted: the layer's output is sum_ij w_ij E_ij(x)."""
        half = self.u1.out_features // self.experts
        rows, cols = slice(i * half, (i + 1) * half), slice(j * half, (j + 1) * half)
        a = self.act_fn(F.linear(x, self.u1.weight[rows], self.u1.bias[rows]))
        a_prime = self.act_fn(F.linear(x, self.u2.weight[cols], self.u2.bias[cols]))
        first = F.linear(a, self.v11.weight[:, rows]) + F.linear(a_prime, self.v12.weight[:, rows]) + self.b1[i]
        second = F.linear(a, self.v21.weight[:, cols]) + F.linear(a_prime, self.v22.weight[:, cols]) + self.b2[j]
        return torch.cat((first, second), dim=-1)

    def expert_outputs_along(self, x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """[E, E]: direction . E_ij(x) for every expert (i, j) at one token (x, direction [d]), in one pass.

        E_ij is bilinear in its two sides, so each term reads the direction through its V block once:
        the cost is that of one forward of the layer, not of E*E expert outputs."""
        E, half = self.experts, x.shape[-1] // 2
        a1 = self.act_fn(self.u1(x)).view(E, -1)  # a_i
        a2 = self.act_fn(self.u2(x)).view(E, -1)  # a'_j
        r1, r2 = direction[:half], direction[half:]  # the first and second halves of the output
        v11, v12 = _read_through(r1, self.v11, E), _read_through(r1, self.v12, E)
        v21, v22 = _read_through(r2, self.v21, E), _read_through(r2, self.v22, E)
        first = (v11 * a1).sum(-1)[:, None] + v12 @ a2.T + (self.b1 @ r1)[:, None]  # [i, j]
        second = a1 @ v21.T + (v22 * a2).sum(-1)[None, :] + (self.b2 @ r2)[None, :]
        return first + second


class MonetMoHDE(nn.Module):
    """Horizontal decomposition: E_ij(x) = V_j a_i + b_j, with a_i = relu2(U_i x + c_i)."""

    def __init__(self, config: MonetConfig):
        super().__init__()
        self.experts = config.moe_experts
        width = config.moe_experts * config.moe_dim
        self.act_fn = ACT2FN[config.hidden_act]
        self.u = nn.Linear(config.hidden_size, width)
        self.v = nn.Linear(width, config.hidden_size, bias=False)
        self.b = nn.Parameter(torch.zeros(config.moe_experts, config.hidden_size))

    def forward(self, x, g1, g2, switched_off=None):
        a = self.act_fn(self.u(x).unflatten(-1, (self.experts, -1)))  # a_i: [B, T, E, m]
        g1, g2, a = _gating_precision(g1, g2, a)
        col_mass = g2.sum(-2)  # sum_i w_ij
        a_mixed = torch.einsum("bthj,bthm->btjm", g2, torch.einsum("bthi,btim->bthm", g1, a))  # sum_i w_ij a_i
        if switched_off is not None:  # subtract w_ij (V_j a_i + b_j) at the tokens where w_ij != 0
            off = _switched_off(g1, g2, switched_off)
            col_mass, a_mixed = col_mass + off.col_mass.view_as(col_mass), _add_product(a_mixed, off.cols, a)
        a_mixed, col_mass = a_mixed.to(x.dtype), col_mass.to(x.dtype)
        return self.v(a_mixed.flatten(-2)) + col_mass @ self.b

    def expert_output(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """E_ij(x) [..., d] of expert (i, j) alone, unweighted: the layer's output is sum_ij w_ij E_ij(x)."""
        width = self.u.out_features // self.experts
        rows, cols = slice(i * width, (i + 1) * width), slice(j * width, (j + 1) * width)
        a = self.act_fn(F.linear(x, self.u.weight[rows], self.u.bias[rows]))
        return F.linear(a, self.v.weight[:, cols]) + self.b[j]

    def expert_outputs_along(self, x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """[E, E]: direction . E_ij(x) for every expert (i, j) at one token (x, direction [d]), in one pass."""
        a = self.act_fn(self.u(x)).view(self.experts, -1)  # a_i
        return a @ _read_through(direction, self.v, self.experts).T + (self.b @ direction)[None, :]


class MonetDecoderLayer(nn.Module):
    def __init__(self, config: MonetConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        if config.moe_decompose == "vertical":
            self.moe = MonetMoVDE(config)
        elif config.moe_decompose == "horizontal":
            self.moe = MonetMoHDE(config)
        else:
            raise ValueError(f"Unknown moe_decompose {config.moe_decompose!r}: expected one of {DECOMPOSITIONS}.")
        self.router = MonetRouter(config) if layer_idx % config.moe_groups == 0 else None
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states,
        position_embeddings,
        attention_mask=None,
        past_key_values=None,
        previous_router_probs=None,
        switching_off: SwitchingOff | None = None,
        **kwargs,
    ):
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        moe_input = self.post_attention_layernorm(hidden_states)
        router_probs = self.router(moe_input) if self.router is not None else previous_router_probs
        switched_off = switching_off.matrices(self.layer_idx, *router_probs) if switching_off is not None else None
        hidden_states = hidden_states + self.moe(moe_input, *router_probs, switched_off=switched_off)
        return hidden_states, router_probs, moe_input


class MonetPreTrainedModel(PreTrainedModel):
    config_class = MonetConfig
    config: MonetConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MonetDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # Router norms may come without `num_batches_tracked` in some exports; it is unused in eval mode.
    _keys_to_ignore_on_load_missing = [r"router\.norm\d\.num_batches_tracked"]
    # The router's BatchNorm statistics decide which entries pass the threshold: loaded in float32 in any dtype.
    _keep_in_fp32_modules_strict = [f"router.norm{side}.running_{stat}" for side in (1, 2) for stat in ("mean", "var")]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (MonetMoVDE, MonetMoHDE)):
            for param in module.parameters(recurse=False):  # the expert biases b, b1, b2
                nn.init.zeros_(param)


class MonetModel(MonetPreTrainedModel):
    def __init__(self, config: MonetConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(MonetDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_router_probs: bool | None = None,
        output_moe_inputs: bool = False,
        ablate=None,
        **kwargs,
    ) -> MonetModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if output_router_probs is None:
            output_router_probs = self.config.output_router_probs
        ablation = Ablation.coerce(ablate, self.config)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if isinstance(ablation, RowAblation) and ablation.batch_size != inputs_embeds.shape[0]:
            raise ValueError(
                f"This RowAblation holds sets for {ablation.batch_size} rows, the batch has {inputs_embeds.shape[0]}."
            )
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen)[None]
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        router_probs, all_router_probs, moe_inputs = None, [], []
        switching_off = SwitchingOff(ablation) if ablation else None
        for layer in self.layers:
            hidden_states, router_probs, moe_input = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=causal_mask,
                past_key_values=past_key_values,
                previous_router_probs=router_probs,
                switching_off=switching_off,
                **kwargs,
            )
            all_router_probs.append(router_probs if layer.router is not None else None)
            moe_inputs.append(moe_input)

        return MonetModelOutputWithPast(
            last_hidden_state=self.norm(hidden_states),
            past_key_values=past_key_values if use_cache else None,
            router_probs=tuple(all_router_probs) if output_router_probs else None,
            moe_inputs=tuple(moe_inputs) if output_moe_inputs else None,
            pre_norm_hidden_state=hidden_states if output_moe_inputs else None,
        )


class MonetForCausalLM(MonetPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MonetConfig):
        super().__init__(config)
        self.model = MonetModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_router_probs: bool | None = None,
        output_moe_inputs: bool = False,
        ablate=None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> MonetCausalLMOutputWithPast:
        r"""ablate: experts switched off for this call only: an `explorer.model.ablation.Ablation`, or an iterable of
        `(layer, i, j)` triples (0-based decoder layer) and/or group specs such as "G5/147040" (every layer of
        that routing group). Weight set to zero, no renormalisation. A `RowAblation` gives each batch row its own set.
        output_moe_inputs: also return each layer's MoE input x and the residual stream before the final norm
        (what an expert's exact contribution to a logit needs: see `expert_output` on the expert modules)."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_router_probs=output_router_probs,
            output_moe_inputs=output_moe_inputs,
            ablate=ablate,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return MonetCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            router_probs=outputs.router_probs,
            moe_inputs=outputs.moe_inputs,
            pre_norm_hidden_state=outputs.pre_norm_hidden_state,
        )


__all__ = ["MonetConfig", "MonetModel", "MonetForCausalLM", "MonetPreTrainedModel"]
