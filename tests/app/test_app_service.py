"""The app's backend (explorer.app, and the explorer.web.pages that render it) on a small index of the tiny VD
checkpoint."""

import html
import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from explorer.app.domains import expert_verdict
from explorer.app.explorer import AppSettings, Explorer
from explorer.app.generation import GenerationSettings
from explorer.app.tokens import RequestRejected
from explorer.index.domains import MIN_ACTIVE_TOKENS, specialisation, specialised_experts
from explorer.index.reader import ExpertIndex
from explorer.web import api, pages


def busy_expert(loaded) -> str:
    return loaded.index.most_active(0, 1)[0].name


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
    assert [(g.group, g.layers) for g in facts.model.groups] == [(0, range(0, 2)), (1, range(2, 4))]
    for g in facts.model.groups:
        assert g.experts_ever_active == int((explorer.index.group_density_map(g.group) > 0).sum()) > 0
    assert facts.index.domains == ["code", "german", "prose"] and facts.model.experts_per_layer == 256
    html = pages.facts_html(explorer)
    assert "Groups count from 1, layers from 0" in html
    active = facts.model.groups[1].experts_ever_active
    assert f"<b>G2</b> = layers 2-3 · {active} experts ever active ({active / 256:.1%})" in html


def test_overview_group_renders_map_and_rankings(explorer):
    density_map, most, least, _ = pages.overview_group(explorer, 1)
    assert 'data-group="1"' in density_map and most.count("<tr data-expert=") == 15
    assert pages.density_chart(explorer).to_dict()["mark"]["type"] == "line"


def test_expert_page_has_every_part(explorer):
    name = busy_expert(explorer)
    page = explorer.expert_page(explorer.expert_ref(name))
    assert page.top and page.stats.active_count > 0 and list(page.layers) == [0, 1]
    assert {d.domain for d in page.domains} == {"code", "german", "prose"}
    assert page.same_row and all(s.i == page.ref.i and s.expert != page.ref.flat for s in page.same_row)
    assert page.same_column and all(s.j == page.ref.j and s.expert != page.ref.flat for s in page.same_column)
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
    view = pages.expert_view(explorer, spec)  # the page says why in its status line, no stack trace
    assert message in view["status"] and "notice-error" in view["status"] and view["name"] == ""


# -- search ------------------------------------------------------------------------------------------------
def test_search_by_id_in_every_form(explorer):
    assert [r.name for r in explorer.search("G2/17").rows] == ["G2/17"]
    assert [r.name for r in explorer.search("G2 (1, 1)").rows] == ["G2/17"]
    assert [r.name for r in explorer.search("17").rows] == ["G1/17", "G2/17"]
    assert [r.name for r in explorer.search("17", group=1).rows] == ["G2/17"]
    assert [r.name for r in explorer.search("(1, 1)", mode="id", group=0).rows] == ["G1/17"]
    with pytest.raises(RequestRejected, match="outside the model"):
        explorer.search("999")
    assert [(r.group, r.expert) for r in explorer.search("G2/17").rows] == [(1, 17)]  # 0-based inside
    answer = api.endpoints(explorer)["search"]("G2/17", "id", 2)  # the API counts groups from 1, as names do
    assert [(r["name"], r["group"], r["expert"]) for r in answer["results"]] == [("G2/17", 2, 17)]


def test_search_by_token_text_and_meaning(explorer):
    token = explorer.search("def", mode="token")
    assert token.mode == "token" and token.rows and "def' at" in token.rows[0].evidence
    assert explorer.search("def").mode == "token"  # auto: a vocabulary token
    text = explorer.search("quick", mode="text")
    assert text.rows and all(r.density > 0 and "quick" in r.evidence.lower() for r in text.rows)
    assert all(r.density == explorer.index.stats(r.group, r.expert).density for r in text.rows)
    assert len({r.name for r in text.rows}) == len(text.rows)
    auto = explorer.search("quick")  # not an id, not a token: text search answers
    assert auto.mode == "text"
    meaning = explorer.search("programming code", mode="meaning", limit=5)
    assert meaning.mode == "meaning" and len(meaning.rows) == 5
    assert all(r.label == explorer.index.stats(r.group, r.expert).label for r in text.rows + meaning.rows)


def test_a_capped_text_search_says_how_much_it_searched(explorer, monkeypatch):
    monkeypatch.setattr("explorer.index.text_search.TEXT_SEARCH_DOCUMENTS", 1)
    monkeypatch.setattr("explorer.index.text_search.TEXT_SEARCH_FIRST_BATCH", 1)
    result = explorer.search("e", mode="text", limit=100)  # "e" is in more than one document
    assert result.rows and "searched the 1 of" in result.message


@pytest.mark.parametrize("query", ["'; DROP TABLE experts; --", "%", "_", "\\", "' OR 1=1 --", "$group", "G1/1' OR '1"])
def test_injection_attempts_are_just_text(explorer, query):
    """Each query is searched as literal text: every context found holds it, and the index is unchanged."""
    tables = "SELECT (SELECT count(*) FROM experts), (SELECT count(*) FROM examples), (SELECT count(*) FROM tokens)"
    before = explorer.index.rows(tables)
    result = explorer.search(query, mode="text", limit=100)
    assert result.mode == "text"
    assert all(query.lower() in row.evidence.split(" · ", 1)[1].lower() for row in result.rows)
    if query in ("%", "_"):  # a LIKE wildcard would match every context; as text only the few holding it
        assert len(result.rows) < len(explorer.search("e", mode="text", limit=100).rows)
    assert explorer.index.rows(tables) == before and before[0][0] > 0


def test_search_refuses_empty_long_and_unknown(explorer):
    for query, mode, message in [
        ("", "auto", "Type something"),
        ("x" * 300, "auto", "limit is 200"),
        ("the", "sql", "Unknown search mode"),
        ("hello", "id", "not an expert id"),
    ]:
        with pytest.raises(RequestRejected, match=message):
            explorer.search(query, mode)
    table, status = pages.search_view(explorer, "zzzzqqq", "text", None)
    assert "No top context contains" in status and "No expert matches" in table


# -- inspector and live ablation ----------------------------------------------------------------------------
def test_inspector_pages(explorer):
    inspection, tokens_html, experts_html, _ = pages.inspect_view(explorer, "The quick brown fox", 0.01)
    assert tokens_html.count("data-token=") == len(inspection.tokens)
    assert "G1 · layers 0-1" in experts_html and "data-expert=" in experts_html
    _, experts_0, _ = pages.token_view(explorer, inspection, 0)
    assert "Token 0" in experts_0
    assert "Inspect a text first" in pages.token_view(explorer, None, 0)[-1]


@pytest.mark.parametrize("text, message", [("", "empty"), ("word " * 200, "limit is 64")])
def test_prompt_limits(explorer, text, message):
    with pytest.raises(RequestRejected, match=message):
        explorer.inspect(text)
    with pytest.raises(RequestRejected, match=message):
        list(explorer.generate(text, "", GenerationSettings(max_new_tokens=5)))


def test_generation_through_the_service(explorer):
    name, settings = busy_expert(explorer), GenerationSettings(max_new_tokens=8)
    *steps, last = explorer.generate("The quick brown", f"{name}, G2 (3, *)", settings)
    new_ids = last.effect.token_ids
    assert last.finished and not any(step.finished for step in steps) and len(new_ids) == 8 == len(steps)
    assert last.baseline_text.strip() and last.baseline_text == explorer.decode(new_ids)
    assert [step.baseline_text for step in steps] == [explorer.decode(new_ids[:k]) for k in range(1, 9)]  # streamed
    # the pieces join to the text, except that bytes making no whole character show as ⟨xx⟩, never as U+FFFD
    whole_characters = re.sub("\u27e8[0-9a-f]{2}\u27e9", "", "".join(last.effect_pieces))
    assert whole_characters == last.baseline_text.replace("\ufffd", "")
    assert len(last.effect_pieces) == 8 and "\ufffd" not in "".join(last.effect_pieces)
    assert 0 < last.effect.removed_mass_share < 1 and any(abs(d) > 1e-4 for d in last.effect.deltas)
    *_, plain = explorer.generate("The quick brown", "", settings)  # same seed: the plain side is the plain model
    assert plain.baseline_text == plain.ablated_text == last.baseline_text
    assert plain.effect.removed_mass_share == 0 and plain.effect.deltas == pytest.approx([0.0] * 8)
    with pytest.raises(RequestRejected, match="1..24"):
        list(explorer.generate("The", "", GenerationSettings(max_new_tokens=100)))
    with pytest.raises(RequestRejected, match="not an expert"):
        list(explorer.generate("The", "G1/5, nonsense", GenerationSettings(max_new_tokens=2)))


def test_generate_view_streams_panels(explorer):
    ablate = "G1 (0, *), G1 (1, *)"
    outputs = list(pages.generate_view(explorer, "The quick", ablate, 4, 0.0, 0))
    *_, final = explorer.generate("The quick", ablate, GenerationSettings(max_new_tokens=4))
    assert final.baseline_text != final.ablated_text  # these experts change what the model writes
    assert len(outputs) == 5  # four steps, then the scored result
    assert 'class="cursor"' in outputs[0][0] and 'class="cursor"' not in outputs[-1][0]
    baseline, ablated, effect, _, _ = outputs[-1]
    assert "Plain model" in baseline and f'"continuation">{html.escape(final.baseline_text)}<' in baseline
    assert "Experts switched off" in ablated and f'"continuation">{html.escape(final.ablated_text)}<' in ablated
    e = final.effect
    assert f"{e.baseline_perplexity:,.2f}" in effect and f"{e.ablated_perplexity:,.2f}" in effect


def test_perplexity_with_and_without(explorer):
    text = "The quick brown fox jumps over the lazy dog."
    measured = explorer.measure_text(text, "G1 (0, *), G1 (1, *)")
    assert measured.effect.ablated_perplexity != measured.effect.baseline_perplexity
    assert len(measured.pieces) == len(measured.effect.token_ids)
    plain = explorer.measure_text(text, "")
    assert plain.effect.ablated_perplexity == pytest.approx(plain.effect.baseline_perplexity)
    assert "perplexity" in pages.measure_view(explorer, text, "G1/5")[0]


def test_domain_and_text_ablation_helpers(explorer):
    counts = {}
    for domain in explorer.domains():
        experts = explorer.domain_experts(domain)
        counts[domain] = len(experts)
        assert sorted(str(e) for e in experts) == sorted(s.name for s in specialised_experts(explorer.index, domain))
        if experts:
            assert explorer.resolve_ablation(f"domain:{domain}").experts == len(experts)
    assert all(counts.values())  # every domain of the tiny corpus has experts of its own
    with pytest.raises(RequestRejected, match="Unknown domain 'klingon'"):
        explorer.resolve_ablation("domain:klingon")
    firing = explorer.experts_on_text("The quick brown fox", n=5)
    assert len(firing) == 5 and all(name.startswith("G") for name in firing)
    text, _ = pages.add_firing(explorer, "G1/1", "The quick brown fox", 3)
    assert text.startswith("G1/1, ") and len(text.split(", ")) >= 3
    assert pages.add_line(explorer, "", 1, "column", 4)[0] == "G2 (*, 4)"


def test_expert_verdicts_word_the_index_rule(explorer):
    """The page's verdict is the index's rule (explorer.index.domains) in words; never an infinite ratio."""
    kinds = set()
    for group in range(2):
        for stats in explorer.index.most_active(group, 256):
            found = specialisation(explorer.index, group, stats.expert)
            verdict = expert_verdict(explorer.index, group, stats.expert)
            assert "∞" not in verdict.text and "inf" not in verdict.text
            if found.specialised:
                kind = "specialised"
                assert verdict.specialised_in == found.top_domain
                assert verdict.text.startswith(f"Specialised in {found.top_domain}: ")
                assert (found.next_domain is None) == (f"active on {found.top_domain} only" in verdict.text)
            elif stats.active_count < MIN_ACTIVE_TOKENS:
                kind = "too rare"
                assert verdict.specialised_in is None and f"active on {stats.active_count} tokens only" in verdict.text
            else:
                kind = "plain"
                assert verdict.specialised_in is None and verdict.text.startswith("Not specialised: ")
                assert f"by {found.ratio:.1f}× only" in verdict.text and found.ratio < 2
            kinds.add(kind)
    assert kinds == {"specialised", "too rare", "plain"}
    name = busy_expert(explorer)
    ref = explorer.expert_ref(name)
    as_json = explorer.expert_page(ref).to_json()
    assert as_json["domain_verdict"] == expert_verdict(explorer.index, ref.group, ref.flat).text


def test_one_domain_gives_no_verdict_and_no_domain_experts(explorer, app_index, tmp_path):
    single = tmp_path / "one-domain.duckdb"
    single.write_bytes(app_index.read_bytes())
    with duckdb.connect(str(single)) as conn:
        conn.execute("DELETE FROM domains WHERE domain <> 'code'")
    loaded = Explorer(explorer.model, explorer.tokenizer, ExpertIndex(single), "tiny", [])
    name = busy_expert(loaded)
    ref = loaded.expert_ref(name)
    assert loaded.expert_page(ref).verdict.text == "The index has fewer than two domains: no domain comparison."
    assert loaded.domain_experts("code") == [] and specialised_experts(loaded.index) == []
    with pytest.raises(RequestRejected, match="no expert is skewed toward domain 'code'"):
        loaded.resolve_ablation("domain:code")


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
