"""The Gradio page: layout and event wiring only (what each event shows comes from explorer.web.pages).

Tabs: Overview (facts, density histogram, the E x E map), Search, Expert, Inspector, Switch off (live
ablation). Clickable HTML (expert links, table rows, map cells, tokens) reports clicks through
CLICK_JS as `select` events. Per-user state travels in components and gr.State, never in globals:
the switched-off set is a textbox value (also mirrored into the URL, `?ablate=...`), and deep links
`?expert=G1/17`, `?ablate=G1/5,G2/17`, `?prompt=...` open the page there.
"""

import gradio as gr

from explorer.app.explorer import SEARCH_MODES, Explorer
from explorer.app.inspector import ACTIVE_WEIGHT
from explorer.paths import ASSETS_DIR
from explorer.web import api, html, pages

STYLE = ASSETS_DIR / "style.css"
MODEL = "model"  # concurrency group of everything that runs the model
INDEX = "index"

CLICK_JS = """
const cell = (event, map) => {
  const box = map.getBoundingClientRect(), E = +map.dataset.e;
  return {group: +map.dataset.group, E,
          i: Math.min(E - 1, Math.floor((event.clientY - box.top) / box.height * E)),
          j: Math.min(E - 1, Math.floor((event.clientX - box.left) / box.width * E))};
};
element.addEventListener('click', (event) => {
  if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;  // new tab: a real link
  const map = event.target.closest('img.expert-map');
  if (map) { const c = cell(event, map); trigger('select', {kind: 'cell', group: c.group, i: c.i, j: c.j}); return; }
  const token = event.target.closest('[data-token]');
  if (token) { trigger('select', {kind: 'token', value: +token.dataset.token}); return; }
  const expert = event.target.closest('[data-expert]');
  if (expert) { event.preventDefault(); trigger('select', {kind: 'expert', value: expert.dataset.expert}); }
});
element.addEventListener('mousemove', (event) => {
  const map = event.target.closest('img.expert-map');
  if (!map) return;
  const c = cell(event, map), readout = element.querySelector('.map-readout');
  const name = `G${c.group + 1}`;
  if (readout) readout.textContent = `${name} (${c.i}, ${c.j}) = ${name}/${c.i * c.E + c.j} · click to open`;
});
"""


def _url_js(key: str) -> str:
    """JS that mirrors one value into the address bar's query (?key=value) without reloading."""
    return f"""(value) => {{
  const params = new URLSearchParams(window.location.search);
  if (value) params.set('{key}', value); else params.delete('{key}');
  const query = params.toString().replace(/%2F/g, '/').replace(/%2C/g, ',').replace(/%3A/g, ':');
  history.replaceState(null, '', window.location.pathname + (query ? '?' + query : ''));
  return value;
}}"""


def theme() -> gr.Theme:
    """System fonts only (nothing fetched from font services), large text for projectors."""
    return gr.themes.Default(
        primary_hue="orange",
        secondary_hue="blue",
        neutral_hue="slate",
        text_size=gr.themes.sizes.text_lg,
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def launch_options() -> dict:
    return {"theme": theme(), "css_paths": [STYLE], "footer_links": ["api"]}


def _clickable(value: str = "", **kwargs) -> gr.HTML:
    return gr.HTML(value, js_on_load=CLICK_JS, **kwargs)


def build(explorer: Explorer, model_concurrency: int = 2, index_concurrency: int = 8) -> gr.Blocks:
    groups = pages.group_choices(explorer)
    model_events = {"concurrency_id": MODEL, "concurrency_limit": model_concurrency, "api_visibility": "private"}
    index_events = {"concurrency_id": INDEX, "concurrency_limit": index_concurrency, "api_visibility": "private"}

    with gr.Blocks(title="Monet Explorer", fill_width=True) as demo:
        gr.HTML(
            '<div class="app-title"><h1>Monet Explorer</h1><span>the experts inside a Monet model: read what '
            "they fire on, find them, switch them off while it writes</span></div>"
        )
        gr.HTML(pages.problems_html(explorer))
        with gr.Tabs(selected="overview") as tabs:
            # -- overview ------------------------------------------------------------------------------
            with gr.Tab("Overview", id="overview"):
                gr.HTML(pages.facts_html(explorer))
                gr.Plot(pages.density_chart(explorer), show_label=False, elem_id="density-histogram")
                gr.Markdown(
                    "### The E × E map of a routing group\nRow *i* and column *j* are the two routing sides "
                    "(product keys): expert (i, j) fires when both are selected. Colour = density (log "
                    "scale); bars = row and column means. **Click a cell to open its expert.**"
                )
                overview_group = gr.Radio(
                    groups, value=0 if groups else None, label="routing group", elem_id="overview-group"
                )
                with gr.Row():
                    with gr.Column(scale=3):
                        density_map = _clickable(elem_id="density-map")
                        with gr.Accordion("Open a cell by number", open=False), gr.Row():
                            cell_i = gr.Number(label="row i", precision=0, minimum=0)
                            cell_j = gr.Number(label="column j", precision=0, minimum=0)
                            open_cell = gr.Button("Open", size="sm")
                    with gr.Column(scale=2):
                        gr.Markdown("#### Most active")
                        most_active = _clickable(elem_id="most-active")
                        gr.Markdown("#### Least active (but active at least once)")
                        least_active = _clickable(elem_id="least-active")

            # -- search --------------------------------------------------------------------------------
            with gr.Tab("Search", id="search"):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(
                        label="search experts",
                        scale=4,
                        elem_id="search-query",
                        placeholder="G1/17 · G1 (1, 1) · a token like Paris · a phrase · a topic",
                    )
                    search_group = gr.Dropdown([(pages.ALL_GROUPS, -1), *groups], value=-1, label="group", scale=1)
                    search_button = gr.Button("Search", variant="primary", scale=0, elem_id="search-button")
                mode = gr.Radio(
                    list(SEARCH_MODES),
                    value="auto",
                    label="search by",
                    info=" · ".join(f"{k}: {v}" for k, v in SEARCH_MODES.items()),
                )
                search_status = gr.HTML()
                results = _clickable(elem_id="search-results")

            # -- expert page -----------------------------------------------------------------------------
            with gr.Tab("Expert", id="expert"):
                with gr.Row(equal_height=True):
                    spec = gr.Textbox(
                        show_label=False,
                        placeholder="expert: G1/17 or G1 (1, 1)",
                        scale=3,
                        elem_id="expert-spec",
                        container=False,
                    )
                    open_button = gr.Button("Open", scale=0, min_width=90)
                    switch_off = gr.Button("Switch off", variant="stop", scale=0, min_width=160, elem_id="switch-off")
                    json_file = gr.DownloadButton("JSON", scale=0, min_width=90)
                    csv_file = gr.DownloadButton("CSV", scale=0, min_width=90)
                header = gr.HTML(
                    html.notice("Open an expert from the map, a search, the inspector or by name."),
                    elem_id="expert-header",
                )
                with gr.Row():
                    with gr.Column(scale=3):
                        gr.Markdown("#### Top contexts (shade = weight; hover a token for its value)")
                        contexts = gr.HTML(elem_id="expert-contexts")
                        gr.Markdown(
                            "#### Samples across its activations (top x% = share of activations at least this heavy)"
                        )
                        samples = gr.HTML()
                    with gr.Column(scale=2):
                        histogram = gr.Plot(show_label=False)
                        domains = gr.Plot(show_label=False)
                        gr.Markdown("#### Tokens it fires on most")
                        top_tokens = gr.HTML()
                        gr.Markdown("#### Tokens it promotes / suppresses")
                        effects = gr.HTML()
                siblings = _clickable()
                gr.Markdown("#### Similar experts (closest label and contexts)")
                similar = _clickable()

            # -- prompt inspector ---------------------------------------------------------------------------
            with gr.Tab("Inspector", id="inspect"):
                inspection = gr.State()
                with gr.Row(equal_height=True):
                    inspect_text = gr.Textbox(
                        label="text", lines=3, scale=4, elem_id="inspect-text", value="City and County of San Francisco"
                    )
                    with gr.Column(scale=1):
                        threshold = gr.Slider(0.001, 0.5, value=ACTIVE_WEIGHT, step=0.001, label="active when weight ≥")
                        inspect_button = gr.Button("Inspect", variant="primary", elem_id="inspect-button")
                        firing_off = gr.Button("Switch off the 20 experts firing most on it", size="sm")
                gr.Markdown(
                    "Shade = number of active experts at the token. **Click a token** to list them; "
                    "click an expert to open it."
                )
                inspect_tokens = _clickable(elem_id="inspect-tokens")
                token_experts = _clickable(elem_id="token-experts")

            # -- live ablation --------------------------------------------------------------------------------
            with gr.Tab("Switch off", id="ablate"):
                with gr.Row(equal_height=True):
                    ablation_box = gr.Textbox(
                        label="switched-off experts (also in the page address)",
                        lines=2,
                        scale=3,
                        elem_id="ablation-set",
                        placeholder="G1/5, G2 (3, 4), G1 (7, *), domain:code, L3/40",
                    )
                    with gr.Column(scale=2):
                        ablation_info = gr.HTML(pages.ablation_summary(explorer, ""), elem_id="ablation-summary")
                        clear = gr.Button("Clear", size="sm")
                with gr.Accordion(
                    "Add to the set: a row or column of the map, a domain, the experts of a text", open=False
                ):
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
                        pasted = gr.Textbox(label="text", placeholder="paste text: its most active experts", scale=3)
                        how_many = gr.Number(20, label="how many", precision=0, minimum=1, maximum=1000, scale=1)
                        add_pasted = gr.Button("Add its experts", scale=0)
                with gr.Row(equal_height=True):
                    prompt = gr.Textbox(label="prompt", value="The capital of France is", scale=4, elem_id="prompt")
                    generate = gr.Button("Generate", variant="primary", scale=0, elem_id="generate")
                    stop = gr.Button("Stop", scale=0)
                with gr.Row():
                    most_new = explorer.limits.max_new_tokens
                    max_new = gr.Slider(1, most_new, value=min(40, most_new), step=1, label="new tokens")
                    temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0 = greedy)")
                    seed = gr.Number(0, label="seed (same for both sides)", precision=0)
                with gr.Row(equal_height=True):
                    baseline = gr.HTML(elem_id="baseline")
                    ablated = gr.HTML(elem_id="ablated")
                effect = gr.HTML(elem_id="effect")
                with gr.Accordion("Perplexity of a given text, with and without", open=True):
                    measure_text = gr.Textbox(
                        label="text",
                        lines=3,
                        elem_id="measure-text",
                        placeholder="paste text the switched-off experts should know",
                    )
                    measure = gr.Button("Measure", elem_id="measure")
                    measured = gr.HTML(elem_id="measured")

        # -- opening an expert, from anywhere ---------------------------------------------------------------
        expert_outputs = [
            tabs,
            spec,
            header,
            contexts,
            samples,
            histogram,
            domains,
            top_tokens,
            siblings,
            json_file,
            csv_file,
        ]

        def show_expert(name: str):
            if not name:
                return [gr.skip()] * len(expert_outputs)
            view = pages.expert_view(explorer, name)
            return [
                gr.Tabs(selected="expert"),
                view["name"],
                view["header"],
                view["contexts"],
                view["samples"],
                view["histogram"],
                view["domains"],
                view["top_tokens"],
                view["siblings"],
                view["json"],
                view["csv"],
            ]

        def show_extras(name: str):
            return pages.expert_extras(explorer, name) if name else (gr.skip(), gr.skip())

        def wire_open(event, fn, inputs=None):
            opened = event(fn, inputs, expert_outputs, **index_events)
            opened.then(None, spec, None, js=_url_js("expert"))
            opened.then(show_extras, spec, [effects, similar], **model_events)

        def from_click(evt: gr.EventData):
            return show_expert(pages.spec_from_event(evt._data))

        for clickable in (density_map, most_active, least_active, results, siblings, similar, token_experts):
            wire_open(clickable.select, from_click)
        wire_open(open_button.click, show_expert, spec)
        wire_open(spec.submit, show_expert, spec)
        wire_open(
            open_cell.click,
            lambda g, i, j: show_expert(f"G{g + 1} ({int(i or 0)}, {int(j or 0)})"),
            [overview_group, cell_i, cell_j],
        )

        def from_deep_link(request: gr.Request):
            return show_expert(request.query_params.get("expert", "") if request else "")

        wire_open(demo.load, from_deep_link)

        # -- overview -----------------------------------------------------------------------------------------
        overview_outputs = [density_map, most_active, least_active]
        overview_group.change(
            lambda g: pages.overview_group(explorer, g), overview_group, overview_outputs, **index_events
        )
        demo.load(
            lambda g: pages.overview_group(explorer, g) if g is not None else ("", "", ""),
            overview_group,
            overview_outputs,
            **index_events,
        )

        # -- search ---------------------------------------------------------------------------------------------
        def run_search(text, how, group):
            return pages.search_view(explorer, text, how, None if group in (None, -1) else group)

        gr.on(
            [search_button.click, query.submit],
            run_search,
            [query, mode, search_group],
            [search_status, results],
            **index_events,
        )

        # -- inspector ------------------------------------------------------------------------------------------
        gr.on(
            [inspect_button.click, inspect_text.submit],
            lambda text, w: pages.inspect_view(explorer, text, w),
            [inspect_text, threshold],
            [inspection, inspect_tokens, token_experts],
            **model_events,
        )

        def pick_token(state, evt: gr.EventData):
            if evt._data.get("kind") != "token":
                return gr.skip(), gr.skip()
            return pages.token_view(explorer, state, int(evt._data["value"]))

        inspect_tokens.select(pick_token, inspection, [inspect_tokens, token_experts], api_visibility="private")

        # -- the switched-off set ---------------------------------------------------------------------------------
        (
            ablation_box.change(
                lambda text: pages.ablation_summary(explorer, text), ablation_box, ablation_info, **index_events
            ).then(None, ablation_box, None, js=_url_js("ablate"))
        )
        clear.click(lambda: "", None, ablation_box, api_visibility="private")
        switch_off.click(
            lambda text, name: pages.add_expert(explorer, text, name),
            [ablation_box, spec],
            ablation_box,
            api_visibility="private",
        )
        add_line.click(
            lambda text, g, side, n: pages.add_line(explorer, text, g, side, n),
            [ablation_box, line_group, line_side, line_number],
            ablation_box,
            api_visibility="private",
        )
        add_domain.click(
            lambda text, d: pages.add_domain(explorer, text, d), [ablation_box, domain], ablation_box, **index_events
        )
        add_pasted.click(
            lambda text, p, n: pages.add_firing(explorer, text, p, n),
            [ablation_box, pasted, how_many],
            ablation_box,
            **model_events,
        )
        (
            firing_off.click(
                lambda text, p: pages.add_firing(explorer, text, p, 20),
                [ablation_box, inspect_text],
                ablation_box,
                **model_events,
            ).then(lambda: gr.Tabs(selected="ablate"), None, tabs, api_visibility="private")
        )

        def run_generation(text, ablation_text, n, temp, seed_value):
            yield from pages.generate_view(explorer, text, ablation_text, n, temp, seed_value)

        generating = gr.on(
            [generate.click, prompt.submit],
            run_generation,
            [prompt, ablation_box, max_new, temperature, seed],
            [baseline, ablated, effect],
            **model_events,
        )
        stop.click(None, None, None, cancels=[generating])
        measure.click(
            lambda text, ablation_text: pages.measure_view(explorer, text, ablation_text),
            [measure_text, ablation_box],
            measured,
            **model_events,
        )

        def from_url(request: gr.Request):
            params = request.query_params if request else {}
            ablate, prompt_text = params.get("ablate"), params.get("prompt")
            opens_ablation = (ablate or prompt_text) and not params.get("expert")
            return (
                ablate if ablate is not None else gr.skip(),
                prompt_text if prompt_text is not None else gr.skip(),
                gr.Tabs(selected="ablate") if opens_ablation else gr.skip(),
            )

        demo.load(from_url, None, [ablation_box, prompt, tabs], api_visibility="private")

        # -- named API endpoints ----------------------------------------------------------------------------------
        for name, fn in api.endpoints(explorer).items():
            limits = (
                {"concurrency_id": MODEL, "concurrency_limit": model_concurrency}
                if name in api.MODEL_ENDPOINTS
                else {"concurrency_id": INDEX, "concurrency_limit": index_concurrency}
            )
            gr.api(fn, api_name=name, **limits)
    return demo
