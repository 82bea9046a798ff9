"""The Switch-off tab: a set of experts to switch off (a textbox, mirrored into the URL `?ablate=`), the plain and
the ablated model writing side by side, and the perplexity of a given text with and without; under each effect the
set against a control of like experts (explorer.web.concept_views.control_html). The concept panel builds a set
from examples of a concept (explorer.app.concept) and can make it the switched-off set.

Other tabs add to the set (connect): the expert page's Switch off button, the inspector's firing experts.
The tab opens on the first demo preset (its prompt and set filled in); a click on a preset (here, or on the
Overview's "Start here" row) moves here, fills both and runs it (explorer.web.first_minute.preset_run_view).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import gradio as gr

from explorer.app.presets import Preset
from explorer.web import concept_views, first_minute, messages, pages
from explorer.web.tabs.common import PROGRESS, QUIET_EVENT, Context, clickable, status_line, url_js
from explorer.web.tabs.expert import ExpertTab
from explorer.web.tabs.inspector import InspectorTab


@dataclass(frozen=True)
class SwitchOffTab:
    ablation_box: gr.Textbox
    concept_result: gr.HTML  # its expert links open the expert


@dataclass(frozen=True)
class ConceptPanel:
    examples: gr.Textbox
    upload: gr.File
    counter_examples: gr.Textbox
    ratio: gr.Number
    find: gr.Button
    use: gr.Button
    status: gr.HTML
    result: gr.HTML
    found_set: gr.State  # the last concept's set, as text


def _concept_panel() -> ConceptPanel:
    """Examples (a box or a file), counter-examples, the ratio; the proposed experts and their preview."""
    with gr.Accordion(
        "Build a set from examples of a concept: the experts that fire on them ≥ 2× more than on a background",
        open=False,
        elem_id="concept-panel",
    ):
        with gr.Row(equal_height=True):
            examples = gr.Textbox(
                label="examples of the concept: texts separated by blank lines (8 or more: every 4th is held out)",
                lines=6,
                scale=3,
                elem_id="concept-examples",
                placeholder="Der Hund schläft im Garten.\n\nAm Abend regnet es in der Stadt.\n\n…",
            )
            with gr.Column(scale=2):
                counter_examples = gr.Textbox(
                    label="counter-examples (optional; without them the background is the indexed corpus)",
                    lines=3,
                    elem_id="concept-counter",
                )
                upload = gr.File(
                    label="or a file of examples (UTF-8 text)", type="filepath", height=90, elem_id="concept-file"
                )
        with gr.Row(equal_height=True):
            ratio = gr.Number(
                concept_views.concept_rules.CONCEPT_RATIO,
                label="ratio to the background (the paper's rule: 2)",
                minimum=1.01,
                maximum=1000,
                scale=1,
            )
            find = gr.Button("Find the concept's experts", variant="primary", scale=0, elem_id="find-concept")
            use = gr.Button("Use as the switched-off set", scale=0, elem_id="use-concept")
        status = status_line("concept-status")
        result = clickable(elem_id="concept-result")
        found_set = gr.State("")
    return ConceptPanel(examples, upload, counter_examples, ratio, find, use, status, result, found_set)


def _connect_concept(ctx: Context, panel: ConceptPanel, ablation_box: gr.Textbox) -> None:
    explorer = ctx.explorer

    def find_concept(examples, upload, counter_examples, ratio, progress=PROGRESS):
        progress(0, desc="Running the model on the examples and the background…")
        return concept_views.concept_view(explorer, examples, upload, counter_examples, ratio)

    panel.find.click(
        find_concept,
        [panel.examples, panel.upload, panel.counter_examples, panel.ratio],
        [panel.result, panel.found_set, panel.status],
        **ctx.model_events,
    )

    def use_concept(found: str):
        if not found:
            return gr.skip(), messages.status("Find a concept's experts first (or none passed the rule).", "warning")
        count = len(found.split(","))
        return found, messages.status(f"The switched-off set is now the concept's {count:,} experts: see above.")

    panel.use.click(use_concept, panel.found_set, [ablation_box, panel.status], api_visibility="private")


def build(ctx: Context, presets: Sequence[Preset] = (), start_here: gr.HTML | None = None) -> SwitchOffTab:
    """The tab; `start_here` is another presets row (the Overview's) whose clicks run a preset here."""
    explorer, groups = ctx.explorer, ctx.groups
    first = presets[0] if presets else None
    with gr.Tab("Switch off", id="ablate"):
        tab_presets = None
        if presets:
            lead = "Demo presets (one click fills the set and the prompt, and runs):"
            tab_presets = first_minute.preset_buttons(presets, "switch-off-presets", lead=lead)
        with gr.Row(equal_height=True):
            ablation_box = gr.Textbox(
                first.ablate if first else "",
                label="switched-off experts (also in the page address)",
                lines=2,
                scale=3,
                elem_id="ablation-set",
                placeholder=explorer.examples.ablation_placeholder(),
            )
            with gr.Column(scale=2):
                summary = gr.HTML(
                    pages.ablation_summary(explorer, first.ablate if first else ""), elem_id="ablation-summary"
                )
                clear = gr.Button("Clear", size="sm")
        with gr.Accordion("Add to the set: a row or column of the map, a domain, the experts of a text", open=False):
            with gr.Row(equal_height=True):
                line_group = gr.Dropdown(groups, value=0 if groups else None, label="group", scale=1)
                line_side = gr.Radio(["row", "column"], value="row", label="whole", scale=1)
                line_number = gr.Number(label="i or j", precision=0, minimum=0, scale=1)
                add_line = gr.Button("Add", scale=0)
            with gr.Row(equal_height=True):
                domain = gr.Dropdown(
                    explorer.domains(),
                    label="domain (experts with ≥ 2× their mean weight on it than on any other domain)",
                    scale=3,
                )
                add_domain = gr.Button("Add domain", scale=0)
            with gr.Row(equal_height=True):
                pasted = gr.Textbox(
                    label="text", placeholder="paste text: its most active experts", scale=3, elem_id="pasted-text"
                )
                how_many = gr.Number(20, label="how many", precision=0, minimum=1, maximum=1000, scale=1)
                add_pasted = gr.Button("Add its experts", scale=0, elem_id="add-pasted")
            add_status = status_line("add-status")
        concept = _concept_panel()
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(
                label="prompt", value=first.prompt if first else "The capital of France is", scale=4, elem_id="prompt"
            )
            generate = gr.Button("Generate", variant="primary", scale=0, elem_id="generate")
            stop = gr.Button("Stop", scale=0, elem_id="stop")
        generate_status = status_line("generate-status")
        with gr.Row():
            most_new = explorer.limits.max_new_tokens
            max_new = gr.Slider(1, most_new, value=min(40, most_new), step=1, label="new tokens")
            temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0 = greedy)")
            seed = gr.Number(0, label="seed (same for both sides)", precision=0)
        preset_effect = gr.HTML(elem_id="preset-effect")
        with gr.Row(equal_height=True):
            baseline = gr.HTML(elem_id="baseline")
            ablated = gr.HTML(elem_id="ablated")
        effect = gr.HTML(elem_id="effect")
        run = gr.State()  # the generation on show (pages.GenerationRun), for Stop
        chosen = gr.State()  # the preset number of the last click (states live in their tab: see inspector.py)
        with gr.Accordion("Perplexity of a given text, with and without", open=True):
            measure_text = gr.Textbox(
                label="text",
                lines=3,
                elem_id="measure-text",
                placeholder="paste text the switched-off experts should know",
            )
            measure = gr.Button("Measure", elem_id="measure")
            measure_status = status_line("measure-status")
            measured = gr.HTML(elem_id="measured")

    # -- the set -------------------------------------------------------------------------------------------
    ablation_box.change(
        lambda text: pages.ablation_summary(explorer, text), ablation_box, summary, **ctx.index_events
    ).then(None, ablation_box, None, js=url_js("ablate"))
    clear.click(lambda: "", None, ablation_box, api_visibility="private")
    add_line.click(
        lambda text, g, side, n: pages.add_line(explorer, text, g, side, n),
        [ablation_box, line_group, line_side, line_number],
        [ablation_box, add_status],
        api_visibility="private",
    )
    add_domain.click(
        lambda text, d: pages.add_domain(explorer, text, d),
        [ablation_box, domain],
        [ablation_box, add_status],
        **ctx.index_events,
    )

    def add_pasted_experts(text, pasted_text, n, progress=PROGRESS):
        progress(0, desc="Running the model on the text…")
        return pages.add_firing(explorer, text, pasted_text, n)

    add_pasted.click(
        add_pasted_experts,
        [ablation_box, pasted, how_many],
        [ablation_box, add_status],
        **ctx.model_events,
    )

    # -- generation and measure ----------------------------------------------------------------------------
    def run_generation(text, ablation_text, n, temp, seed_value):
        yield from pages.generate_view(explorer, text, ablation_text, n, temp, seed_value)

    generating = gr.on(
        [generate.click, prompt.submit],
        run_generation,
        [prompt, ablation_box, max_new, temperature, seed],
        [baseline, ablated, effect, run, generate_status],
        **ctx.model_events,
    )
    # the numbers above the panels belong to a preset's run: a run of your own clears them
    gr.on([generate.click, prompt.submit], lambda: "", None, preset_effect, **QUIET_EVENT)

    # -- presets: a click moves here, fills the set and the prompt, then measures and generates ------------------
    def choose_preset(evt: gr.EventData):
        number = first_minute.preset_of(presets, evt._data)
        if number is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return gr.Tabs(selected="ablate"), presets[number].ablate, presets[number].prompt, number

    def run_preset(number, n, temp, seed_value):
        if number is None:
            return
        yield from first_minute.preset_run_view(explorer, presets[number], n, temp, seed_value)

    preset_runs = [
        row.click(choose_preset, None, [ctx.tabs, ablation_box, prompt, chosen], api_visibility="private").then(
            run_preset,
            [chosen, max_new, temperature, seed],
            [preset_effect, baseline, ablated, effect, run, generate_status],
            **ctx.model_events,
        )
        for row in (tab_presets, start_here)
        if row is not None
    ]
    stop.click(None, None, None, cancels=[generating, *preset_runs]).then(
        pages.stopped_view, run, [baseline, ablated, effect, generate_status], api_visibility="private"
    )

    def measure_text_effect(text, ablation_text, progress=PROGRESS):
        progress(0, desc="Running the model on the text, with and without…")
        return pages.measure_view(explorer, text, ablation_text)

    measure.click(
        measure_text_effect,
        [measure_text, ablation_box],
        [measured, measure_status],
        **ctx.model_events,
    )
    changed = "The prompt, the set or the settings changed since the texts below: press Generate."
    gr.on(
        [max_new.input, temperature.input, seed.input],
        lambda state: pages.stale_status(state, changed),
        run,
        generate_status,
        **QUIET_EVENT,
    )

    def prompt_or_set_changed(state, prompt_text, ablation_text):
        """Stale only when they differ from the run's: a preset fills both, and that change may arrive late."""
        if state is not None and (state.prompt, state.ablation) == (prompt_text, ablation_text):
            return gr.skip()
        return pages.stale_status(state, changed)

    gr.on(
        [prompt.input, ablation_box.change],
        prompt_or_set_changed,
        [run, prompt, ablation_box],
        generate_status,
        **QUIET_EVENT,
    )
    gr.on(
        [measure_text.input, ablation_box.change],
        lambda shown: pages.stale_status(shown, "The text or the set changed since the measure below: press Measure."),
        measured,
        measure_status,
        **QUIET_EVENT,
    )

    # -- deep links: ?ablate=...&prompt=... open this tab with them --------------------------------------------
    def from_url(request: gr.Request):
        params = request.query_params if request else {}
        ablate, prompt_text = params.get("ablate"), params.get("prompt")
        opens_this_tab = (ablate or prompt_text) and not params.get("expert")
        return (
            ablate if ablate is not None else gr.skip(),
            prompt_text if prompt_text is not None else gr.skip(),
            gr.Tabs(selected="ablate") if opens_this_tab else gr.skip(),
        )

    def run_linked(request: gr.Request, text, ablation_text, n, temp, seed_value):
        """A link with ?ablate= runs on load, as if Generate were pressed (an expert link opens the expert)."""
        params = request.query_params if request else {}
        if params.get("ablate") and not params.get("expert"):
            yield from pages.generate_view(explorer, text, ablation_text, n, temp, seed_value)
        else:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    linked = ctx.blocks.load(from_url, None, [ablation_box, prompt, ctx.tabs], api_visibility="private").then(
        run_linked,
        [prompt, ablation_box, max_new, temperature, seed],
        [baseline, ablated, effect, run, generate_status],
        **ctx.model_events,
    )
    stop.click(None, None, None, cancels=[linked])
    _connect_concept(ctx, concept, ablation_box)
    return SwitchOffTab(ablation_box, concept.result)


def connect(ctx: Context, tab: SwitchOffTab, expert: ExpertTab, inspector: InspectorTab) -> None:
    """The buttons of other tabs that add to the set; their messages go to their own tab's status line."""
    explorer = ctx.explorer

    def move_here(new_set, status):
        """The new set and the status for the other tab's line; this tab is shown unless the status is an error."""
        return new_set, status, gr.skip() if isinstance(status, messages.ErrorNotice) else gr.Tabs(selected="ablate")

    def switch_off_expert(text, name):
        """Add the expert on show and move to this tab; a bad name is said beside the expert box."""
        return move_here(*pages.add_expert(explorer, text, name))

    expert.switch_off.click(
        switch_off_expert,
        [tab.ablation_box, expert.spec],
        [tab.ablation_box, expert.status, ctx.tabs],
        api_visibility="private",
    )

    def switch_off_firing(text, inspected_text):
        """Add the 20 experts that fire most on the inspected text and move to this tab."""
        return move_here(*pages.add_firing(explorer, text, inspected_text, 20))

    inspector.firing_off.click(
        switch_off_firing,
        [tab.ablation_box, inspector.text],
        [tab.ablation_box, inspector.status, ctx.tabs],
        **ctx.model_events,
    )
