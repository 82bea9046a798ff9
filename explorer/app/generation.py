"""Live generation with experts switched off: baseline and ablated side by side, and what the ablation costs.

`side_by_side` decodes the same prompt twice in lockstep, once with the plain model and once with the
request's Ablation, each side with its own random generator seeded alike, so the two differ only by
the switched-off experts (greedy when temperature is 0). Our own small decoding loop (key/value
cache, temperature, top-p) keeps every random draw inside the request: nothing touches torch's global
RNG, so concurrent users never disturb each other. `compare_on_text` scores a text with and without
the ablation: per-token log-probabilities, perplexities, KL(plain || ablated) of each next-token
distribution, and the share of routing mass removed; given a control set (explorer.app.control) it
scores the text with that switched off too, and `AblationEffect.specificity` compares the two
(SPECIFICITY_HELP says exactly how).

On a Hugging Face ZeroGPU Space (package `spaces` importable) the model-running entry points are
wrapped in `spaces.GPU`; elsewhere the model runs where `explorer.model.device.load_model` put it.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from explorer.app.control import ControlSet
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


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


def _perplexity(logprobs: list[float]) -> float:
    return float(torch.tensor(logprobs, dtype=torch.float64).mean().neg().exp()) if logprobs else float("nan")


@dataclass(frozen=True)
class ControlEffect:
    """The same text scored with the control set switched off (explorer.app.control): what any like set costs."""

    control: ControlSet
    ablated_logprobs: list[float]
    deltas: list[float]  # control - plain log p per scored token
    kl: list[float]  # KL(plain || control switched off) per scored token, nats
    removed_mass_share: float

    def to_json(self) -> dict:
        return {
            **self.control.to_json(),
            "ablated_logprobs": self.ablated_logprobs,
            "ablated_perplexity": _perplexity(self.ablated_logprobs),
            "deltas": self.deltas,
            "kl": self.kl,
            "mean_kl": _mean(self.kl),
            "loss_rise": -_mean(self.deltas),
            "removed_mass_share": self.removed_mass_share,
        }


SPECIFICITY_HELP = (
    "specificity = mean KL(plain ‖ set switched off) / mean KL(plain ‖ control switched off), both over the same "
    "scored tokens, KL taken between the plain and the ablated model's next-token distributions at each token, "
    "in nats. The control switches off as many experts of the same groups and layers, each drawn at random among "
    "the experts nearest in index density to one of the set's (seeded). 1 means the set changes the predictions "
    "no more than any like set; 10 means ten times more."
)


@dataclass(frozen=True)
class AblationEffect:
    """A text scored by the plain and the ablated model: log p of each scored token under both, the KL between
    their next-token distributions, and the same for a control set of like experts when one was given."""

    token_ids: list[int]  # the scored tokens
    baseline_logprobs: list[float]
    ablated_logprobs: list[float]
    removed_mass_share: float  # switched-off experts' routing weight / all routing weight (all layers, all tokens)
    kl: list[float] = field(default_factory=list)  # KL(plain || ablated) of each scored token's distribution, nats
    control: ControlEffect | None = None
    control_note: str = ""  # why there is no control, when there is none

    @property
    def deltas(self) -> list[float]:
        """ablated - baseline log p per token: negative where the ablated model finds the token less likely."""
        return [a - b for a, b in zip(self.ablated_logprobs, self.baseline_logprobs, strict=True)]

    @property
    def baseline_perplexity(self) -> float:
        return _perplexity(self.baseline_logprobs)

    @property
    def ablated_perplexity(self) -> float:
        return _perplexity(self.ablated_logprobs)

    @property
    def mean_kl(self) -> float:
        return _mean(self.kl)

    @property
    def specificity(self) -> float | None:
        """Mean KL of the set / mean KL of its control (SPECIFICITY_HELP); None without a control or when the
        control changes nothing."""
        if self.control is None or not self.kl:
            return None
        control_kl = _mean(self.control.kl)
        return self.mean_kl / control_kl if control_kl > 0 else None

    def to_json(self) -> dict:
        return {
            "token_ids": self.token_ids,
            "baseline_logprobs": self.baseline_logprobs,
            "ablated_logprobs": self.ablated_logprobs,
            "baseline_perplexity": self.baseline_perplexity,
            "ablated_perplexity": self.ablated_perplexity,
            "removed_mass_share": self.removed_mass_share,
            "deltas": self.deltas,
            "kl": self.kl,
            "mean_kl": self.mean_kl,
            "loss_rise": -_mean(self.deltas),
            "control": self.control.to_json() if self.control is not None else None,
            "control_note": self.control_note,
            "specificity": self.specificity,
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


def token_kl(plain_logits: torch.Tensor, ablated_logits: torch.Tensor) -> list[float]:
    """KL(plain || ablated) = sum_v p(v) (log p(v) - log q(v)) of each row's next-token distribution, in nats."""
    log_p = torch.log_softmax(plain_logits.double(), dim=-1)
    log_q = torch.log_softmax(ablated_logits.double(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0).tolist()  # clamp: rounding below 0


@torch.no_grad()
def _compare_on_text(
    model, ids: list[int], ablation: Ablation | None, first_scored: int = 1, control: ControlSet | None = None
) -> AblationEffect:
    """Score ids[first_scored:] (each given the tokens before it) with and without the ablation, and with the
    control set switched off when one is given."""
    if not 1 <= first_scored < len(ids):
        raise RequestRejected("A text needs at least two tokens to score (each is predicted from those before).")
    ablation = Ablation.coerce(ablation, model.config)
    shape = ModelShape.of(model.config)
    tensor = torch.tensor([ids], device=model.device)
    scored = slice(first_scored - 1, -1)  # the positions whose next token is scored
    baseline = model(tensor, use_cache=False)
    ablated = model(tensor, use_cache=False, ablate=ablation, output_router_probs=True)
    baseline_logprobs = _token_logprobs(baseline.logits, tensor, first_scored)
    control_effect = None
    if control is not None and ablation is not None:
        controlled = model(tensor, use_cache=False, ablate=control.ablation, output_router_probs=True)
        control_logprobs = _token_logprobs(controlled.logits, tensor, first_scored)
        control_effect = ControlEffect(
            control,
            control_logprobs,
            [c - b for c, b in zip(control_logprobs, baseline_logprobs, strict=True)],
            token_kl(baseline.logits[0, scored], controlled.logits[0, scored]),
            removed_mass_share(controlled.router_probs, control.ablation, shape),
        )
    return AblationEffect(
        token_ids=ids[first_scored:],
        baseline_logprobs=baseline_logprobs,
        ablated_logprobs=_token_logprobs(ablated.logits, tensor, first_scored),
        removed_mass_share=removed_mass_share(ablated.router_probs, ablation, shape),
        kl=token_kl(baseline.logits[0, scored], ablated.logits[0, scored]),
        control=control_effect,
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
    model,
    prompt_ids: list[int],
    ablation: Ablation | None,
    settings: GenerationSettings,
    control: ControlSet | None = None,
) -> Iterator[SideBySide]:
    """Decode baseline and ablated continuations in lockstep, yielding after every step, then score the baseline
    continuation (with the control set too, when one is given)."""
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
        effect = _compare_on_text(model, prompt_ids + produced[0], ablation, len(prompt_ids), control)
    yield SideBySide(produced[0], produced[1], finished=True, effect=effect)
