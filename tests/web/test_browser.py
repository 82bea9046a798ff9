"""Browser journeys through the served app: Playwright driving Debian's chromium (never a downloaded browser).

    search -> expert page -> switch off -> generate -> the difference; deep links; the inspector's
    click-through; a click on the E x E map. Screenshots go to test-artifacts/screenshots/.
Every page load is also checked for requests leaving localhost (a Space must fetch nothing at runtime).
"""

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TIMEOUT = 30_000  # ms: generation on 2 shared CPU cores


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)  # assertions too: their own default, 5 s, is short on busy shared cores
    outside = []
    local = app_url.rstrip("/").rsplit(":", 1)[0]
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((local, "data:", "blob:")) else None)
    yield page
    context.close()
    assert outside == [], f"the page fetched from outside localhost: {outside}"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_search_open_switch_off_generate(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    open_tab(page, "Search")
    page.locator("#search-query textarea").fill("quick")
    page.locator("#search-button").click()
    first_row = page.locator("#search-results tbody tr").first
    expect(first_row).to_be_visible()
    name = first_row.get_attribute("data-expert")
    shot(page, "1-search")
    first_row.locator("td").nth(1).click()  # the row, not only its link, opens the expert

    expect(page.locator("#expert-header .expert-name")).to_have_text(name)
    expect(page.locator("#expert-contexts .context").first).to_be_visible()
    expect(page).to_have_url(re.compile(rf"\?expert={re.escape(name)}"))
    shot(page, "2-expert")

    page.locator("#switch-off").click()  # moves to the Switch-off tab with the expert in the set
    expect(page.get_by_role("tab", name="Switch off")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#ablation-set textarea")).to_have_value(name)
    expect(page.locator("#ablation-summary .named-experts")).to_contain_text(name)  # with its label beside it
    page.locator("#ablation-set textarea").fill(f"{name}, G1 (3, *)")
    expect(page.locator("#ablation-summary")).to_contain_text("17 experts switched off")
    page.locator("#prompt textarea").fill("The quick brown fox")
    page.locator("#generate").click()
    expect(page.locator("#effect .effect-summary")).to_be_visible()
    baseline = page.locator("#baseline .continuation").inner_text()
    ablated = page.locator("#ablated .continuation").inner_text()
    assert baseline and ablated and baseline != ablated
    expect(page.locator("#effect .tok").first).to_be_visible()
    expect(page).to_have_url(re.compile(r"ablate="))
    shot(page, "3-generate")


def test_deep_links_open_the_right_page(page, app_url):
    from playwright.sync_api import expect

    page.goto(f"{app_url}?expert=G2/17")
    expect(page.locator("#expert-header .expert-name")).to_have_text("G2/17")
    expect(page.locator("#expert-header .expert-pair")).to_have_text("G2 (1, 1)")
    shot(page, "4-deep-link-expert")

    page.goto(f"{app_url}?ablate=G1/5,G2%20(3,%20*)&prompt=It%20was%20the")
    expect(page.locator("#ablation-set textarea")).to_have_value("G1/5,G2 (3, *)")
    expect(page.locator("#prompt textarea")).to_have_value("It was the")
    expect(page.locator("#ablation-summary")).to_contain_text("17 experts switched off")
    expect(page.get_by_role("tab", name="Switch off")).to_have_attribute("aria-selected", "true")

    page.goto(f"{app_url}?expert=G9/1")  # a bad link says why, beside the expert box; the app keeps serving
    expect(page.locator("#expert-status")).to_contain_text("outside the model")
    expect(page.locator("#expert-spec textarea")).to_have_value("G9/1")


def test_inspector_click_through(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    open_tab(page, "Inspector")
    page.locator("#inspect-text textarea").fill("The quick brown fox jumps")
    page.locator("#inspect-button").click()
    tokens = page.locator("#inspect-tokens [data-token]")
    expect(tokens.first).to_be_visible()
    tokens.nth(2).click()
    expect(page.locator("#token-experts .token-title")).to_contain_text("Token 2")
    shot(page, "5-inspector")
    link = page.locator("#token-experts .expert-link").first
    name = link.inner_text()
    link.click()
    expect(page.locator("#expert-header .expert-name")).to_have_text(name)


def test_clicking_the_map_opens_that_cell(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    density_map = page.locator("#density-map img.expert-map")
    expect(density_map).to_be_visible()
    box = density_map.bounding_box()
    cell = box["width"] / 16
    density_map.hover(position={"x": 4.5 * cell, "y": 3.5 * cell})
    expect(page.locator("#density-map .map-readout")).to_contain_text("G1 (3, 4) = G1/52")
    shot(page, "0-overview")
    density_map.click(position={"x": 4.5 * cell, "y": 3.5 * cell})
    expect(page.locator("#expert-header .expert-name")).to_have_text("G1/52")


# -- markup typed anywhere stays text (issue 10: safe by construction) --------------------------------------------
# (60 tokens of the tiny model: it fits the tests' prompt limit of 64)
MARKUP = "<img src=x onerror=__pwned=1><b id=pwn>x</b><form><input type=password></form>"
HINT = "write G<group>/<id>"  # the app's own hint, once cut to "write G" by the toast's HTML


@pytest.fixture
def watched(page):
    """The page, with every URL it requested: a live <img src=x> would ask the app for /x."""
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    yield page
    assert not [url for url in requested if url.rstrip("/").endswith("/x")], "an <img> from user input loaded"


def assert_inert(page) -> None:
    """No element of MARKUP reached the DOM, its script never ran, no toast and no error overlay appeared."""
    from playwright.sync_api import expect

    expect(page.locator("#pwn")).to_have_count(0)
    expect(page.locator("input[type=password]")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None
    expect(page.locator(".toast-body")).to_have_count(0)
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)  # Gradio's overlay on outputs of a raising handler


def test_markup_in_every_search_mode_is_shown_as_text(watched, app_url):
    from playwright.sync_api import expect

    page = watched
    page.goto(app_url)
    open_tab(page, "Search")
    for mode in ("auto", "id", "token", "text", "meaning"):
        page.locator("#search-mode").get_by_role("radio", name=mode, exact=True).check()
        page.locator("#search-query textarea").fill(MARKUP)
        page.locator("#search-button").click()
        expect(page.locator("#search-status")).to_contain_text(MARKUP)
        expect(page.locator("#search-status")).to_contain_text("not an" if mode == "id" else "searched by")
        assert_inert(page)
    expect(page.locator("#search-query textarea")).to_have_value(MARKUP)  # the input is never covered or lost
    shot(page, "6-markup-search")


def test_markup_in_the_expert_box_and_its_link_is_shown_as_text(watched, app_url):
    from urllib.parse import quote

    from playwright.sync_api import expect

    page = watched
    page.goto(f"{app_url}?expert={quote(MARKUP)}")
    status = page.locator("#expert-status")
    expect(status).to_contain_text(MARKUP)
    expect(status).to_contain_text(HINT)
    expect(page.locator("#expert-spec textarea")).to_have_value(MARKUP)
    assert_inert(page)
    shot(page, "7-markup-expert-link")

    page.locator("#expert-spec textarea").fill("G1/17")
    page.locator("#expert-spec textarea").press("Enter")
    expect(page.locator("#expert-header .expert-name")).to_have_text("G1/17")
    expect(status).to_be_hidden()  # a success clears the message

    page.locator("#expert-spec textarea").fill(MARKUP)
    page.locator("#expert-spec textarea").press("Enter")
    expect(status).to_contain_text(MARKUP)
    expect(page.locator("#expert-header .expert-name")).to_have_count(0)  # the previous page is gone, not stale
    page.locator("#switch-off").click()  # switching off a bad name says why in the same place
    expect(status).to_contain_text(HINT)
    assert_inert(page)


def test_markup_in_the_inspector_is_shown_as_text(watched, app_url):
    from playwright.sync_api import expect

    page = watched
    page.goto(app_url)
    open_tab(page, "Inspector")
    page.locator("#inspect-text textarea").fill(MARKUP)
    page.locator("#inspect-button").click()
    expect(page.locator("#inspect-tokens")).to_contain_text(MARKUP)
    page.locator("#inspect-tokens [data-token]").nth(3).click()
    expect(page.locator("#token-experts .token-title")).to_contain_text("Token 3")
    assert_inert(page)
    shot(page, "8-markup-inspector")
    page.locator("#firing-off").click()  # its experts go into the set, the page moves there
    expect(page.get_by_role("tab", name="Switch off")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#ablation-summary")).to_contain_text("20 experts switched off")
    assert_inert(page)


def test_markup_in_the_switch_off_inputs_and_links_is_shown_as_text(watched, app_url):
    from urllib.parse import quote

    from playwright.sync_api import expect

    page = watched
    page.goto(f"{app_url}?ablate={quote(MARKUP)}&prompt={quote(MARKUP)}")
    expect(page.locator("#ablation-set textarea")).to_have_value(MARKUP)
    expect(page.locator("#prompt textarea")).to_have_value(MARKUP)
    expect(page.locator("#ablation-summary")).to_contain_text(MARKUP)
    expect(page.locator("#ablation-summary")).to_contain_text(HINT)
    assert_inert(page)

    page.locator("#generate").click()  # the bad set: the message goes beside the prompt, the panels stay empty
    expect(page.locator("#generate-status")).to_contain_text(MARKUP)
    expect(page.locator("#baseline .panel")).to_have_count(0)
    page.locator("#ablation-set textarea").fill("G1 (3, *)")
    page.locator("#generate").click()
    expect(page.locator("#effect .effect-summary")).to_be_visible()
    expect(page.locator("#baseline .prompt-text")).to_have_text(MARKUP)
    expect(page.locator("#ablated .prompt-text")).to_have_text(MARKUP)

    page.locator("#measure-text textarea").fill(MARKUP)
    page.locator("#measure").click()
    expect(page.locator("#measured .effect-summary")).to_be_visible()
    expect(page.locator("#measured")).to_contain_text(MARKUP[1:])  # scored from the second token on

    page.get_by_text("Add to the set", exact=False).click()
    page.locator("#pasted-text textarea").fill(MARKUP)
    page.locator("#add-pasted").click()
    expect(page.locator("#add-status")).to_contain_text("Added the 20 experts firing most on the text")
    assert_inert(page)
    shot(page, "9-markup-switch-off")


# -- errors where the eye is, stale results, Stop (issue 10) -------------------------------------------------------
def test_errors_sit_beside_their_control_and_never_cover_it(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    page.get_by_text("Open a cell by number").click()
    page.get_by_label("row i").fill("99")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#cell-status")).to_contain_text("99 is outside the model")
    expect(page.get_by_role("tab", name="Overview")).to_have_attribute("aria-selected", "true")  # stays put

    open_tab(page, "Search")
    page.locator("#search-query textarea").fill("quick")
    page.locator("#search-button").click()
    expect(page.locator("#search-results tbody tr").first).to_be_visible()
    page.locator("#search-query textarea").fill("")
    page.locator("#search-button").click()
    expect(page.locator("#search-status")).to_contain_text("Type something to search for")
    expect(page.locator("#search-results tbody tr")).to_have_count(0)  # no stale results under the error
    expect(page.locator("#search-query textarea")).to_be_editable()
    assert_inert(page)
    shot(page, "10-search-error")


def test_stale_results_are_marked_and_stop_leaves_a_stopped_state(page, app_url, explorer, monkeypatch):
    from playwright.sync_api import expect

    page.goto(app_url)
    open_tab(page, "Switch off")
    page.locator("#ablation-set textarea").fill("G1 (3, *)")
    page.locator("#prompt textarea").fill("The quick brown fox")
    page.locator("#generate").click()
    expect(page.locator("#effect .effect-summary")).to_be_visible()
    expect(page.locator("#generate-status")).to_contain_text("Done")
    page.locator("#prompt textarea").press_sequentially(" jumps")
    expect(page.locator("#generate-status")).to_contain_text("changed since the texts below")
    expect(page.locator("#baseline")).to_have_css("opacity", "0.45")
    shot(page, "11-stale")

    generate = explorer.generate

    def slowly(*args, **kwargs):  # the tiny model writes 24 tokens faster than a click: give Stop time
        for update in generate(*args, **kwargs):
            time.sleep(0.4)
            yield update

    monkeypatch.setattr(explorer, "generate", slowly)
    page.locator("#generate").click()
    expect(page.locator("#generate-status")).to_contain_text("Generating")
    expect(page.locator("#baseline .cursor")).to_be_visible()
    expect(page.locator("#baseline")).to_have_css("opacity", "1")
    page.locator("#stop").click()
    expect(page.locator("#generate-status")).to_contain_text("Stopped")
    page.wait_for_timeout(1500)  # no late update overwrites the stopped state
    expect(page.locator("#generate-status")).to_contain_text("Stopped")
    expect(page.locator("#baseline .cursor")).to_have_count(0)
    expect(page.locator("#effect .effect-summary")).to_have_count(0)
    assert page.locator("#baseline .continuation").inner_text()  # what it wrote before Stop stays
    shot(page, "12-stopped")


# -- navigation (issue 10, item 6) -----------------------------------------------------------------------------------
def test_an_ablation_link_runs_on_load(page, app_url):
    from playwright.sync_api import expect

    page.goto(f"{app_url}?ablate=G1%20(3,%20*)&prompt=The%20quick%20brown%20fox")
    expect(page.get_by_role("tab", name="Switch off")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#effect .effect-summary")).to_be_visible()  # nobody pressed Generate
    expect(page.locator("#generate-status")).to_contain_text("Done")
    assert page.locator("#baseline .continuation").inner_text() and page.locator("#ablated .continuation").inner_text()
    expect(page.locator("#baseline .prompt-text")).to_have_text("The quick brown fox")
    shot(page, "13-ablation-link")


def header_top(page) -> float:
    return page.evaluate("document.getElementById('expert-header').getBoundingClientRect().top")


def test_back_returns_to_the_previous_expert_and_opening_scrolls_to_it(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    open_tab(page, "Search")
    page.locator("#search-query textarea").fill("quick")
    page.locator("#search-button").click()
    first_row = page.locator("#search-results tbody tr").first
    first = first_row.get_attribute("data-expert")
    first_row.click()
    expect(page.locator("#expert-header .expert-name")).to_have_text(first)
    expect(page).to_have_url(re.compile(rf"\?expert={re.escape(first)}$"))

    sibling = page.locator("#expert-siblings tbody tr").last  # far down the page
    second = sibling.get_attribute("data-expert")
    sibling.scroll_into_view_if_needed()
    sibling.click()
    expect(page.locator("#expert-header .expert-name")).to_have_text(second)
    expect(page).to_have_url(re.compile(rf"\?expert={re.escape(second)}$"))
    page.wait_for_timeout(300)
    assert -2 <= header_top(page) < 120, "opening an expert brings its header to the top"

    page.go_back()
    expect(page.locator("#expert-header .expert-name")).to_have_text(first)
    expect(page).to_have_url(re.compile(rf"\?expert={re.escape(first)}$"))
    page.go_back()  # before the first expert: the Search tab it came from
    expect(page.get_by_role("tab", name="Search")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#search-results tbody tr").first).to_be_visible()
    page.go_forward()
    expect(page.locator("#expert-header .expert-name")).to_have_text(first)
    expect(page.get_by_role("tab", name="Expert")).to_have_attribute("aria-selected", "true")
    assert app_url.rstrip("/") in page.url  # Back never left the app


def test_a_deep_link_adds_no_history_entry(page, app_url):
    from playwright.sync_api import expect

    page.goto(f"{app_url}?expert=G1%20(1,%201)")  # the (i, j) form: the address becomes the expert's name
    expect(page.locator("#expert-header .expert-name")).to_have_text("G1/17")
    expect(page).to_have_url(re.compile(r"\?expert=G1/17$"))
    page.go_back()  # the link was one entry: Back leaves the app
    expect(page).to_have_url("about:blank")


# -- readable experts, contexts that teach (issue 10, items 4 and 5) --------------------------------------------------
def test_expert_page_ties_show_all_test_on_text_and_a_quiet_console(page, app_url, explorer, monkeypatch):
    from playwright.sync_api import expect

    from explorer.web import pages

    group, expert = explorer.index.rows(
        """SELECT grp, expert FROM examples e WHERE kind = 'top' AND weight = (SELECT max(weight) FROM examples x
           WHERE x.grp = e.grp AND x.expert = e.expert AND x.kind = 'top')
           GROUP BY grp, expert HAVING count(*) >= 2 ORDER BY count(*) DESC, grp, expert LIMIT 1"""
    )[0]
    name = explorer.index.expert_name(group, expert)
    kept = len(explorer.index.top_examples(group, expert))
    monkeypatch.setattr(pages, "CONTEXTS_OPEN", 1)  # the tiny index keeps 4 contexts: open 1, the rest behind
    console = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{app_url}?expert={name}")
    expect(page.locator("#expert-header .expert-name")).to_have_text(name)
    expect(page.locator("#expert-contexts .notice")).to_contain_text("contexts tie at the maximum weight")
    contexts = page.locator("#expert-contexts .context")
    expect(contexts).to_have_count(kept)
    expect(contexts.nth(1)).to_be_hidden()
    page.get_by_text(f"Show all {kept} top contexts").click()
    expect(contexts.nth(kept - 1)).to_be_visible()
    expect(page.locator("#expert-top-tokens .chip").first).to_be_visible()
    expect(page.locator("#expert-effects .chip").first).to_be_visible()
    assert "\ufffd" not in page.locator("#expert-contexts").inner_text()

    page.get_by_text("Test this expert on your own text").click()
    typed = "<b id=pwn>x</b><img src=x onerror=__pwned=1> The fox"  # within the tests' 64-token limit
    page.locator("#expert-test-text textarea").fill(typed)
    page.locator("#expert-test").click()
    expect(page.locator("#expert-test-result .notice")).to_contain_text(f"{name} is active (weight ≥ 0.01) on")
    expect(page.locator("#expert-test-result .tok").first).to_be_visible()
    expect(page.locator("#expert-test-result .tokens")).to_have_text(typed)
    assert_inert(page)
    page.wait_for_timeout(500)  # the charts are drawn
    shot(page, "14-expert-ties-show-all-test")
    assert not [text for text in console if "Vega" in text], console


def test_labels_sit_beside_expert_ids(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    open_tab(page, "Search")
    page.locator("#search-query textarea").fill("quick")
    page.locator("#search-button").click()
    row = page.locator("#search-results tbody tr").first
    expect(row).to_be_visible()
    assert row.locator("td").nth(1).inner_text().strip()  # the label column of the first result
    density = row.locator("td").nth(2).inner_text()
    assert density != "0.000%" and re.fullmatch(r"[0-9.]+%", density)

    open_tab(page, "Switch off")
    page.locator("#ablation-set textarea").fill("G1/17, G2 (1, 2), G1 (3, *)")
    named = page.locator("#ablation-summary .named-experts li")
    expect(named).to_have_count(2)
    expect(named.first).to_contain_text("G1/17")


# -- the inspector: analysed on first open, why this token (issue 10 item 6, issue 11 item 6) --------------------------
def test_inspector_opens_analysed_and_says_why_a_token_comes_next(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    open_tab(page, "Inspector")  # no click on Inspect: its example is analysed on first open
    tokens = page.locator("#inspect-tokens [data-token]")
    expect(tokens.first).to_be_visible()
    expect(page.locator("#token-experts .expert-label-inline").first).to_be_visible()  # labels beside ids
    expect(page.locator("#token-why")).to_contain_text("Why")
    tokens.nth(1).click()
    expect(page.locator("#token-why .token-title")).to_contain_text("after token 1")
    expect(page.locator("#token-why")).to_contain_text("Pushed it up")
    expect(page.locator("#token-why")).to_contain_text("Pushed it down")
    shot(page, "15-inspector-why")
    link = page.locator("#token-why .expert-link").first
    name = link.inner_text()
    link.click()
    expect(page.locator("#expert-header .expert-name")).to_have_text(name)
    page.go_back()  # back to the inspector it came from, its analysis still there
    expect(page.get_by_role("tab", name="Inspector")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#token-why .token-title")).to_contain_text("after token 1")


# -- the concept builder and the control, on the embedded model (issue 11 items 4 and 5) ---------------------------
CONCEPT_TIMEOUT = 240_000  # ms: the model runs on the examples and the index's texts, on 2 shared CPU cores


@pytest.fixture
def embedded_page(browser, embedded_app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    yield page
    context.close()


def test_concept_panel_builds_a_set_and_the_measure_shows_its_control(embedded_page, embedded_app_url):
    from playwright.sync_api import expect

    from explorer.app.concept import held_out_split, split_texts

    german = (Path(__file__).resolve().parents[1] / "fixtures" / "concepts" / "german.txt").read_text()
    page = embedded_page
    page.goto(embedded_app_url)
    open_tab(page, "Switch off")
    page.locator("#concept-panel").get_by_text("Build a set from examples of a concept").click()
    page.locator("#concept-examples textarea").fill(german)
    page.locator("#find-concept").click()
    held_out = page.locator("#concept-result .concept-rise-held-out")
    expect(held_out).to_be_visible(timeout=CONCEPT_TIMEOUT)
    background = page.locator("#concept-result .concept-rise-background")
    assert float(held_out.get_attribute("data-rise")) > 3 * float(background.get_attribute("data-rise"))
    expect(page.locator("#concept-status")).to_contain_text("have ≥ 2× their mean weight on the indexed corpus")
    expect(page.locator("#concept-result .concept-experts .expert-link").first).to_be_visible()
    page.locator("#concept-panel").scroll_into_view_if_needed()
    shot(page, "16-concept-builder")

    page.locator("#use-concept").click()
    expect(page.locator("#ablation-set textarea")).to_have_value(re.compile(r"^G\d/\d+, G\d/\d+"))
    expect(page.locator("#ablation-summary")).to_contain_text("experts switched off")
    expect(page.locator("#concept-status")).to_contain_text("The switched-off set is now the concept's")

    page.locator("#measure-text textarea").fill(held_out_split(split_texts(german))[1][0])  # a held-out example
    page.locator("#measure").click()
    specificity = page.locator("#measured .specificity")
    expect(specificity).to_be_visible(timeout=CONCEPT_TIMEOUT)
    assert float(specificity.get_attribute("data-specificity")) > 1  # the set moves German more than its control
    expect(page.locator("#measured .control-table").first).to_contain_text("control: like experts at random")
    page.locator("#measured .control-tokens summary").click()
    expect(page.locator("#measured .control-tokens tbody tr").first).to_be_visible()
    page.locator("#measured").scroll_into_view_if_needed()
    shot(page, "17-set-against-control")


def test_scores_in_the_overview_the_expert_page_and_search(page, app_url):
    from playwright.sync_api import expect

    page.goto(app_url)
    boards = page.locator("#score-boards .score-boards")
    expect(boards).to_be_visible()
    expect(boards.locator("table")).to_have_count(3)
    expect(boards).to_contain_text("Most causal")
    page.locator("#score-boards").scroll_into_view_if_needed()
    shot(page, "scores-overview")
    strongest = boards.locator("table").first.locator("tbody tr").first
    name = strongest.get_attribute("data-expert")
    strongest.locator("td").nth(1).click()
    expect(page.locator("#expert-header .expert-name")).to_have_text(name)
    expect(page.locator("#expert-header .expert-scores")).to_contain_text("causal effect")
    expect(page.locator("#expert-header .expert-scores")).to_contain_text("scored experts")
    shot(page, "scores-expert")

    open_tab(page, "Search")
    page.locator("#search-query textarea").fill("quick")
    page.locator("#search-button").click()
    expect(page.locator("#search-results tbody tr").first).to_be_visible()
    page.locator("#search-sort").get_by_text("causal", exact=True).click()
    expect(page.locator("#search-status")).to_contain_text("sorted: largest causal effect first")  # re-rendered
    expect(page.locator("#search-results thead")).to_contain_text("causal effect")
    effects = [
        float(cell.split()[0]) for cell in page.locator("#search-results tbody tr td:nth-child(5)").all_inner_texts()
    ]
    assert len(effects) > 1 and effects == sorted(effects, reverse=True)
    shot(page, "scores-search")
