"""Browser journeys through the served app: Playwright driving Debian's chromium (never a downloaded browser).

    search -> expert page -> switch off -> generate -> the difference; deep links; the inspector's
    click-through; a click on the E x E map. Screenshots go to test-artifacts/screenshots/.
Every page load is also checked for requests leaving localhost (a Space must fetch nothing at runtime).
"""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TIMEOUT = 30_000  # ms: generation on 2 shared CPU cores


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing: apt-get install -y chromium")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
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

    page.locator("#switch-off").click()
    open_tab(page, "Switch off")
    expect(page.locator("#ablation-set textarea")).to_have_value(name)
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

    page.goto(f"{app_url}?expert=G9/1")  # a bad link says why, the app keeps serving
    expect(page.locator(".toast-body").first).to_contain_text("outside the model")


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
