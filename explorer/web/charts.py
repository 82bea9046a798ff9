"""Altair charts for the app: expert density histogram, an expert's weight histogram and its per-domain means.

Charts get small, already aggregated frames (never one row per expert: a group has up to 262,144),
and large fonts so they stay legible on a projector. Counts get whole-number axes.

Gradio's gr.Plot draws altair charts with the Vega-Lite it bundles (5.23 in Gradio 6.31), while altair 6 writes
a Vega-Lite 6 spec, and the browser console warns about the mismatch. These charts use only what both versions
share, so each spec names the bundled major version (VEGA_LITE_SCHEMA); tests/web checks the console is quiet.
"""

from dataclasses import asdict

import altair as alt
import numpy as np
import polars as pl

from explorer.index.reader import DomainMean, HistogramBin

FONT_SIZE = 15
ACCENT = "#e8590c"
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # what Gradio's frontend bundles
COUNT_AXIS = alt.Axis(tickMinStep=1, format="d")
LOG_TICKS = [
    m * 10.0**e for e in range(-6, 1) for m in (1, 2, 5) if m * 10.0**e <= 1
]  # 1-2-5 steps up to 1  # a count of tokens or experts is a whole number
MUTED = "#9aa5b1"


def _styled(chart: alt.Chart) -> alt.Chart:
    styled = (
        chart.configure_axis(labelFontSize=FONT_SIZE - 2, titleFontSize=FONT_SIZE)
        .configure_legend(labelFontSize=FONT_SIZE - 2, titleFontSize=FONT_SIZE)
        .configure_title(fontSize=FONT_SIZE + 1, anchor="start")
        .configure_view(strokeWidth=0)
    )
    styled["$schema"] = VEGA_LITE_SCHEMA
    return styled


def density_histogram(densities: dict[str, np.ndarray], bins: int = 30) -> alt.Chart:
    """How many experts fire how often: one step line per routing group, log-spaced density bins.

    densities: group name -> densities of its active experts (never-active ones have no density to bin).
    """
    values = np.concatenate([d[d > 0] for d in densities.values()] or [np.zeros(0)])
    if values.size == 0:
        return _styled(alt.Chart(pl.DataFrame({"x": []})).mark_text().properties(title="No active experts"))
    edges = np.logspace(np.log10(values.min()), np.log10(values.max()) + 1e-9, bins + 1)
    frame = pl.concat(
        [
            pl.DataFrame({"group": name, "density": edges[:-1], "experts": np.histogram(d[d > 0], edges)[0]})
            for name, d in densities.items()
        ]
    )
    chart = (
        alt.Chart(frame)
        .mark_line(interpolate="step-after", strokeWidth=2.5)
        .encode(
            x=alt.X(
                "density:Q",
                scale=alt.Scale(type="log"),
                title="density (share of tokens where the expert is active)",
                axis=alt.Axis(format="~%", labelOverlap="greedy"),
            ),
            y=alt.Y("experts:Q", title="experts", axis=COUNT_AXIS),
            color=alt.Color("group:N", title="group", sort=list(densities)),
            tooltip=["group", alt.Tooltip("density:Q", format=".3~%"), "experts"],
        )
        .properties(width=900, height=260, title="Experts by density")
    )
    return _styled(chart)


def weight_histogram(histogram: list[HistogramBin]) -> alt.Chart:
    """An expert's active weights in log bins (explorer.index.reader.ExpertIndex.histogram)."""
    filled = [k for k, b in enumerate(histogram) if b.count > 0]
    if filled:  # the bins from the lightest to the heaviest weight seen
        histogram = histogram[filled[0] : filled[-1] + 1]
    frame = pl.DataFrame(
        [asdict(b) for b in histogram], schema={"low": pl.Float64, "high": pl.Float64, "count": pl.Int64}
    )
    chart = (
        alt.Chart(frame)
        .mark_rect(color=ACCENT)
        .encode(
            x=alt.X(
                "low:Q",
                scale=alt.Scale(type="log", nice=False),
                title="weight (log scale)",
                axis=alt.Axis(values=LOG_TICKS, format="~g"),  # Vega's own log ticks crowd into "0.030.04"
            ),
            x2="high:Q",
            y=alt.Y("count:Q", title="tokens", axis=COUNT_AXIS),
            y2=alt.datum(0),
            tooltip=[alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f"), "count:Q"],
        )
        .properties(width=440, height=220, title="Weight where active")
    )
    return _styled(chart)


def domain_bars(domain_means: list[DomainMean], specialised_in: str | None) -> alt.Chart:
    """Mean weight per domain; the specialised domain, if any, in the accent colour."""
    frame = pl.DataFrame(
        [{**asdict(d), "colour": ACCENT if d.domain == specialised_in else MUTED} for d in domain_means],
        schema={"domain": pl.String, "mean_weight": pl.Float64, "n_tokens": pl.Int64, "colour": pl.String},
    )
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("domain:N", sort="-x", title=None),
            x=alt.X("mean_weight:Q", title="mean weight over the domain's tokens", axis=alt.Axis(format="~g")),
            color=alt.Color("colour:N", scale=None),  # the colour itself (alt.condition is slow to build)
            tooltip=["domain", alt.Tooltip("mean_weight:Q", format=".2e"), "n_tokens:Q"],
        )
        .properties(width=440, height=max(80, 34 * len(frame)), title="Mean weight per domain")
    )
    return _styled(chart)
