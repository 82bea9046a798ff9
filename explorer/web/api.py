"""The named API endpoints (/search, /expert, /inspect, /why, /generate, /perplexity, /top_experts, /concept): JSON in,
JSON out.

Each is a typed function over one Explorer; ui.py registers them with gr.api, so gradio_client and
plain HTTP get the same answers as the page. Groups are numbered from 1 here (0 = all groups), as in
expert names. Errors come back as the same sentences the page shows (explorer.web.messages), HTML-escaped
because Gradio renders an error's message as HTML.
"""

from dataclasses import asdict

from explorer.app.explorer import Explorer
from explorer.app.generation import GenerationSettings
from explorer.app.inspector import ACTIVE_WEIGHT
from explorer.app.tokens import RequestRejected
from explorer.model.naming import group_number
from explorer.web.messages import api_errors


def _group(explorer: Explorer, group: int) -> int | None:
    if group == 0:
        return None
    if explorer.shape is None or not 1 <= group <= explorer.shape.num_groups:
        raise RequestRejected(f"group must be 0 (all) or 1..{explorer.shape.num_groups if explorer.shape else '?'}.")
    return group - 1


def endpoints(explorer: Explorer) -> dict:
    """api_name -> function, for gr.api."""

    def search(query: str, mode: str = "auto", group: int = 0, limit: int = 20) -> dict:
        """Find experts: mode auto | id | token | text | meaning; group 1..G or 0 for all."""
        result = explorer.search(query, mode, _group(explorer, group), limit)
        rows = [{**asdict(row), "group": group_number(row.group)} for row in result.rows]
        return {"mode": result.mode, "message": result.message, "results": rows}

    def expert(expert: str) -> dict:
        """One expert's page data: stats, all its top contexts with per-token weights, samples, histogram, domains,
        siblings."""
        return explorer.expert_page(explorer.expert_ref(expert), contexts=None).to_json()

    def inspect(text: str, min_weight: float = ACTIVE_WEIGHT, per_group: int = 20) -> dict:
        """Per token of a text, the active experts of every group with their weights and per-head parts."""
        return explorer.inspect(text, min_weight).to_json(per_group)

    def why(text: str, position: int, n: int = 10) -> dict:
        """Which experts pushed the token after `position` (0-based) of a text: each active expert's exact
        contribution to that logit along the direct path, the n strongest up and down, with each layer's total."""
        token_ids = explorer.prompt_ids(text)
        why = explorer.why_next_token(token_ids, int(position), int(n))
        labels = explorer.labels([(push.ref.group, push.ref.flat) for push in (*why.up, *why.down)])
        answer = why.to_json()
        for key, pushes in (("up", why.up), ("down", why.down)):
            for row, push in zip(answer[key], pushes, strict=True):
                row["label"] = labels.get((push.ref.group, push.ref.flat), "")
        return {**answer, "token": explorer.token_texts([why.token_id])[0]}

    def generate(
        prompt: str, ablate: str = "", max_new_tokens: int = 40, temperature: float = 0.0, seed: int = 0
    ) -> dict:
        """Baseline and ablated continuations (same seed), the ablation's effect on the baseline continuation: per
        token log p, Δ log p and KL(plain || ablated), and the same for a control set of like experts (effect.control)
        with effect.specificity = mean KL of the set / mean KL of the control."""
        settings = GenerationSettings(max_new_tokens, temperature, 1.0, seed)
        *_, last = explorer.generate(prompt, ablate, settings)  # the final update carries the effect
        effect = last.effect.to_json() if last.effect is not None else None
        return {
            "baseline": last.baseline_text,
            "ablated": last.ablated_text,
            "ablate": ablate,
            "switched_off": explorer.resolve_ablation(ablate).summary(),
            "effect": effect,
        }

    def perplexity(text: str, ablate: str = "") -> dict:
        """Perplexity of a text with and without the switched-off experts, per-token log-probabilities, Δ log p and
        KL(plain || ablated), and the same for a control set of like experts (control), specificity = mean KL of the
        set / mean KL of the control."""
        measured = explorer.measure_text(text, ablate)
        return {**measured.effect.to_json(), "tokens": measured.pieces, "switched_off": measured.summary}

    def top_experts(text: str, n: int = 20, group: int = 0) -> list[str]:
        """The experts with the largest summed weight over a text (e.g. to switch them off)."""
        return explorer.experts_on_text(text, n, _group(explorer, group))

    def concept(examples: str, counter_examples: str = "", ratio: float = 2.0) -> dict:
        """The experts of a concept: examples are texts separated by blank lines; an expert is proposed when its mean
        weight on them is >= ratio x its mean on the background (the counter-examples, by default the indexed
        corpus). `ablate` is the set as /generate and /perplexity take it; `preview` the loss rise on held-out
        examples and on the background with the set switched off."""
        return explorer.concept(examples, counter_examples, float(ratio)).to_json()

    functions = {
        "search": search,
        "expert": expert,
        "inspect": inspect,
        "why": why,
        "generate": generate,
        "perplexity": perplexity,
        "top_experts": top_experts,
        "concept": concept,
    }
    return {name: api_errors(fn) for name, fn in functions.items()}


MODEL_ENDPOINTS = (
    "inspect",
    "why",
    "generate",
    "perplexity",
    "top_experts",
    "concept",
)  # share the model's concurrency limit
