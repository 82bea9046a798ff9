"""The Gradio page: the header, the tabs (explorer.web.tabs, one module each) and the named API, composed.

Tabs: Overview (facts, density histogram, the E x E map), Search, Expert, Inspector, Switch off (live
ablation). Per-user state travels in components and gr.State, never in globals: the switched-off set is a
textbox value (also mirrored into the URL, `?ablate=...`), and deep links `?expert=G1/17`,
`?ablate=G1/5,G2/17`, `?prompt=...` open the page there.
"""

import gradio as gr

from explorer.app.explorer import Explorer
from explorer.app.presets import LoadedPresets
from explorer.model.naming import group_name
from explorer.paths import ASSETS_DIR
from explorer.web import api, html, pages, talk
from explorer.web.tabs import expert, inspector, overview, search, switch_off
from explorer.web.tabs.common import INDEX, MODEL, Context

STYLE = ASSETS_DIR / "style.css"


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
    return {"theme": theme(), "css_paths": [STYLE], "footer_links": ["api"], "head": talk.TALK_HEAD}


def build(
    explorer: Explorer,
    model_concurrency: int = 2,
    index_concurrency: int = 8,
    presets: LoadedPresets | None = None,
) -> gr.Blocks:
    """The page; `presets` (explorer.app.presets.load_presets) feed the "Start here" row and talk mode."""
    presets = presets or LoadedPresets()
    model_events = {"concurrency_id": MODEL, "concurrency_limit": model_concurrency, "api_visibility": "private"}
    index_events = {"concurrency_id": INDEX, "concurrency_limit": index_concurrency, "api_visibility": "private"}

    with gr.Blocks(title="Monet Explorer", fill_width=True) as demo:
        gr.HTML(
            '<div class="app-title"><h1>Monet Explorer</h1><span>the experts inside a Monet model: read what '
            "they fire on, find them, switch them off while it writes</span></div>",
            elem_id="app-header",
        )
        problems = pages.problems_html(explorer) + "".join(html.notice(p, "warning") for p in presets.problems)
        gr.HTML(problems, elem_id="app-problems")
        with gr.Tabs(selected="overview", elem_id="main-tabs") as tabs:
            ctx = Context(explorer, demo, tabs, pages.group_choices(explorer), model_events, index_events)
            overview_tab = overview.build(ctx, presets.presets)
            search_tab = search.build(ctx)
            expert_tab = expert.build(ctx)
            inspector_tab = inspector.build(ctx)
            switch_off_tab = switch_off.build(ctx, presets.presets, overview_tab.start_here)
        talk.build(ctx, presets.presets)  # shown instead of all the above with ?talk=1

        # -- links between tabs ---------------------------------------------------------------------------------
        expert.open_on_clicks(
            ctx,
            expert_tab,
            (
                *overview_tab.clickables,
                search_tab.results,
                inspector_tab.token_experts,
                inspector_tab.token_why,
                switch_off_tab.concept_result,
            ),
        )
        expert.open_on(
            ctx,
            expert_tab,
            overview_tab.open_cell.click,
            lambda g, i, j: f"{group_name(g)} ({int(i or 0)}, {int(j or 0)})" if g is not None else "",
            [overview_tab.group, overview_tab.cell_i, overview_tab.cell_j],
            status=overview_tab.cell_status,
        )
        switch_off.connect(ctx, switch_off_tab, expert_tab, inspector_tab)

        # -- named API endpoints ----------------------------------------------------------------------------------
        for name, fn in api.endpoints(explorer).items():
            limits = (
                {"concurrency_id": MODEL, "concurrency_limit": model_concurrency}
                if name in api.MODEL_ENDPOINTS
                else {"concurrency_id": INDEX, "concurrency_limit": index_concurrency}
            )
            gr.api(fn, api_name=name, **limits)
    return demo
