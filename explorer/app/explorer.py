"""What the app can answer, without any UI: the loaded model, its tokenizer and its expert index behind one object.

`Explorer.load(settings)` never raises: a missing model, a missing, corrupt or mismatched index become
`problems` (sentences the page shows) and the parts that need them answer with a RequestRejected
naming the fix. Every method takes what one request needs (an ablation set is text, resolved per
call), so one Explorer serves all users at once. Groups are 0-based here; names count from 1.
"""

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from explorer.app import ablation_set
from explorer.app.expert_output import TokenEffects, token_effects
from explorer.app.generation import AblationEffect, GenerationSettings, Limits, compare_on_text, side_by_side
from explorer.app.inspector import ACTIVE_WEIGHT, PromptInspection, experts_firing_most, inspect_prompt
from explorer.app.tokens import RequestRejected, encode, token_pieces
from explorer.index.reader import Example, ExpertIndex, ExpertStats, IndexUnavailable
from explorer.model.naming import ExpertRef, ModelShape, parse_expert_ref

MAX_QUERY_CHARS = 200
SEARCH_MODES = {
    "auto": "an expert id if it is one, else a token, else text inside top contexts",
    "id": "expert id: G5/147040, G5 (287, 96), or a flat id / (i, j) with the group selector",
    "token": "experts whose top contexts most often highlight this token",
    "text": "experts with this text inside their top contexts",
    "meaning": "experts whose label and contexts are closest in meaning (sentence embeddings)",
}


@dataclass(frozen=True)
class AppSettings:
    model: str
    index: str | None
    device: str = "auto"
    dtype: str = "auto"
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class DomainVerdict:
    """The paper's rule: specialised in D when its mean weight on D is >= 2x that on the next domain."""

    specialised_in: str | None
    ratio: float | None  # top domain's mean / next domain's mean (inf when only the top one is non-zero)
    text: str


def domain_verdict(means: pd.DataFrame, rule: float = 2.0) -> DomainVerdict:
    ranked = means.sort_values("mean_weight", ascending=False)
    if len(ranked) < 2:
        return DomainVerdict(None, None, "The index has fewer than two domains: no domain comparison.")
    (top, top_mean), (second, second_mean) = ranked[["domain", "mean_weight"]].head(2).itertuples(index=False)
    if top_mean <= 0:
        return DomainVerdict(None, None, "Never active on any domain's tokens.")
    ratio = top_mean / second_mean if second_mean > 0 else float("inf")
    shown = "∞" if ratio == float("inf") else f"{ratio:.1f}×"
    if ratio >= rule:
        return DomainVerdict(top, ratio, f"Specialised in {top}: {shown} its mean weight on {second} ({rule:g}x rule).")
    return DomainVerdict(None, ratio, f"Not specialised: {top} leads {second} by {shown} only ({rule:g}x rule).")


@dataclass(frozen=True)
class ExpertPage:
    ref: ExpertRef
    layers: range
    stats: ExpertStats
    top: list[Example]
    samples: list[Example]
    histogram: pd.DataFrame
    top_tokens: pd.DataFrame
    domains: pd.DataFrame
    verdict: DomainVerdict
    same_row: pd.DataFrame  # most active experts sharing i (first routing side)
    same_column: pd.DataFrame  # sharing j

    def to_json(self) -> dict:
        def example(e: Example) -> dict:
            return {
                "rank": e.rank,
                "weight": e.weight,
                "text": e.text,
                "tokens": e.tokens,
                "weights": e.weights,
                "highlight": e.highlight,
                "domain": e.domain,
                "source": e.source_id,
                "quantile": e.quantile,
            }

        return {
            "expert": str(self.ref),
            "pair": self.ref.pair_label,
            "group": self.ref.group + 1,
            "i": self.ref.i,
            "j": self.ref.j,
            "layers": list(self.layers),
            "label": self.stats.label,
            "density": self.stats.density,
            "active_count": self.stats.active_count,
            "mean_weight": self.stats.mean_weight,
            "mean_active_weight": self.stats.mean_active_weight,
            "max_weight": self.stats.max_weight,
            "top_contexts": [example(e) for e in self.top],
            "quantile_samples": [example(e) for e in self.samples],
            "weight_histogram": self.histogram.to_dict("records"),
            "top_tokens": self.top_tokens.to_dict("records"),
            "domains": self.domains.to_dict("records"),
            "domain_verdict": self.verdict.text,
            "specialised_in": self.verdict.specialised_in,
            "same_row": self.same_row["name"].tolist(),
            "same_column": self.same_column["name"].tolist(),
        }


@dataclass(frozen=True)
class SearchResult:
    mode: str  # the mode that answered
    rows: list[dict]  # name, label, density, evidence
    message: str


@dataclass(frozen=True)
class GenerationUpdate:
    baseline_text: str
    ablated_text: str
    finished: bool
    effect: AblationEffect | None
    effect_pieces: list[str]  # display pieces of the scored (baseline) continuation


@dataclass(frozen=True)
class TextEffect:
    effect: AblationEffect
    pieces: list[str]  # display pieces of the scored tokens
    summary: str


def check_index_matches_model(index: ExpertIndex, model, tokenizer) -> str | None:
    """A sentence saying how the index differs from the model, or None when they match."""
    meta, config = index.meta_dict(), model.config
    expected = {
        "num_layers": config.num_hidden_layers,
        "moe_groups": config.moe_groups,
        "moe_experts": config.moe_experts,
        "moe_heads": config.moe_heads,
        "moe_decompose": config.moe_decompose,
    }
    differ = [f"{key} {meta.get(key)} (model: {value})" for key, value in expected.items() if meta.get(key) != value]
    if not differ and tokenizer is not None:
        size = len(tokenizer)
        probe = sorted({int(t) for t in np.linspace(0, size - 1, 64)})
        try:
            same = all(index.token_text(t) == tokenizer.decode([t]) for t in probe)
        except IndexError:
            same = False
        if not same:
            differ.append("its vocabulary (the tokenizer decodes token ids differently)")
    if differ:
        return (
            f"The index {index.path} was built for another model ({meta.get('model')}): it differs in "
            f"{'; '.join(differ)}. Expert pages and search are off; pass the index built for this model."
        )
    return None


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
        self._density_maps: dict[int, np.ndarray] = {}

    @classmethod
    def load(cls, settings: AppSettings) -> "Explorer":
        from transformers import AutoTokenizer

        from explorer.model.device import load_model

        problems, model, tokenizer, index = [], None, None, None
        try:
            model = load_model(settings.model, settings.device, settings.dtype)
        except (OSError, ValueError, RuntimeError) as error:
            problems.append(
                f"No model could be loaded from {settings.model} ({_first_line(error)}). Set --model"
                " or MONET_MODEL to a Monet checkpoint folder or hub id"
                " (e.g. MonetLLM/monet-vd-1.4B-100BT-hf)."
            )
        if model is not None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(settings.model)
            except (OSError, ValueError, TypeError) as error:
                problems.append(f"No tokenizer in {settings.model} ({_first_line(error)}): text input is off.")
        if not settings.index:
            problems.append(
                "No expert index configured: set --index or MONET_INDEX. Inspector and live"
                " ablation work without one; expert pages and search need it."
            )
        else:
            try:
                index = ExpertIndex(settings.index)
            except IndexUnavailable as error:
                problems.append(str(error))
        if index is not None and model is not None:
            mismatch = check_index_matches_model(index, model, tokenizer)
            if mismatch:
                problems.append(mismatch)
                index.close()
                index = None
        return cls(model, tokenizer, index, settings.model, problems, settings.limits)

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

    def decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- facts and overview -------------------------------------------------------------------------------
    def facts(self) -> dict:
        facts: dict = {"model": self.model_id, "problems": list(self.problems)}
        if self.model is not None:
            c = self.model.config
            facts.update(
                decomposition={"vertical": "VD", "horizontal": "HD"}[c.moe_decompose],
                layers=c.num_hidden_layers,
                hidden_size=c.hidden_size,
                experts_per_side=c.moe_experts,
                experts_per_layer=c.moe_experts**2,
                router_heads=c.moe_heads,
                moe_topk=c.moe_topk,
                expert_width=c.moe_dim,
                vocab_size=c.vocab_size,
                device=str(self.model.device),
                dtype=str(self.model.dtype).removeprefix("torch."),
                groups=[
                    f"G{g + 1} = layers {r[0]}-{r[-1]}"
                    for g in range(self.shape.num_groups)
                    for r in [self.shape.group_layers(g)]
                ],
            )
        if self.index is not None:
            meta = self.index.meta_dict()
            facts["index"] = {
                key: meta.get(key)
                for key in (
                    "corpus",
                    "tokens_processed",
                    "documents_processed",
                    "top_k",
                    "context",
                    "min_weight",
                    "created",
                    "dtype",
                    "embedding_model",
                )
            }
            facts["index"]["path"] = str(self.index.path)
            facts["index"]["domains"] = self.domains()
        return facts

    def group_density(self, group: int) -> np.ndarray:
        """[E, E] densities of one group (cached: the index never changes while the app runs)."""
        index = self._need_index()
        self._check_group(group)
        if group not in self._density_maps:
            self._density_maps[group] = index.group_density_map(group)
        return self._density_maps[group]

    def _with_density(self, rows: list[dict]) -> list[dict]:
        """Result rows (group, expert, ...) with their density (from the cached maps) and label."""
        E = self.shape.experts_per_side
        labels = self.index.labels([(row["group"], row["expert"]) for row in rows if "label" not in row])
        for row in rows:
            row["density"] = float(self.group_density(row["group"])[row["expert"] // E, row["expert"] % E])
            row.setdefault("label", labels.get((row["group"], row["expert"]), ""))
        return rows

    def experts_ever_active(self) -> list[int]:
        return [int((self.group_density(g) > 0).sum()) for g in range(self.shape.num_groups)]

    def _check_group(self, group: int) -> None:
        if self.shape is None or not 0 <= group < self.shape.num_groups:
            raise RequestRejected(f"Group G{group + 1} is outside the model.")

    def most_and_least_active(self, group: int, n: int = 15) -> tuple[pd.DataFrame, pd.DataFrame]:
        index = self._need_index()
        self._check_group(group)
        return index.most_active(group, n), index.least_active(group, n)

    def domains(self) -> list[str]:
        if self.index is None:
            return []
        return sorted(self.index.domain_means(0, 0)["domain"])  # any expert's domain means list every domain

    # -- experts ---------------------------------------------------------------------------------------------
    def expert_ref(self, spec: str) -> ExpertRef:
        if self.shape is None:
            self._need_model()  # says what is missing
        spec = (spec or "").strip()
        if not spec:
            raise RequestRejected("Name an expert, e.g. G1/17 or G1 (1, 1).")
        try:
            return parse_expert_ref(spec[:MAX_QUERY_CHARS], self.shape)
        except ValueError as error:
            raise RequestRejected(str(error)) from None

    def expert_page(self, ref: ExpertRef, contexts: int = 12, siblings: int = 8) -> ExpertPage:
        """The index part of an expert page (its queries run one after the other: side by side was slower)."""
        index = self._need_index()
        g, e = ref.group, ref.flat
        related = index.siblings(g, ref.i, ref.j)
        related = related[related["expert"] != e]
        domains = index.domain_means(g, e)
        return ExpertPage(
            ref,
            self.shape.group_layers(g),
            index.stats(g, e),
            index.top_examples(g, e, contexts),
            index.quantile_examples(g, e, 5),
            index.histogram(g, e),
            index.top_tokens(g, e, 12),
            domains,
            domain_verdict(domains),
            related[related["i"] == ref.i].head(siblings),
            related[related["j"] == ref.j].head(siblings),
        )

    def similar_experts(self, ref: ExpertRef, n: int = 8) -> list[dict]:
        frame = self._need_index().similar(ref.group, ref.flat, n)
        return self._with_density(frame.rename(columns={"grp": "group"}).to_dict("records"))

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

    # -- search ------------------------------------------------------------------------------------------
    def _parse_id_query(self, query: str, group: int | None) -> list[ExpertRef] | None:
        """Expert refs named by the query, or None when it is not an id (RequestRejected when it is a bad one)."""
        E = self.shape.experts_per_side
        if re.match(r"^\s*[GgLl]\s*\d", query):
            return [self.expert_ref(query)]
        groups = [group] if group is not None else range(self.shape.num_groups)
        if re.fullmatch(r"\s*\d+\s*", query):
            flat = int(query)
            if not 0 <= flat < E * E:
                raise RequestRejected(f"Expert id {flat} is outside the model (valid: 0..{E * E - 1}).")
            return [ExpertRef(g, flat // E, flat % E, E) for g in groups]
        pair = re.fullmatch(r"\s*\(?\s*(\d+)\s*,\s*(\d+)\s*\)?\s*", query)
        if pair:
            i, j = int(pair.group(1)), int(pair.group(2))
            if not (0 <= i < E and 0 <= j < E):
                raise RequestRejected(f"({i}, {j}) is outside the model: i and j run 0..{E - 1}.")
            return [ExpertRef(g, i, j, E) for g in groups]
        return None

    def search(self, query: str, mode: str = "auto", group: int | None = None, limit: int = 20) -> SearchResult:
        index = self._need_index()
        query = (query or "").strip()
        if not query:
            raise RequestRejected("Type something to search for: an expert id, a token, a word or a phrase.")
        if len(query) > MAX_QUERY_CHARS:
            raise RequestRejected(f"The query is {len(query)} characters long: the limit is {MAX_QUERY_CHARS}.")
        if mode not in SEARCH_MODES:
            raise RequestRejected(f"Unknown search mode {mode!r}: choose one of {', '.join(SEARCH_MODES)}.")
        if group is not None:
            self._check_group(group)
        limit = max(1, min(int(limit), 100))
        if mode in ("auto", "id"):
            refs = self._parse_id_query(query, group)
            if refs is not None:
                rows = [{"name": str(r), "group": r.group, "expert": r.flat, "evidence": r.pair_label} for r in refs]
                return SearchResult("id", self._with_density(rows), f"Expert {query}")
            if mode == "id":
                raise RequestRejected(f"{query!r} is not an expert id: {SEARCH_MODES['id']}.")
        if mode in ("auto", "token"):
            frame = index.experts_for_token(query, group, limit)
            if len(frame) or mode == "token":
                rows = [
                    {
                        "name": r.name,
                        "group": r.grp,
                        "expert": r.expert,
                        "label": r.label,
                        "evidence": f"{r.token!r} at {r.count} of its stored contexts, mean weight {r.mean_weight:.3f}",
                    }
                    for r in frame.itertuples()
                ]
                return SearchResult(
                    "token",
                    self._with_density(rows),
                    f"Experts firing most on the token {query!r}"
                    if rows
                    else f"No token of the vocabulary reads {query!r} (spaces trimmed); try text search.",
                )
        if mode in ("auto", "text"):
            found = index.search_text(query, group, limit * 4)
            frame = found.drop_duplicates(["grp", "expert"]).head(limit)
            rows = [
                {"name": r.name, "group": r.grp, "expert": r.expert, "evidence": f"{r.weight:.3f} · {r.text}"}
                for r in frame.itertuples()
            ]
            searched, containing = found.attrs["documents"]
            scope = (
                f" (searched the {searched:,} of {containing:,} documents containing it with the heaviest contexts)"
                if searched < containing
                else ""
            )
            title = (
                f"Experts with {query!r} in their top contexts{scope}"
                if rows
                else f"No top context contains {query!r}{scope}."
            )
            return SearchResult("text", self._with_density(rows), title)
        try:
            frame = index.search_semantic(query, group, limit)
        except IndexUnavailable as error:
            raise RequestRejected(str(error)) from None
        rows = [
            {
                "name": r.name,
                "group": r.grp,
                "expert": r.expert,
                "label": r.label,
                "evidence": f"similarity {r.score:.2f}",
            }
            for r in frame.itertuples()
        ]
        return SearchResult("meaning", self._with_density(rows), f"Experts closest in meaning to {query!r}")

    # -- prompt inspector ------------------------------------------------------------------------------------
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
        index = self._need_index()
        known = self.domains()
        if domain not in known:
            raise RequestRejected(f"Unknown domain {domain!r}: the index has {', '.join(known) or 'none'}.")
        frame = index.experts_skewed_to_domain(domain)
        E = self.shape.experts_per_side
        pairs = zip(frame["grp"], frame["expert"], strict=True)
        return [ExpertRef(int(g), int(e) // E, int(e) % E, E) for g, e in pairs]

    def resolve_ablation(self, text: str) -> ablation_set.ResolvedAblation:
        self._need_model()
        return ablation_set.resolve(text, self.shape, self.domain_experts if self.index is not None else None)

    def generate(self, prompt: str, ablation_text: str, settings: GenerationSettings) -> Iterator[GenerationUpdate]:
        model = self._need_model()
        prompt_ids = self._encode(prompt, self.limits.max_prompt_tokens, "prompt")
        settings.checked(self.limits, len(prompt_ids), model.config.max_position_embeddings)
        ablation = self.resolve_ablation(ablation_text).ablation
        for update in side_by_side(model, prompt_ids, ablation, settings):
            pieces = []
            if update.effect is not None:
                pieces = self.pieces(prompt_ids + update.baseline_ids)[len(prompt_ids) :]
            yield GenerationUpdate(
                self.decode(update.baseline_ids),
                self.decode(update.ablated_ids),
                update.finished,
                update.effect,
                pieces,
            )

    def measure_text(self, text: str, ablation_text: str) -> TextEffect:
        """Perplexity of a given text with and without the switched-off experts."""
        model = self._need_model()
        ids = self._encode(text, min(self.limits.max_text_tokens, model.config.max_position_embeddings), "text")
        resolved = self.resolve_ablation(ablation_text)
        effect = compare_on_text(model, ids, resolved.ablation, first_scored=1)
        return TextEffect(effect, self.pieces(ids)[1:], resolved.summary())


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
