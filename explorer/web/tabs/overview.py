"""The Overview tab: model and index facts, the density histogram, a group's E x E map and its most and least
active experts (clicks on them open experts: see expert.open_on)."""

from dataclasses import dataclass

import gradio as gr

from explorer.web import pages
from explorer.web.tabs.common import Context, clickable, status_line


@dataclass(frozen=True)
class OverviewTab:
    group: gr.Radio
    clickables: tuple[gr.HTML, ...]  # the map and the two lists: a click opens an expert
    cell_i: gr.Number
    cell_j: gr.Number
    open_cell: gr.Button
    cell_status: gr.HTML


def build(ctx: Context) -> OverviewTab:
    explorer, groups = ctx.explorer, ctx.groups
    with gr.Tab("Overview", id="overview"):
        gr.HTML(pages.facts_html(explorer))
        gr.Plot(pages.density_chart(explorer), show_label=False, elem_id="density-histogram")
        gr.Markdown(
            "### The E × E map of a routing group\nRow *i* and column *j* are the two routing sides "
            "(product keys): expert (i, j) fires when both are selected. Colour = density (log "
            "scale); bars = row and column means. **Click a cell to open its expert.**"
        )
        group = gr.Radio(groups, value=0 if groups else None, label="routing group", elem_id="overview-group")
        group_status = status_line("overview-status")
        with gr.Row():
            with gr.Column(scale=3):
                density_map = clickable(elem_id="density-map")
                with gr.Accordion("Open a cell by number", open=False):
                    with gr.Row():
                        cell_i = gr.Number(label="row i", precision=0, minimum=0)
                        cell_j = gr.Number(label="column j", precision=0, minimum=0)
                        open_cell = gr.Button("Open", size="sm")
                    cell_status = status_line("cell-status")
            with gr.Column(scale=2):
                gr.Markdown("#### Most active")
                most_active = clickable(elem_id="most-active")
                gr.Markdown("#### Least active (but active at least once)")
                least_active = clickable(elem_id="least-active")

    outputs = [density_map, most_active, least_active, group_status]
    group.change(lambda g: pages.overview_group(explorer, g), group, outputs, **ctx.index_events)
    ctx.blocks.load(
        lambda g: pages.overview_group(explorer, g) if g is not None else ("", "", "", ""),
        group,
        outputs,
        **ctx.index_events,
    )
    return OverviewTab(group, (density_map, most_active, least_active), cell_i, cell_j, open_cell, cell_status)
