"""Pure pieces of the app: HTML views (escaping, shading, links), charts, the ablation-set text, verdicts."""

import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from explorer.app import ablation_set
from explorer.app.tokens import RequestRejected
from explorer.index.reader import DomainMean, Example, HistogramBin
from explorer.model.naming import ModelShape
from explorer.web import charts, html
from explorer.web.pages import spec_from_event

SHAPE = ModelShape(num_layers=4, experts_per_side=16, layers_per_group=2)
EVIL = '<script>alert("x")</script>&"\''


def test_tokens_are_escaped_shaded_and_titled():
    out = html.tokens_html(["a", EVIL, "\n"], [0.5, 1.0, 0.0], focus=1)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert re.findall(r"--w:([0-9.]+)", out) == ["0.500", "1.000", "0.000"]
    assert 'title="weight 0.5000"' in out and "tok-focus" in out and html.NEWLINE in out


def test_clickable_tokens_carry_their_position():
    out = html.tokens_html(["x", "y"], [1, 2], clickable=True, selected=1)
    assert 'data-token="0"' in out and 'data-token="1"' in out and out.count("tok-selected") == 1


def test_delta_tokens_use_red_for_less_likely():
    out = html.delta_tokens_html(["a", "b"], [-1.0, 0.5], scale=2.0)
    assert "tok-down" in out and "tok-up" in out and "--w:0.500" in out and "Δ log p = -1.000" in out


def test_tables_link_every_row_to_its_expert():
    rows = [{"name": "G1/5", "label": EVIL, "density": 0.25}]
    out = html.table_html(rows, [("name", "expert", str), ("label", "label", str), ("density", "d", html.percent)])
    assert 'data-expert="G1/5"' in out and 'href="?expert=G1/5"' in out and "25.0%" in out
    assert "<script>" not in out
    newline_label = html.table_html([{"name": "G1/5", "label": "«\n\t» x"}], [("label", "label", str)])
    assert "«↵⇥» x" in newline_label  # a label's invisible characters are drawn
    assert "Nothing" in html.table_html([], [], "Nothing found.")


def test_density_map_is_a_png_with_marginals():
    density = np.zeros((16, 16))
    density[3, 4] = 0.5
    density[0, 0] = 0.01
    out = html.density_map_html(density, group=1)
    assert 'data-e="16"' in out and 'data-group="1"' in out and "data:image/png;base64," in out
    assert out.count("<rect") == 32 and "never active (254 of 256)" in out


def test_colours_put_never_active_experts_apart():
    rgb = html._colours(np.array([[0.0, 0.01], [0.1, 1.0]]))
    assert tuple(rgb[0, 0]) == (238, 240, 243)
    assert tuple(rgb[1, 1]) == (128, 0, 38) and tuple(rgb[0, 1]) == (255, 255, 204)


def test_experts_without_contexts_say_so():
    assert "No stored contexts" in html.context_rows_html([])


def test_panels_and_summary_escape_model_text():
    out = html.continuation_html("Plain", EVIL, EVIL, finished=False, kind="baseline")
    assert "<script>" not in out and "cursor" in out
    summary = html.effect_summary_html(10.0, 25.0, 0.0123, 40, "text")
    assert "×2.50" in summary and "1.23%" in summary


def test_charts_are_valid_vega_lite():
    densities = {"G1": np.array([0.0, 0.01, 0.2, 0.2]), "G2": np.array([0.5])}
    for chart in (
        charts.density_histogram(densities),
        charts.density_histogram({"G1": np.zeros(4)}),
        charts.weight_histogram([HistogramBin(0.01, 0.1, 3), HistogramBin(0.1, 1.0, 0)]),
        charts.domain_bars([DomainMean("a", 0.2, 5), DomainMean("b", 0.05, 6)], "a"),
    ):
        spec = chart.to_dict()
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite")


def test_ablation_items_split_outside_parentheses():
    assert ablation_set.split_items("G1/5, G2 (3, 4);L3/7\n domain:code ,") == [
        "G1/5",
        "G2 (3, 4)",
        "L3/7",
        "domain:code",
    ]
    assert ablation_set.add_items("G1/5", ["G1/5", "G2/1"]) == "G1/5, G2/1"


def test_ablation_rows_columns_and_layers_expand():
    resolved = ablation_set.resolve("G1 (3, *), L3 (*, 4), G2/17", SHAPE)
    triples = set(resolved.ablation.triples())
    assert {(0, 3, j) for j in range(16)} <= triples and {(1, 3, j) for j in range(16)} <= triples
    assert {(3, i, 4) for i in range(16)} <= triples and (2, 1, 1) in triples and (3, 1, 1) in triples
    assert resolved.experts == 16 + 16 + 1
    assert "33 experts" in resolved.summary()
    assert ablation_set.resolve("", SHAPE).ablation is None


def test_ablation_domains_come_from_the_lookup():
    from explorer.model.naming import ExpertRef

    resolved = ablation_set.resolve("domain:code", SHAPE, lambda name: [ExpertRef(1, 2, 3, 16)])
    assert resolved.ablation.triples() == [(2, 2, 3), (3, 2, 3)]
    with pytest.raises(RequestRejected, match="no expert is skewed"):
        ablation_set.resolve("domain:code", SHAPE, lambda name: [])
    with pytest.raises(RequestRejected, match="need an expert index"):
        ablation_set.resolve("domain:code", SHAPE, None)


@pytest.mark.parametrize(
    "text, message",
    [
        ("G9/1", "outside the model"),
        ("G1/999", "outside the model"),
        ("G1 (*, *)", "not the whole map"),
        ("G1 (99, *)", "outside the model"),
        ("L7 (1, *)", "layer 7"),
        ("Robert'); DROP TABLE experts;--", "not an expert"),
        ("G0/1", "outside the model"),
    ],
)
def test_bad_ablation_items_are_named(text, message):
    with pytest.raises(RequestRejected, match=re.escape(message)):
        ablation_set.resolve(text, SHAPE)


def test_ablation_size_is_bounded(monkeypatch):
    monkeypatch.setattr(ablation_set, "MAX_SWITCHED_OFF_PER_LAYER", 20)
    with pytest.raises(RequestRejected, match="limit is 20"):
        ablation_set.resolve("G1 (1, *), G1 (2, *)", SHAPE)


def test_clicks_name_experts():
    assert spec_from_event({"kind": "cell", "group": 1, "i": 3, "j": 4}) == "G2 (3, 4)"
    assert spec_from_event({"kind": "expert", "value": "G1/5"}) == "G1/5"


# -- readable experts (issue 10, item 4) ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "token, shown",
    [
        (" the", "␣the"),
        ("\n", "↵"),
        ("\n\t\t", "↵⇥⇥"),
        ("  ", "␣␣"),
        ("", "∅"),
        ("\x08\x1b", "⟨BS⟩⟨ESC⟩"),
        ("\r\n", "⟨CR⟩↵"),
        ("a\u200bb", "a⟨U+200B⟩b"),
        ("\u00a0", "⍽"),
        ("⟨e2⟩⟨80⟩", "⟨e2⟩⟨80⟩"),  # bytes of a partial character (Explorer.token_texts) pass through
    ],
)
def test_tokens_shown_alone_draw_whitespace_and_controls(token, shown):
    assert html.visible(token) == shown


def test_running_text_keeps_spaces_but_draws_the_rest():
    assert html.visible(" a b\n\x07", spaces=False) == " a b↵⟨BEL⟩"
    out = html.tokens_html([" x", "\x08", ""], [0.1, 0.2, 0.3])
    assert "⟨BS⟩" in out and "tok-partial" in out and "\x08" not in out


def test_chips_escape_and_draw_tokens():
    out = html.chip(" <b>", "12")
    assert "␣&lt;b&gt;" in out and "<b>" not in out and 'class="chip-value">12<' in out


def test_labels_beside_ids_are_escaped():
    assert html.expert_label("") == ""
    out = html.expert_label("«\n» <i>x</i>")
    assert "«↵» &lt;i&gt;x&lt;/i&gt;" in out and "<i>" not in out


@pytest.mark.parametrize(
    "share, shown",
    [
        (0.247, "24.7%"),
        (0.00306, "0.306%"),
        (2.54e-5, "0.00254%"),
        (1.0, "100%"),
        (0.5, "50.0%"),
        (0.0, "0%"),
        (1.2e-9, "0.000000120%"),
    ],
)
def test_densities_keep_three_significant_digits(share, shown):
    assert html.percent(share) == shown
    assert html.percent(share) != "0.000%"


def test_count_axes_have_whole_number_ticks():
    specs = [
        charts.density_histogram({"G1": np.array([0.01, 0.2])}).to_dict(),
        charts.weight_histogram([HistogramBin(0.01, 0.1, 3)]).to_dict(),
    ]
    for spec in specs:
        axis = spec["encoding"]["y"]["axis"]
        assert axis["tickMinStep"] == 1 and axis["format"] == "d"
    weights = specs[1]["encoding"]["x"]["axis"]["values"]  # log ticks at 1-2-5 steps, never crowded
    assert [w for w in weights if w >= 0.01] == pytest.approx([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])


def test_charts_name_the_vega_lite_gradio_draws_them_with():
    """gr.Plot renders with the Vega-Lite 5 it bundles: a v6 spec makes the browser console warn."""
    bundled = sorted(Path(gr.__file__).parent.glob("templates/frontend/assets/AltairPlot-*.js"))
    assert bundled, "Gradio's Altair plot bundle moved: check which Vega-Lite it ships"
    version = re.search(r"name:`vega-lite`,author:`[^`]*`,version:`(\d+)\.", bundled[0].read_text())
    assert version, "no Vega-Lite version found in Gradio's Altair bundle"
    spec = charts.domain_bars([DomainMean("a", 0.2, 5)], None).to_dict()
    assert spec["$schema"] == charts.VEGA_LITE_SCHEMA
    assert f"/vega-lite/v{version.group(1)}" in spec["$schema"]


# -- contexts that teach (issue 10, item 5) -------------------------------------------------------------------------
def _example(weight: float, rank: int = 0) -> Example:
    return Example(
        0,
        1,
        "top",
        rank,
        rank,
        5,
        weight,
        "prose",
        f"doc{rank}",
        [1, 2, 3],
        ["a", " b", "c"],
        [0.0, weight, 0.0],
        1,
        None,
    )


def test_ties_at_the_top_are_announced():
    assert html.ties_at_top([0.9, 0.5], kept=4) == ""
    assert html.ties_at_top([], kept=4) == ""
    some = html.ties_at_top([1.0, 1.0, 1.0, 0.4], kept=4)
    assert "3 contexts tie at the maximum weight 1.000" in some and "At least" not in some
    every = html.ties_at_top([1.0] * 4, kept=4)
    assert "At least 4 contexts tie" in every
    fewer_than_k = html.ties_at_top([0.7] * 3, kept=32)  # the expert fired only 3 times: that is all of them
    assert "3 contexts tie" in fewer_than_k and "At least" not in fewer_than_k


def test_all_contexts_are_reachable_behind_show_all():
    examples = [_example(1.0 - k / 100, k) for k in range(20)]
    out = html.context_rows_html(examples, shown=12)
    assert out.count('class="context"') == 20 and "<details" in out and "Show all 20 top contexts" in out
    assert out.index("<details") > out.index("doc11") and out.index("<details") < out.index("doc12")
    assert "<details" not in html.context_rows_html(examples[:12], shown=12)
    pieces = [["A", "␣B", "C"]] * 20
    assert "␣B" in html.context_rows_html(examples, pieces=pieces, shown=12)
