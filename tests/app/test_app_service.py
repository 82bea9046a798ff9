"""The app's backend (explorer.service, explorer.pages) on a small index of the tiny VD checkpoint."""

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from explorer.app.explorer import AppSettings, Explorer
from explorer.app.generation import GenerationSettings
from explorer.app.tokens import RequestRejected
from explorer.web import pages


def busy_expert(loaded) -> str:
    return loaded.index.most_active(0, 1)["name"].iloc[0]


# -- loading and bad files ----------------------------------------------------------------------------------
def test_missing_model_and_index_are_problems_not_crashes(tmp_path):
    loaded = Explorer.load(AppSettings(str(tmp_path / "no-model"), str(tmp_path / "no.duckdb"), "cpu", "float32"))
    assert loaded.model is None and len(loaded.problems) == 2
    assert "MONET_MODEL" in loaded.problems[0] and "No expert index at" in loaded.problems[1]
    with pytest.raises(RequestRejected, match="No model is loaded"):
        loaded.inspect("hello")
    assert "No model" in pages.facts_html(loaded)
    from explorer.web import ui

    ui.build(loaded)  # the page still comes up


def test_no_index_configured_keeps_model_features(vd_tiny, limits):
    loaded = Explorer.load(AppSettings(str(vd_tiny.checkpoint), None, "cpu", "float32", limits))
    assert "No expert index configured" in loaded.problems[0]
    assert loaded.inspect("hello there").tokens
    with pytest.raises(RequestRejected, match="No expert index is loaded"):
        loaded.search("the")


def test_corrupt_index_is_reported(tmp_path, vd_tiny):
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a database" * 100)
    loaded = Explorer.load(AppSettings(str(vd_tiny.checkpoint), str(broken), "cpu", "float32"))
    assert loaded.index is None and "not a readable expert index" in loaded.problems[0]


def test_index_of_another_model_is_refused(app_index, tmp_path):
    from tests.conftest import Conformance

    loaded = Explorer.load(AppSettings(str(Conformance("monet-hd-tiny").checkpoint), str(app_index), "cpu", "float32"))
    assert loaded.index is None and "moe_decompose vertical (model: horizontal)" in loaded.problems[-1]
    changed = tmp_path / "changed.duckdb"
    changed.write_bytes(app_index.read_bytes())
    with duckdb.connect(str(changed)) as conn:
        conn.execute("UPDATE meta SET value = '32' WHERE key = 'moe_experts'")
    loaded = Explorer.load(AppSettings(str(Conformance("monet-vd-tiny").checkpoint), str(changed), "cpu", "float32"))
    assert loaded.index is None and "moe_experts 32 (model: 16)" in loaded.problems[-1]


# -- overview and expert pages -------------------------------------------------------------------------------
def test_facts_name_groups_and_layers(explorer):
    facts = explorer.facts()
    assert facts["groups"] == ["G1 = layers 0-1", "G2 = layers 2-3"]
    assert facts["index"]["domains"] == ["code", "german", "prose"]
    html = pages.facts_html(explorer)
    assert "Groups count from 1, layers from 0" in html and "experts ever active" in html
    assert len(explorer.experts_ever_active()) == 2


def test_overview_group_renders_map_and_rankings(explorer):
    density_map, most, least = pages.overview_group(explorer, 1)
    assert 'data-group="1"' in density_map and most.count("<tr data-expert=") == 15
    assert pages.density_chart(explorer).to_dict()["mark"]["type"] == "line"


def test_expert_page_has_every_part(explorer):
    name = busy_expert(explorer)
    page = explorer.expert_page(explorer.expert_ref(name))
    assert page.top and page.stats.active_count > 0 and list(page.layers) == [0, 1]
    assert set(page.domains["domain"]) == {"code", "german", "prose"}
    assert (page.same_row["i"] == page.ref.i).all() and (page.same_column["j"] == page.ref.j).all()
    as_json = page.to_json()
    json.dumps(as_json)
    assert as_json["expert"] == name and as_json["top_contexts"][0]["tokens"]
    view = pages.expert_view(explorer, page.ref.pair_label)  # the (i, j) form opens the same page
    assert view["name"] == name and name in view["header"]
    contexts = pd.read_csv(view["csv"])
    assert len(contexts) == len(page.top) + len(page.samples)
    assert json.loads(Path(view["json"]).read_text())["expert"] == name
    effects_html, similar_html = pages.expert_extras(explorer, name)
    assert "Promotes" in effects_html and "data-expert" in similar_html


@pytest.mark.parametrize(
    "spec, message",
    [
        ("G3/1", "G3 is outside"),
        ("G1/256", "outside the model"),
        ("hello", "not an expert"),
        ("", "Name an expert"),
        ("L1/5", "names a layer"),
    ],
)
def test_bad_expert_names_are_explained(explorer, spec, message):
    with pytest.raises(RequestRejected, match=message):
        explorer.expert_ref(spec)
    with pytest.raises(Exception, match=message) as caught:
        pages.expert_view(explorer, spec)
    assert type(caught.value).__name__ == "Error"  # a gr.Error: a message in the page, no stack trace


# -- search ------------------------------------------------------------------------------------------------
def test_search_by_id_in_every_form(explorer):
    assert [r["name"] for r in explorer.search("G2/17").rows] == ["G2/17"]
    assert [r["name"] for r in explorer.search("G2 (1, 1)").rows] == ["G2/17"]
    assert [r["name"] for r in explorer.search("17").rows] == ["G1/17", "G2/17"]
    assert [r["name"] for r in explorer.search("17", group=1).rows] == ["G2/17"]
    assert [r["name"] for r in explorer.search("(1, 1)", mode="id", group=0).rows] == ["G1/17"]
    with pytest.raises(RequestRejected, match="outside the model"):
        explorer.search("999")


def test_search_by_token_text_and_meaning(explorer):
    token = explorer.search("def", mode="token")
    assert token.mode == "token" and token.rows and "def' at" in token.rows[0]["evidence"]
    assert explorer.search("def").mode == "token"  # auto: a vocabulary token
    text = explorer.search("quick", mode="text")
    assert text.rows and all("density" in r and r["evidence"] for r in text.rows)
    assert len({r["name"] for r in text.rows}) == len(text.rows)
    auto = explorer.search("quick")  # not an id, not a token: text search answers
    assert auto.mode == "text"
    meaning = explorer.search("programming code", mode="meaning", limit=5)
    assert meaning.mode == "meaning" and len(meaning.rows) == 5
    assert all(r["label"] == explorer.index.stats(r["group"], r["expert"]).label for r in text.rows)


def test_a_capped_text_search_says_how_much_it_searched(explorer, monkeypatch):
    monkeypatch.setattr("explorer.index.reader.TEXT_SEARCH_DOCUMENTS", 1)
    monkeypatch.setattr("explorer.index.reader.TEXT_SEARCH_FIRST_BATCH", 1)
    result = explorer.search("e", mode="text", limit=100)  # "e" is in more than one document
    assert result.rows and "searched the 1 of" in result.message


@pytest.mark.parametrize("query", ["'; DROP TABLE experts; --", "%", "_", "\\", "' OR 1=1 --", "$group", "G1/1' OR '1"])
def test_injection_attempts_are_just_text(explorer, query):
    try:
        result = explorer.search(query, mode="text")
        assert isinstance(result.rows, list)
    except RequestRejected:
        pass
    assert explorer.index.stats(0, 17).active_count >= 0  # the index is intact


def test_search_refuses_empty_long_and_unknown(explorer):
    for query, mode, message in [
        ("", "auto", "Type something"),
        ("x" * 300, "auto", "limit is 200"),
        ("the", "sql", "Unknown search mode"),
        ("hello", "id", "not an expert id"),
    ]:
        with pytest.raises(RequestRejected, match=message):
            explorer.search(query, mode)
    status, table = pages.search_view(explorer, "zzzzqqq", "text", None)
    assert "No top context contains" in status and "No expert matches" in table


# -- inspector and live ablation ----------------------------------------------------------------------------
def test_inspector_pages(explorer):
    inspection, tokens_html, experts_html = pages.inspect_view(explorer, "The quick brown fox", 0.01)
    assert tokens_html.count("data-token=") == len(inspection.tokens)
    assert "G1 · layers 0-1" in experts_html and "data-expert=" in experts_html
    _, experts_0 = pages.token_view(explorer, inspection, 0)
    assert "Token 0" in experts_0
    with pytest.raises(Exception, match="Inspect a text first"):
        pages.token_view(explorer, None, 0)


@pytest.mark.parametrize("text, message", [("", "empty"), ("word " * 200, "limit is 64")])
def test_prompt_limits(explorer, text, message):
    with pytest.raises(RequestRejected, match=message):
        explorer.inspect(text)
    with pytest.raises(RequestRejected, match=message):
        list(explorer.generate(text, "", GenerationSettings(max_new_tokens=5)))


def test_generation_through_the_service(explorer):
    name = busy_expert(explorer)
    updates = list(explorer.generate("The quick brown", f"{name}, G2 (3, *)", GenerationSettings(max_new_tokens=8)))
    last = updates[-1]
    assert last.finished and last.effect is not None and len(last.effect_pieces) == len(last.effect.token_ids)
    assert 0 < last.effect.removed_mass_share < 1
    with pytest.raises(RequestRejected, match="1..24"):
        list(explorer.generate("The", "", GenerationSettings(max_new_tokens=100)))
    with pytest.raises(RequestRejected, match="not an expert"):
        list(explorer.generate("The", "G1/5, nonsense", GenerationSettings(max_new_tokens=2)))


def test_generate_view_streams_panels(explorer):
    outputs = list(pages.generate_view(explorer, "The quick", "G1/5", 4, 0.0, 0))
    assert len(outputs) == 5  # four steps, then the scored result
    baseline, ablated, effect = outputs[-1]
    assert "Plain model" in baseline and "Experts switched off" in ablated and "perplexity" in effect


def test_perplexity_with_and_without(explorer):
    text = "The quick brown fox jumps over the lazy dog."
    measured = explorer.measure_text(text, "G1 (0, *), G1 (1, *)")
    assert measured.effect.ablated_perplexity != measured.effect.baseline_perplexity
    assert len(measured.pieces) == len(measured.effect.token_ids)
    plain = explorer.measure_text(text, "")
    assert plain.effect.ablated_perplexity == pytest.approx(plain.effect.baseline_perplexity)
    assert "perplexity" in pages.measure_view(explorer, text, "G1/5")


def test_domain_and_text_ablation_helpers(explorer):
    domain = explorer.domains()[0]
    experts = explorer.domain_experts(domain)
    expected = explorer.index.experts_skewed_to_domain(domain)
    assert sorted(str(e) for e in experts) == sorted(expected["name"])
    if experts:
        assert explorer.resolve_ablation(f"domain:{domain}").experts == len(experts)
    with pytest.raises(RequestRejected, match="Unknown domain 'klingon'"):
        explorer.resolve_ablation("domain:klingon")
    firing = explorer.experts_on_text("The quick brown fox", n=5)
    assert len(firing) == 5 and all(name.startswith("G") for name in firing)
    text = pages.add_firing(explorer, "G1/1", "The quick brown fox", 3)
    assert text.startswith("G1/1, ") and len(text.split(", ")) >= 3
    assert pages.add_line(explorer, "", 1, "column", 4) == "G2 (*, 4)"


# -- app.py: configuration by arguments and environment -------------------------------------------------------
def test_app_is_configured_by_environment_and_survives_missing_assets(tmp_path, monkeypatch):
    import app

    monkeypatch.setenv("MONET_MODEL", str(tmp_path / "no-model"))
    monkeypatch.setenv("MONET_INDEX", str(tmp_path / "no-index.duckdb"))
    monkeypatch.setenv("MONET_MAX_NEW_TOKENS", "7")
    args = app.parse_args([])
    assert args.model == str(tmp_path / "no-model") and args.max_new_tokens == "7"
    assert app.parse_args(["--model", "x", "--index", "y.duckdb"]).index == "y.duckdb"
    demo, loaded = app.build_app(args)
    assert loaded.limits.max_new_tokens == 7 and len(loaded.problems) == 2
    assert demo.config["title"] == "Monet Explorer"


def test_the_embedded_default_needs_no_arguments(monkeypatch):
    import app
    from explorer.paths import EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR

    monkeypatch.delenv("MONET_MODEL", raising=False)
    monkeypatch.delenv("MONET_INDEX", raising=False)
    args = app.parse_args([])
    assert (args.model, args.index) == (str(EMBEDDED_MODEL_DIR), str(EMBEDDED_INDEX_PATH))
