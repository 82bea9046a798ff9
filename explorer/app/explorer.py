"""What the app can answer, without any UI: the loaded model, its tokenizer and its expert index behind one object.

A thin facade: each answer is worked out in its own module (loading, facts, search, expert_page,
domains, inspector, generation, expert_output, ablation_set); the Explorer holds what they share,
checks that what a request needs is loaded, and serialises tokenizer use. `Explorer.load(settings)`
never raises (see explorer.app.loading): the parts that need a missing piece answer with a
RequestRejected naming the fix. Every method takes what one request needs (an ablation set is text,
resolved per call), so one Explorer serves all users at once. Groups are 0-based; None is every group.
"""

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from explorer.app import ablation_set, concept, domains, facts, loading, search
from explorer.app.control import ControlSet, NoControl, control_set
from explorer.app.examples import PageExamples, page_examples
from explorer.app.expert_output import TokenEffects, token_effects
from explorer.app.expert_page import ExpertPage, expert_page
from explorer.app.generation import AblationEffect, GenerationSettings, Limits, compare_on_text, side_by_side
from explorer.app.inspector import (
    ACTIVE_WEIGHT,
    PromptInspection,
    TokenWhy,
    expert_weights_on_text,
    experts_firing_most,
    inspect_prompt,
    why_next_token,
)
from explorer.app.loading import AppSettings
from explorer.app.search import SEARCH_MODES, ScoreBoards, SearchResult
from explorer.app.tokens import RequestRejected, encode, lone_token_texts, token_pieces, window_pieces
from explorer.index import semantic
from explorer.index.reader import ExpertIndex, ExpertStats
from explorer.model.naming import ExpertRef, ModelShape

# the app's public names, importable from here as well as from their own modules
__all__ = ["SEARCH_MODES", "AppSettings", "ExpertPage", "Explorer", "GenerationUpdate", "SearchResult", "TextEffect"]


@dataclass(frozen=True)
class GenerationUpdate:
    baseline_text: str
    ablated_text: str
    finished: bool
    effect: AblationEffect | None
    effect_pieces: list[str]  # display pieces of the scored (baseline) continuation


@dataclass(frozen=True)
class ExpertOnText:
    """One expert's exact weight at every token of a text (Explorer.expert_on_text)."""

    ref: ExpertRef
    pieces: list[str]  # display pieces of the text's tokens
    weights: list[float]  # w_ij at each token
    index_max_weight: float | None  # its heaviest weight in the index (None: no index)


@dataclass(frozen=True)
class TextEffect:
    effect: AblationEffect
    pieces: list[str]  # display pieces of the scored tokens
    summary: str


class Explorer:
    def __init__(
        self,
        model,
        tokenizer,
        index: ExpertIndex | None,
        model_id: str,
        problems: list[str],
        limits: Limits | None = None,
    ):
        self.model, self.tokenizer, self.index = model, tokenizer, index
        self.model_id, self.problems, self.limits = model_id, problems, limits or Limits()
        self.shape = ModelShape.of(model.config) if model is not None else None
        self._tokenizer_lock = threading.Lock()  # fast tokenizers may refuse concurrent use
        # the index never changes while the app runs: what is slow to read is kept
        self._density_maps: dict[int, np.ndarray] = {}
        self._domain_experts: dict[str, list[ExpertRef]] = {}

    @classmethod
    def load(cls, settings: AppSettings) -> "Explorer":
        loaded = loading.load(settings)
        return cls(loaded.model, loaded.tokenizer, loaded.index, settings.model, loaded.problems, settings.limits)

    # -- guards ---------------------------------------------------------------------------------------
    def _need_index(self) -> ExpertIndex:
        if self.index is None:
            raise RequestRejected("No expert index is loaded: " + (self.problems[-1] if self.problems else ""))
        return self.index

    def _need_model(self):
        if self.model is None or self.tokenizer is None:
            raise RequestRejected("No model is loaded: " + (self.problems[0] if self.problems else ""))
        return self.model

    def _encode(self, text: str, max_tokens: int, what: str) -> list[int]:
        self._need_model()
        with self._tokenizer_lock:
            return encode(self.tokenizer, text, max_tokens, what)

    def pieces(self, ids: list[int]) -> list[str]:
        with self._tokenizer_lock:
            return token_pieces(self.tokenizer, ids)

    def token_texts(self, ids: list[int]) -> list[str]:
        """Each token as shown alone: part of a multi-byte character shows its bytes (tokens.lone_token_texts)."""
        with self._tokenizer_lock:
            return lone_token_texts(self.tokenizer, ids)

    def window_pieces(self, ids: list[int]) -> list[str]:
        """Display pieces of a window cut out of a longer text (tokens.window_pieces): no replacement marks."""
        with self._tokenizer_lock:
            return window_pieces(self.tokenizer, ids)

    def decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- facts and overview -------------------------------------------------------------------------------
    def facts(self) -> facts.Facts:
        model_facts = None
        if self.model is not None:
            ever_active = None
            if self.index is not None:
                ever_active = [int((self.group_density(g) > 0).sum()) for g in range(self.shape.num_groups)]
            model_facts = facts.model_facts(self.model, self.shape, ever_active)
        index_facts = facts.index_facts(self.index) if self.index is not None else None
        return facts.Facts(self.model_id, list(self.problems), model_facts, index_facts)

    def group_density(self, group: int) -> np.ndarray:
        """[E, E] densities of one group (cached)."""
        index = self._need_index()
        search.check_group(group, self.shape)
        if group not in self._density_maps:
            self._density_maps[group] = index.group_density_map(group)
        return self._density_maps[group]

    def most_and_least_active(self, group: int, n: int = 15) -> tuple[list[ExpertStats], list[ExpertStats]]:
        index = self._need_index()
        search.check_group(group, self.shape)
        return index.most_active(group, n), index.least_active(group, n)

    def domains(self) -> list[str]:
        return list(self.index.domain_tokens()) if self.index is not None else []

    @functools.cached_property
    def examples(self) -> PageExamples:
        """Examples for the page (placeholders, hints) that work on this model and index (explorer.app.examples)."""
        return page_examples(self.shape, self.index, self.domain_experts if self.index is not None else None)

    # -- experts ---------------------------------------------------------------------------------------------
    def expert_ref(self, spec: str) -> ExpertRef:
        if self.shape is None:
            self._need_model()  # says what is missing
        return search.expert_ref(spec, self.shape)

    def expert_page(self, ref: ExpertRef, contexts: int = 12, siblings: int = 8) -> ExpertPage:
        return expert_page(self._need_index(), self.shape, ref, contexts, siblings)

    def similar_experts(self, ref: ExpertRef, n: int = 8) -> list[search.SimilarExpert]:
        found = semantic.similar(self._need_index(), ref.group, ref.flat, n)
        return [
            search.SimilarExpert(f.name, f.group, f.expert, f.label, f.score, self._density(f.group, f.expert))
            for f in found
        ]

    def _density(self, group: int, expert: int) -> float:
        E = self.shape.experts_per_side
        return float(self.group_density(group)[expert // E, expert % E])

    def token_effects(
        self, ref: ExpertRef, contexts: int = 16, n: int = 10
    ) -> tuple[TokenEffects, list[str], list[str]]:
        """Promoted/suppressed tokens and their display texts (see explorer.app.expert_output)."""
        model = self._need_model()
        examples = self._need_index().top_examples(ref.group, ref.flat, contexts)
        effects = token_effects(model, ref.group, ref.i, ref.j, [(e.token_ids, e.highlight) for e in examples], n)
        with self._tokenizer_lock:
            promoted = [self.tokenizer.decode([t]) for t, _ in effects.promoted]
            suppressed = [self.tokenizer.decode([t]) for t, _ in effects.suppressed]
        return effects, promoted, suppressed

    def search(
        self, query: str, mode: str = "auto", group: int | None = None, limit: int = 20, sort: str = "match"
    ) -> SearchResult:
        index = self._need_index()
        return search.search(index, self.shape, self.group_density, query, mode, group, limit, sort)

    def score_boards(self, group: int, n: int = 10) -> ScoreBoards:
        """The group's most and least causal and most coherent experts (explorer.app.search.score_boards)."""
        index = self._need_index()
        search.check_group(group, self.shape)
        return search.score_boards(index, self.shape, self.group_density, group, n)

    def labels(self, experts: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """Labels of many (group, flat id) in one index read; {} without an index, experts never active absent."""
        return self.index.labels(experts) if self.index is not None else {}

    def expert_on_text(self, ref: ExpertRef, text: str) -> ExpertOnText:
        """The expert's exact weight at every token of a text (one forward pass)."""
        ids = self._encode(text, self.limits.max_prompt_tokens, "text")
        index_max = self.index.stats(ref.group, ref.flat).max_weight if self.index is not None else None
        return ExpertOnText(ref, self.pieces(ids), expert_weights_on_text(self.model, ids, ref), index_max)

    # -- prompt inspector ------------------------------------------------------------------------------------
    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of a prompt, within the prompt limit."""
        return self._encode(text, self.limits.max_prompt_tokens, "prompt")

    def why_next_token(self, token_ids: list[int], position: int, n: int = 10) -> TokenWhy:
        """Which experts pushed the token after `position` (the text's next token, or the model's top prediction
        after the last one): each active expert's exact logit contribution along the direct path."""
        model = self._need_model()
        if not 0 <= position < len(token_ids):
            raise RequestRejected(f"Position {position} is outside the text: its tokens are 0..{len(token_ids) - 1}.")
        if len(token_ids) > self.limits.max_prompt_tokens:
            raise RequestRejected(
                f"The text has {len(token_ids):,} tokens: the limit is {self.limits.max_prompt_tokens:,}."
            )
        if not 1 <= n <= 100:
            raise RequestRejected(f"Ask for 1..100 experts each way, not {n}.")
        return why_next_token(model, list(token_ids), position, None, n)

    def inspect(self, text: str, min_weight: float = ACTIVE_WEIGHT) -> PromptInspection:
        ids = self._encode(text, self.limits.max_prompt_tokens, "prompt")
        if not 0 < min_weight <= 1:
            raise RequestRejected(f"The activity threshold must lie in (0, 1], not {min_weight}.")
        return inspect_prompt(self.model, ids, self.pieces(ids), min_weight)

    def experts_on_text(self, text: str, n: int = 20, group: int | None = None) -> list[str]:
        """Names of the experts with the largest summed weight over a text (to switch them off)."""
        if not 1 <= n <= 1000:
            raise RequestRejected(f"Ask for 1..1000 experts, not {n}.")
        return [str(f.ref) for f in experts_firing_most(self.inspect(text), n, group)]

    # -- ablation -------------------------------------------------------------------------------------------
    def domain_experts(self, domain: str) -> list[ExpertRef]:
        """The experts of `domain:NAME` (explorer.app.domains), cached per domain."""
        index = self._need_index()
        if domain not in self._domain_experts:
            self._domain_experts[domain] = domains.domain_experts(index, domain)
        return self._domain_experts[domain]

    def resolve_ablation(self, text: str) -> ablation_set.ResolvedAblation:
        self._need_model()
        return ablation_set.resolve(text, self.shape, self.domain_experts if self.index is not None else None)

    def generate(self, prompt: str, ablation_text: str, settings: GenerationSettings) -> Iterator[GenerationUpdate]:
        model = self._need_model()
        prompt_ids = self._encode(prompt, self.limits.max_prompt_tokens, "prompt")
        settings.checked(self.limits, len(prompt_ids), model.config.max_position_embeddings)
        ablation = self.resolve_ablation(ablation_text).ablation
        control, control_note = self.control_set(ablation)
        for update in side_by_side(model, prompt_ids, ablation, settings, control):
            pieces, effect = [], update.effect
            if effect is not None:
                # window_pieces: bytes the model wrote that make no character show as bytes, not as U+FFFD
                pieces = self.window_pieces(prompt_ids + update.baseline_ids)[len(prompt_ids) :]
                effect = replace(effect, control_note=control_note)
            yield GenerationUpdate(
                self.decode(update.baseline_ids),
                self.decode(update.ablated_ids),
                update.finished,
                effect,
                pieces,
            )

    def measure_text(self, text: str, ablation_text: str, with_control: bool = True) -> TextEffect:
        """Perplexity of a given text with and without the switched-off experts (and their control set)."""
        model = self._need_model()
        ids = self._encode(text, min(self.limits.max_text_tokens, model.config.max_position_embeddings), "text")
        resolved = self.resolve_ablation(ablation_text)
        control, control_note = self.control_set(resolved.ablation) if with_control else (None, "")
        effect = compare_on_text(model, ids, resolved.ablation, first_scored=1, control=control)
        return TextEffect(replace(effect, control_note=control_note), self.pieces(ids)[1:], resolved.summary())

    def control_set(self, ablation) -> tuple[ControlSet | None, str]:
        """The control of a switched-off set (explorer.app.control), or None and why there is none."""
        if ablation is None:
            return None, "Nothing is switched off: no control to compare with."
        if self.index is None:
            return None, "A control needs the expert index (its densities): none is loaded."
        try:
            return control_set(ablation, self.shape, self.group_density), ""
        except NoControl as error:
            return None, str(error)

    # -- concept builder ---------------------------------------------------------------------------------------
    @functools.cached_property
    def _index_background(self) -> concept.Background:
        """The indexed corpus as the concept builder's default background (read once: the index never changes)."""
        return concept.background_from_index(self._need_index(), self.shape)

    def concept(
        self, examples: str, counter_examples: str = "", ratio: float = concept.CONCEPT_RATIO
    ) -> concept.Concept:
        """The experts of a concept given by examples (texts separated by blank lines), against counter-examples
        or, by default, the indexed corpus; with a preview of switching them off (explorer.app.concept)."""
        model = self._need_model()
        concept.check_ratio(ratio)
        most = min(self.limits.max_text_tokens, model.config.max_position_embeddings)

        def encoded(text: str, what: str) -> list[list[int]]:
            return [self._encode(part, most, f"{what} {k + 1}") for k, part in enumerate(concept.split_texts(text))]

        example_ids = encoded(examples, "example")
        if not example_ids:
            raise RequestRejected("Give examples of the concept: texts separated by blank lines.")
        min_weight = self.index.meta().min_weight if self.index is not None else ACTIVE_WEIGHT
        counter_ids = encoded(counter_examples, "counter-example")
        if counter_ids:
            background = concept.background_from_counter_examples(model, counter_ids, min_weight)
        elif self.index is not None:
            background = self._index_background
        else:
            raise RequestRejected("Without an expert index, give counter-examples: the background to compare with.")
        return concept.build_concept(model, example_ids, background, ratio, min_weight)
