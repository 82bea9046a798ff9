"""Live generation with experts switched off: baseline and ablated side by side, and what the ablation costs.

`side_by_side` decodes the same prompt twice in lockstep, once with the plain model and once with the
request's Ablation, each side with its own random generator seeded alike, so the two differ only by
the switched-off experts (greedy when temperature is 0). Our own small decoding loop (key/value
cache, temperature, top-p) keeps every random draw inside the request: nothing touches torch's global
RNG, so concurrent users never disturb each other. `compare_on_text` scores a text with and without
the ablation: per-token log-probabilities, perplexities, and the share of routing mass removed.

On a Hugging Face ZeroGPU Space (package `spaces` importable) the model-running entry points are
wrapped in `spaces.GPU`; elsewhere the model runs where `explorer.model.device.load_model` put it.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from explorer.app.tokens import RequestRejected
from explorer.model.ablation import Ablation
from explorer.model.naming import ModelShape

try:  # ZeroGPU: a GPU is attached only while a decorated function runs
    import spaces

    on_gpu = spaces.GPU
except ImportError:

    def on_gpu(fn):
        return fn


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests get a clear message, never a slow server."""

    max_prompt_tokens: int = 512
    max_new_tokens: int = 128
    max_text_tokens: int = 1024  # perplexity of a given text


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 40
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0

    def checked(self, limits: Limits, prompt_tokens: int, context_length: int) -> "GenerationSettings":
        if not 1 <= self.max_new_tokens <= limits.max_new_tokens:
            raise RequestRejected(f"New tokens must lie in 1..{limits.max_new_tokens} (asked {self.max_new_tokens}).")
        if prompt_tokens + self.max_new_tokens > context_length:
            raise RequestRejected(
                f"Prompt ({prompt_tokens} tokens) + new tokens ({self.max_new_tokens}) exceed the model's"
                f" context of {context_length} tokens."
            )
        if not 0 <= self.temperature <= 5:
            raise RequestRejected(f"Temperature must lie in 0..5 (0 = greedy), not {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise RequestRejected(f"top-p must lie in (0, 1], not {self.top_p}.")
        return self


def _pick_token(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator) -> int:
    if settings.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float().cpu() / settings.temperature, dim=-1)  # draws on CPU: same on any device
    if settings.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs >= settings.top_p  # keep the smallest prefix reaching top_p
        probs[order[outside]] = 0
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def decode_tokens(
    model, prompt_ids: list[int], ablation: Ablation | None, settings: GenerationSettings
) -> Iterator[int]:
    """New token ids, one at a time, until max_new_tokens or end of sequence."""
    generator = torch.Generator().manual_seed(settings.seed)
    eos = model.generation_config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos]) - {None}
    step_ids = torch.tensor([prompt_ids], device=model.device)
    cache = None
    for _ in range(settings.max_new_tokens):
        output = model(step_ids, past_key_values=cache, use_cache=True, ablate=ablation, logits_to_keep=1)
        cache = output.past_key_values
        token = _pick_token(output.logits[0, -1], settings, generator)
        yield token
        if token in stop:
            return
        step_ids = torch.tensor([[token]], device=model.device)


@dataclass(frozen=True)
class AblationEffect:
    """A text scored by the plain and the ablated model: log p of each scored token under both."""

    token_ids: list[int]  # the scored tokens
    baseline_logprobs: list[float]
    ablated_logprobs: list[float]
    removed_mass_share: float  # switched-off experts' routing weight / all routing weight (all layers, all tokens)

    @property
    def deltas(self) -> list[float]:
        """ablated - baseline log p per token: negative where the ablated model finds the token less likely."""
        return [a - b for a, b in zip(self.ablated_logprobs, self.baseline_logprobs, strict=True)]

    @staticmethod
    def _perplexity(logprobs: list[float]) -> float:
        return float(torch.tensor(logprobs, dtype=torch.float64).mean().neg().exp()) if logprobs else float("nan")

    @property
    def baseline_perplexity(self) -> float:
        return self._perplexity(self.baseline_logprobs)

    @property
    def ablated_perplexity(self) -> float:
        return self._perplexity(self.ablated_logprobs)

    def to_json(self) -> dict:
        return {
            "token_ids": self.token_ids,
            "baseline_logprobs": self.baseline_logprobs,
            "ablated_logprobs": self.ablated_logprobs,
            "baseline_perplexity": self.baseline_perplexity,
            "ablated_perplexity": self.ablated_perplexity,
            "removed_mass_share": self.removed_mass_share,
        }


def removed_mass_share(router_probs, ablation: Ablation | None, shape: ModelShape) -> float:
    """Share of all routing weight that the switched-off experts held in this forward pass.

    Every token gives each layer a total weight of H (each head's two softmaxes sum to 1), so the
    denominator is H * tokens * layers.
    """
    if not ablation:
        return 0.0
    removed, total = 0.0, 0.0
    for layer in range(shape.num_layers):
        g1, g2 = router_probs[shape.group_layers(shape.group_of_layer(layer))[0]]
        total += g1.shape[0] * g1.shape[1] * g1.shape[2]
        pairs = ablation.layer_pairs(layer, g1.device)
        if pairs is not None:
            rows, cols = pairs
            removed += float((g1[..., rows] * g2[..., cols]).sum())
    return removed / total


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor, first_scored: int) -> list[float]:
    logprobs = torch.log_softmax(logits[0, first_scored - 1 : -1].float(), dim=-1)
    return logprobs.gather(-1, ids[0, first_scored:, None]).squeeze(-1).tolist()


@torch.no_grad()
def _compare_on_text(model, ids: list[int], ablation: Ablation | None, first_scored: int = 1) -> AblationEffect:
    """Score ids[first_scored:] (each given the tokens before it) with and without the ablation."""
    if not 1 <= first_scored < len(ids):
        raise RequestRejected("A text needs at least two tokens to score (each is predicted from those before).")
    ablation = Ablation.coerce(ablation, model.config)
    tensor = torch.tensor([ids], device=model.device)
    baseline = model(tensor, use_cache=False)
    ablated = model(tensor, use_cache=False, ablate=ablation, output_router_probs=True)
    return AblationEffect(
        token_ids=ids[first_scored:],
        baseline_logprobs=_token_logprobs(baseline.logits, tensor, first_scored),
        ablated_logprobs=_token_logprobs(ablated.logits, tensor, first_scored),
        removed_mass_share=removed_mass_share(ablated.router_probs, ablation, ModelShape.of(model.config)),
    )


compare_on_text = on_gpu(_compare_on_text)


@dataclass(frozen=True)
class SideBySide:
    """The two continuations so far; `effect` (baseline continuation scored by both) comes with the last update."""

    baseline_ids: list[int]
    ablated_ids: list[int]
    finished: bool = False
    effect: AblationEffect | None = field(default=None)


@on_gpu
def side_by_side(
    model, prompt_ids: list[int], ablation: Ablation | None, settings: GenerationSettings
) -> Iterator[SideBySide]:
    """Decode baseline and ablated continuations in lockstep, yielding after every step, then score."""
    ablation = Ablation.coerce(ablation, model.config)
    sides = [decode_tokens(model, prompt_ids, None, settings), decode_tokens(model, prompt_ids, ablation, settings)]
    produced: list[list[int]] = [[], []]
    running = [True, True]
    while True:
        for side, tokens in enumerate(sides):
            if running[side]:
                token = next(tokens, None)
                if token is None:
                    running[side] = False
                else:
                    produced[side].append(token)
        if not any(running):
            break
        yield SideBySide(list(produced[0]), list(produced[1]))
    effect = None
    if produced[0]:
        effect = _compare_on_text(model, prompt_ids + produced[0], ablation, first_scored=len(prompt_ids))
    yield SideBySide(produced[0], produced[1], finished=True, effect=effect)
