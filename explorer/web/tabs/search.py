"""The Search tab: find experts by id, token, text of their contexts or meaning, in the order found or sorted by
their scores (results open experts on click)."""

from dataclasses import dataclass

import gradio as gr

from explorer.app.explorer import SEARCH_MODES
from explorer.app.search import SORT_ORDERS
from explorer.web import pages
from explorer.web.tabs.common import Context, clickable, status_line


@dataclass(frozen=True)
class SearchTab:
    results: gr.HTML  # a click on a row opens its expert


def build(ctx: Context) -> SearchTab:
    explorer = ctx.explorer
    with gr.Tab("Search", id="search"):
        with gr.Row(equal_height=True):
            query = gr.Textbox(
                label="search experts",
                scale=4,
                elem_id="search-query",
                placeholder=ctx.explorer.examples.search_placeholder(),  # examples that work on this model
            )
            group = gr.Dropdown([(pages.ALL_GROUPS, -1), *ctx.groups], value=-1, label="group", scale=1)
            search_button = gr.Button("Search", variant="primary", scale=0, elem_id="search-button")
        mode = gr.Radio(
            list(SEARCH_MODES),
            value="auto",
            label="search by",
            elem_id="search-mode",
            info=" · ".join(f"{k}: {v}" for k, v in SEARCH_MODES.items()),
        )
        sort = gr.Radio(
            list(SORT_ORDERS),
            value="match",
            label="order",
            elem_id="search-sort",
            info=" · ".join(f"{k}: {v}" for k, v in SORT_ORDERS.items()),
        )
        status = status_line("search-status")
        results = clickable(elem_id="search-results")

    def run_search(text, how, chosen_group, order):
        return pages.search_view(explorer, text, how, None if chosen_group in (None, -1) else chosen_group, order)

    gr.on(
        [search_button.click, query.submit],
        run_search,
        [query, mode, group, sort],
        [results, status],
        **ctx.index_events,
    )

    def resort(text, how, chosen_group, order):  # a new order re-runs the search there is, if any
        return run_search(text, how, chosen_group, order) if (text or "").strip() else (gr.skip(), gr.skip())

    sort.change(resort, [query, mode, group, sort], [results, status], **ctx.index_events)
    return SearchTab(results)
