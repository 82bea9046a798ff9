"""The Overview tab: the first minute (what an expert is, the "Start here" presets: explorer.web.first_minute), then
model and index facts, the density histogram, a group's E x E map, its most and least active experts and its score
leaderboards (clicks on them open experts: see expert.open_on; a click on a preset runs it on the Switch-off tab: see
switch_off.build)."""

from collections.abc import Sequence
from dataclasses import dataclass

import gradio as gr

from explorer.app.presets import Preset
from explorer.web import first_minute, pages
from explorer.web.tabs.common import Context, clickable, status_line


@dataclass(frozen=True)
class OverviewTab:
    group: gr.Radio
    clickables: tuple[gr.HTML, ...]  # the introduction, the map, the two lists, the leaderboards: a click opens one
    start_here: gr.HTML | None  # the presets row (None without presets): a click runs one on the Switch-off tab
    cell_i: gr.Number
    cell_j: gr.Number
    open_cell: gr.Button
    cell_status: gr.HTML


def build(ctx: Context, presets: Sequence[Preset] = ()) -> OverviewTab:
    explorer, groups = ctx.explorer, ctx.groups
    with gr.Tab("Overview", id="overview"):
        intro = clickable(first_minute.what_is_an_expert_html(explorer), elem_id="intro")
        start_here = None
        if presets:
            gr.HTML(
                '<h2 class="start-here">Start here <span class="hint">one click switches a set of experts off and '
                "lets the model write with and without them, side by side</span></h2>"
            )
            start_here = first_minute.preset_buttons(presets, "start-here")
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
        gr.Markdown(
            "### Scores of the group's experts\n**Causal effect**: how much switching the expert off changes the "
            "next token where it fires most (mean KL in nats over its top contexts). **Coherence**: how alike its "
            "top contexts read (sentence embeddings), above chance."
        )
        boards = clickable(elem_id="score-boards")
        boards_status = status_line("score-boards-status")

    outputs = [density_map, most_active, least_active, group_status]
    group.change(lambda g: pages.overview_group(explorer, g), group, outputs, **ctx.index_events)
    ctx.blocks.load(
        lambda g: pages.overview_group(explorer, g) if g is not None else ("", "", "", ""),
        group,
        outputs,
        **ctx.index_events,
    )

    def show_boards(g):
        return pages.score_boards_view(explorer, g) if g is not None else ("", "")

    group.change(show_boards, group, [boards, boards_status], **ctx.index_events)
    ctx.blocks.load(show_boards, group, [boards, boards_status], **ctx.index_events)
    clickables = (intro, density_map, most_active, least_active, boards)
    return OverviewTab(group, clickables, start_here, cell_i, cell_j, open_cell, cell_status)
