"""Concept builder: from examples of a concept, the experts that fire on it far more than on a background, as a
switched-off set, with a preview of what switching them off costs.

The rule is the paper's domain rule with the user's examples as the domain:
- the model runs on the examples; each expert's concept mean is its summed weight over the examples' tokens
  divided by their number of tokens, weights below the index's min_weight (1e-2 without an index) counting as 0,
  exactly as the index counts its own means;
- its background mean is the same statistic over the counter-examples when they are given, otherwise over the
  whole indexed corpus (`experts.weight_sum / tokens_processed`, explorer.index.background);
- it is proposed when concept mean >= `ratio` x background mean (default 2, the paper's rule; a background mean
  of 0 counts as passed) and it has support: active (weight >= min_weight) on at least MIN_SUPPORT_TOKENS tokens
  of at least MIN_SUPPORT_TEXTS different examples, so that one odd token or one passage cannot make an expert.
  At most MAX_CONCEPT_EXPERTS are kept: those carrying the most weight above the background (concept mean -
  background mean).

Examples are split deterministically: every HELD_OUT_EVERY-th one (the 4th, 8th, ...) is held out and never used to
pick experts; counter-examples likewise. The preview switches the proposed experts off (every layer of their
group) and measures the mean loss (nats per token, each token predicted from those before it in its text) on the
held-out examples and on the background: the held-out counter-examples, or, without counter-examples, a few
stored texts of every domain of the index (per domain, so a user sees which domains the set also hurts; a domain
that holds the concept itself, German examples against an index with a German domain, shows its rise there too).
`specificity` = the held-out examples' loss rise / the background's loss rise.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.app.generation import on_gpu
from explorer.app.tokens import RequestRejected
from explorer.index import background as index_background
from explorer.index.domains import DOMAIN_RATIO
from explorer.model.ablation import Ablation
from explorer.model.naming import ExpertRef, ModelShape
from explorer.model.sparse import sparse_expert_weights

CONCEPT_RATIO = DOMAIN_RATIO  # the paper's 2x
HELD_OUT_EVERY = 4  # examples 4, 8, 12, ... (1-based) are held out for the preview
MIN_SUPPORT_TOKENS = 5
MIN_SUPPORT_TEXTS = 2
MAX_CONCEPT_EXPERTS = 500  # the set stays a readable text (and a usable page address)
MAX_CONCEPT_TEXTS = 200
MAX_CONCEPT_TOKENS = 32_768  # of the examples, and of the counter-examples
BATCH_TOKENS = 2_048  # padded tokens per forward pass


def split_texts(text: str) -> list[str]:
    """The texts of a box or a file: separated by one or more blank lines; indentation inside a text is kept."""
    texts: list[str] = []
    lines: list[str] = []
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        if line.strip():
            lines.append(line)
        elif lines:
            texts.append("\n".join(lines))
            lines = []
    return texts + (["\n".join(lines)] if lines else [])


def held_out_split(items: list) -> tuple[list, list]:
    """(kept, held out): every HELD_OUT_EVERY-th item is held out, so the split never depends on chance."""
    kept = [item for k, item in enumerate(items) if k % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held_out = [item for k, item in enumerate(items) if k % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return kept, held_out


@dataclass(frozen=True)
class RoutingTotals:
    """Every expert's routing over some texts: [groups, E * E] arrays."""

    tokens: int
    weight_sum: np.ndarray  # summed weights >= min_weight
    active_tokens: np.ndarray  # tokens where the weight >= min_weight
    texts: np.ndarray  # texts with at least one such token

    def means(self) -> np.ndarray:
        return self.weight_sum / max(self.tokens, 1)


def _batches(texts: list[list[int]], max_tokens: int = BATCH_TOKENS) -> list[list[int]]:
    """Indices of the texts in batches of similar length whose padded size stays within max_tokens."""
    order = sorted(range(len(texts)), key=lambda k: (len(texts[k]), k))
    batches: list[list[int]] = []
    for k in order:
        if batches and (len(batches[-1]) + 1) * len(texts[k]) <= max_tokens:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches


def _padded(model, texts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids padded on the right, and [B] lengths. Right padding changes nothing at the real positions: the
    model is causal and its MoE and routing work token by token, so no attention mask is needed."""
    width = max(len(ids) for ids in texts)
    padded = torch.tensor([ids + [ids[-1]] * (width - len(ids)) for ids in texts], device=model.device)
    return padded, torch.tensor([len(ids) for ids in texts], device=model.device)


@on_gpu
@torch.no_grad()
def routing_totals(model, texts: list[list[int]], min_weight: float) -> RoutingTotals:
    """Run the model on the texts (token ids) and add up every expert's weights, sparsely (no [tokens, E*E])."""
    shape = ModelShape.of(model.config)
    size = shape.experts_per_side**2
    weight_sum = torch.zeros(shape.num_groups, size, dtype=torch.float64)
    active = torch.zeros(shape.num_groups, size, dtype=torch.long)
    in_texts = torch.zeros(shape.num_groups, size, dtype=torch.long)
    for batch in _batches(texts):
        ids, lengths = _padded(model, [texts[k] for k in batch])
        output = model.model(ids, use_cache=False, output_router_probs=True)
        for group in range(shape.num_groups):
            g1, g2 = (p.float() for p in output.router_probs[shape.group_layers(group)[0]])
            sparse = sparse_expert_weights(g1, g2, min_weight=min_weight)
            real = sparse.position < lengths[sparse.row]  # not padding
            row, expert, weight = (column[real].cpu() for column in (sparse.row, sparse.expert, sparse.weight))
            weight_sum[group].index_add_(0, expert, weight.double())
            active[group].index_add_(0, expert, torch.ones_like(expert))
            texts_of_expert = torch.unique(row * size + expert) % size  # each (text, expert) once
            in_texts[group].index_add_(0, texts_of_expert, torch.ones_like(texts_of_expert))
    return RoutingTotals(sum(len(ids) for ids in texts), weight_sum.numpy(), active.numpy(), in_texts.numpy())


@dataclass(frozen=True)
class ConceptExpert:
    ref: ExpertRef
    concept_mean: float
    background_mean: float
    active_tokens: int  # of the examples used to pick (held-out ones excluded)
    texts: int

    @property
    def lift(self) -> float | None:
        """concept mean / background mean; None when the background mean is 0 (never active there)."""
        return self.concept_mean / self.background_mean if self.background_mean > 0 else None

    def to_json(self) -> dict:
        return {
            "expert": str(self.ref),
            "concept_mean": self.concept_mean,
            "background_mean": self.background_mean,
            "ratio": self.lift,
            "active_tokens": self.active_tokens,
            "texts": self.texts,
        }


def propose(
    concept: RoutingTotals,
    background_means: np.ndarray,
    ratio: float,
    shape: ModelShape,
    max_experts: int = MAX_CONCEPT_EXPERTS,
) -> list[ConceptExpert]:
    """The experts that pass the rule (module docstring), strongest first: by the mean weight they carry on the
    concept above the background (concept mean - background mean), the one that matters to what removing them
    costs; a rare expert with a huge ratio but little weight comes late."""
    means = concept.means()
    passes = (
        (means > 0)
        & (means >= ratio * background_means)
        & (concept.active_tokens >= MIN_SUPPORT_TOKENS)
        & (concept.texts >= MIN_SUPPORT_TEXTS)
    )
    groups, experts = np.nonzero(passes)
    chosen_means, chosen_background = means[groups, experts], background_means[groups, experts]
    lifts = np.divide(chosen_means, chosen_background, out=np.full(len(groups), np.inf), where=chosen_background > 0)
    order = np.lexsort((experts, groups, -lifts, -(chosen_means - chosen_background)))[:max_experts]
    return [
        ConceptExpert(
            ExpertRef.from_flat(int(groups[k]), int(experts[k]), shape.experts_per_side),
            float(chosen_means[k]),
            float(chosen_background[k]),
            int(concept.active_tokens[groups[k], experts[k]]),
            int(concept.texts[groups[k], experts[k]]),
        )
        for k in order
    ]


@dataclass(frozen=True)
class LossChange:
    """Mean loss (nats per scored token) of some texts, plain and with the set switched off."""

    texts: int
    tokens: int
    plain_loss: float
    ablated_loss: float

    @property
    def rise(self) -> float:
        return self.ablated_loss - self.plain_loss

    def to_json(self) -> dict:
        return {
            "texts": self.texts,
            "tokens": self.tokens,
            "plain_loss": self.plain_loss,
            "ablated_loss": self.ablated_loss,
            "rise": self.rise,
        }


def _text_losses(logits: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B] summed -log p of each text's tokens 1.. (each predicted from those before it), padding left out."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    real = torch.arange(1, ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
    return -(logprobs * real).sum(1).double()


@on_gpu
@torch.no_grad()
def loss_change(model, texts: list[list[int]], ablation: Ablation | None) -> LossChange | None:
    """Token-weighted mean loss over the texts, plain and ablated (a text needs 2 tokens to score one); None when
    no text can be scored. Texts run in padded batches (see _padded)."""
    texts = [ids for ids in texts if len(ids) >= 2]
    if not texts:
        return None
    plain, ablated = 0.0, 0.0
    for batch in _batches(texts):
        ids, lengths = _padded(model, [texts[k] for k in batch])
        plain += float(_text_losses(model(ids, use_cache=False).logits, ids, lengths).sum())
        ablated += float(_text_losses(model(ids, use_cache=False, ablate=ablation).logits, ids, lengths).sum())
    tokens = sum(len(ids) - 1 for ids in texts)
    return LossChange(len(texts), tokens, plain / tokens, ablated / tokens)


@dataclass(frozen=True)
class ConceptPreview:
    held_out: LossChange | None  # the held-out examples
    background: LossChange | None  # all background texts together
    background_source: str  # what the background texts are, in words
    domains: dict[str, LossChange] = field(default_factory=dict)  # per index domain (no counter-examples)
    note: str = ""

    @property
    def specificity(self) -> float | None:
        """Held-out examples' loss rise / background's loss rise; None when the background's rise is not > 0."""
        if self.held_out is None or self.background is None or self.background.rise <= 0:
            return None
        return self.held_out.rise / self.background.rise

    def to_json(self) -> dict:
        return {
            "held_out": self.held_out.to_json() if self.held_out else None,
            "background": self.background.to_json() if self.background else None,
            "background_source": self.background_source,
            "domains": {name: change.to_json() for name, change in self.domains.items()},
            "specificity": self.specificity,
            "note": self.note,
        }


@dataclass(frozen=True)
class Concept:
    experts: list[ConceptExpert]
    preview: ConceptPreview
    ratio: float
    examples: int  # examples used to pick experts
    held_out: int  # examples held out for the preview
    background: str  # what the background means came from, in words

    @property
    def ablate(self) -> str:
        """The set as the page and the API take it: `G1/5, G2/17, ...`."""
        return ", ".join(str(expert.ref) for expert in self.experts)

    def summary(self) -> str:
        if not self.experts:
            return (
                f"No expert passes the rule: none has ≥ {self.ratio:g}× its mean weight on {self.background}"
                f" with support on ≥ {MIN_SUPPORT_TOKENS} tokens of ≥ {MIN_SUPPORT_TEXTS} examples."
            )
        capped = f" (the strongest {MAX_CONCEPT_EXPERTS})" if len(self.experts) == MAX_CONCEPT_EXPERTS else ""
        return (
            f"{len(self.experts):,} experts{capped} have ≥ {self.ratio:g}× their mean weight on {self.background},"
            f" picked from {self.examples} examples ({self.held_out} held out for the preview)."
        )

    def to_json(self) -> dict:
        return {
            "ablate": self.ablate,
            "experts": [expert.to_json() for expert in self.experts],
            "preview": self.preview.to_json(),
            "ratio": self.ratio,
            "examples": self.examples,
            "held_out": self.held_out,
            "background": self.background,
            "summary": self.summary(),
        }


def check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and 1 < ratio <= 1000):
        raise RequestRejected(f"The ratio must lie in (1, 1000] (the paper's rule is 2), not {ratio}.")
    return float(ratio)


def check_texts(texts: list[list[int]], what: str) -> None:
    if len(texts) > MAX_CONCEPT_TEXTS:
        raise RequestRejected(f"{len(texts):,} {what}: the limit is {MAX_CONCEPT_TEXTS}.")
    total = sum(len(ids) for ids in texts)
    if total > MAX_CONCEPT_TOKENS:
        raise RequestRejected(f"The {what} have {total:,} tokens together: the limit is {MAX_CONCEPT_TOKENS:,}.")


@dataclass(frozen=True)
class Background:
    """Where the background comes from: counter-examples (token ids), or the index (means and texts by domain)."""

    means: np.ndarray  # [groups, E * E]
    description: str  # "the counter-examples" / "the indexed corpus"
    texts: list[list[int]]  # the preview's background texts
    domains: list[str]  # the domain of each text ("" for counter-examples)
    source: str


def background_from_counter_examples(model, counter: list[list[int]], min_weight: float) -> Background:
    check_texts(counter, "counter-examples")
    kept, held_out = held_out_split(counter)
    means = routing_totals(model, kept, min_weight).means()
    preview = held_out or counter
    source = "the held-out counter-examples" if held_out else "the counter-examples (too few to hold some out)"
    return Background(means, "the counter-examples", preview, [""] * len(preview), source)


def build_concept(model, examples: list[list[int]], background: Background, ratio: float, min_weight: float) -> Concept:
    """Propose the concept's experts against the background and preview switching them off (module docstring)."""
    ratio = check_ratio(ratio)
    check_texts(examples, "examples")
    if len(examples) < MIN_SUPPORT_TEXTS:
        raise RequestRejected(
            f"Give at least {MIN_SUPPORT_TEXTS} examples, separated by blank lines (an expert must fire on"
            f" {MIN_SUPPORT_TEXTS} of them); with {HELD_OUT_EVERY} or more, some are held out for the preview."
        )
    shape = ModelShape.of(model.config)
    kept, held_out = held_out_split(examples)
    experts = propose(routing_totals(model, kept, min_weight), background.means, ratio, shape)
    if not experts:
        nothing = ConceptPreview(None, None, background.source, {}, "No expert passes the rule: nothing to preview.")
        return Concept([], nothing, ratio, len(kept), len(held_out), background.description)
    ablation = Ablation.build([expert.ref for expert in experts], shape)
    note = "" if held_out else f"No example is held out (give {HELD_OUT_EVERY} or more): no preview on the concept."
    domains: dict[str, LossChange] = {}
    if any(background.domains):
        for name in dict.fromkeys(background.domains):
            texts = [ids for ids, domain in zip(background.texts, background.domains, strict=True) if domain == name]
            change = loss_change(model, texts, ablation)
            if change is not None:
                domains[name] = change
    preview = ConceptPreview(
        loss_change(model, held_out, ablation) if held_out else None,
        _pooled(domains.values()) if domains else loss_change(model, background.texts, ablation),
        background.source,
        domains,
        note,
    )
    return Concept(experts, preview, ratio, len(kept), len(held_out), background.description)


def _pooled(changes) -> LossChange:
    """Several groups of texts as one (token-weighted)."""
    changes = list(changes)
    tokens = sum(c.tokens for c in changes)
    return LossChange(
        sum(c.texts for c in changes),
        tokens,
        math.fsum(c.plain_loss * c.tokens for c in changes) / tokens,
        math.fsum(c.ablated_loss * c.tokens for c in changes) / tokens,
    )


def background_from_index(index, shape: ModelShape) -> Background:
    """The indexed corpus as the background: every expert's mean weight over it, and a few stored texts of each
    of its domains for the preview (explorer.index.background)."""
    means = np.stack([index_background.group_mean_weights(index, group) for group in range(shape.num_groups)])
    texts = index_background.background_texts(index)
    names = sorted({text.domain for text in texts})
    source = f"{len(texts)} stored texts of the index ({', '.join(names) or 'none'})"
    return Background(means, "the indexed corpus", [t.token_ids for t in texts], [t.domain for t in texts], source)
