"""The first minute and talk mode (issue 10): what an expert is, the "Start here" presets, examples that work on the
loaded model, and `?talk=1` on a projector's 1280 x 720.

The presets need the embedded model (assets/monet-embedded + its index): this module serves the app on it once.
The browser tests also write the README's pictures (docs/screenshots/, see readme_picture), so they stay current.
"""

import io
import re
import socket
import time
from pathlib import Path

import pytest

from explorer.app.presets import Preset, load_presets, read_presets
from explorer.paths import ASSETS_DIR, REPO_DIR
from explorer.web import first_minute
from tests.app.test_presets import assert_specific_effect

SCREENSHOTS = REPO_DIR / "test-artifacts" / "screenshots"
README_PICTURES = REPO_DIR / "docs" / "screenshots"  # tracked: the README shows them
README_PICTURE_MAX_BYTES = 300_000
PRESETS = read_presets(ASSETS_DIR / "presets.json")
TIMEOUT = 120_000  # ms: a preset measures two texts and writes 2 x 40 tokens on 2 shared CPU cores
HARD_CODED = ("147040", "domain:code", "Paris")  # examples of other models that fail on this one


# -- without a browser -------------------------------------------------------------------------------------------
def test_examples_work_on_the_tiny_model(explorer):
    examples = explorer.examples
    assert explorer.expert_ref(examples.expert) == explorer.expert_ref(examples.pair)
    assert "experts switched off" in explorer.resolve_ablation(examples.ablation_placeholder()).summary()
    if examples.word is not None:
        assert explorer.search(examples.word, "token").rows
    if examples.domain is not None:
        assert examples.domain in explorer.domains() and explorer.domain_experts(examples.domain)
    assert examples.expert in examples.search_placeholder() and examples.pair in examples.expert_placeholder()


def test_preset_buttons_carry_their_number_and_escape_their_text():
    evil = Preset("<b>x</b>", "why <img src=x>", "prompt", "G1/1", "control")
    out = first_minute.presets_html([PRESETS[0], evil], keys=True, lead="Try:")
    assert out.count("<button") == 2 and 'data-preset="1"' in out and '<span class="preset-key">2</span>' in out
    assert "<b>x</b>" not in out and "<img" not in out and "&lt;b&gt;x&lt;/b&gt;" in out
    assert first_minute.presets_html([]) == ""
    presets = [PRESETS[0], evil]
    assert first_minute.preset_of(presets, {"preset": 1}) == 1
    assert [first_minute.preset_of(presets, data) for data in ({"preset": 2}, {"preset": "0"}, {}, None)] == [None] * 4


def test_what_an_expert_is_uses_the_loaded_model(explorer):
    out = first_minute.what_is_an_expert_html(explorer)
    assert "16 × 16 = 256 tiny experts" in out and "<svg" in out
    assert f'data-expert="{explorer.examples.expert}"' in out  # a real expert, opened by a click


def test_a_preset_run_measures_its_text_and_its_control(explorer):
    from explorer.app.generation import GenerationSettings

    explorer_generate = explorer.generate
    preset = Preset("Row", "why", "The quick brown fox jumps over", "G1 (3, *)", "It was the best of times")
    updates = list(first_minute.preset_run_view(explorer, preset, 5, 0.0, 0))
    assert "measuring" in updates[0][-1] and updates[0][0] == ""  # first the panels wait, then the numbers come
    effect, baseline, ablated, _continuation, run, status = updates[-1]
    assert 'class="figure-value ratio-target"' in effect and "ratio-control" in effect and "G1 (3, *)" in effect
    assert run.finished and "Done" in status and run.prompt == preset.prompt
    final = list(explorer_generate(preset.prompt, preset.ablate, GenerationSettings(5, 0.0, 1.0, 0)))[-1]
    assert run.ablated == final.ablated_text  # the same generation as the Switch-off tab's

    broken = Preset("Bad", "why", "text", "G9/1", "control")  # a failure is a status line, the panels cleared
    *_, (effect, baseline, ablated, _continuation, run, status) = first_minute.preset_run_view(
        explorer, broken, 5, 0, 0
    )
    assert (effect, baseline, ablated, run) == ("", "", "", None) and "G9" in status and "notice-error" in status


# -- the app on the embedded model, in a browser -------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded_url(embedded):
    """The app on the embedded model with its shipped presets, on a free localhost port (a background thread)."""
    from explorer.web import ui

    presets = load_presets(ASSETS_DIR / "presets.json", embedded.resolve_ablation)
    assert presets.presets and not presets.problems, presets.problems
    demo = ui.build(embedded, presets=presets).queue(max_size=16, default_concurrency_limit=4)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **ui.launch_options())
    yield demo.local_url
    demo.close()


def new_page(browser, width: int, height: int):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    return page


@pytest.fixture
def page(browser):
    page = new_page(browser, 1400, 1000)
    yield page
    page.context.close()


def shot(page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def readme_picture(page, name: str, down_to: str | None = None) -> Path:
    """The visible part of the page (down to the bottom of the element `down_to`) as a small palette PNG in
    docs/screenshots/, rewritten only when its pixels changed (a run that sees the same page leaves the file alone)."""
    from PIL import Image, ImageChops

    clip = None
    if down_to is not None:
        box, viewport = page.locator(down_to).bounding_box(), page.viewport_size
        clip = {
            "x": 0,
            "y": 0,
            "width": viewport["width"],
            "height": min(viewport["height"], box["y"] + box["height"] + 16),
        }
    shown = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")
    picture = shown.quantize(colors=128, dither=Image.Dither.NONE)
    path = README_PICTURES / f"{name}.png"
    if path.exists():
        with Image.open(path) as old:
            if (
                old.size == picture.size
                and ImageChops.difference(old.convert("RGB"), picture.convert("RGB")).getbbox() is None
            ):
                return path
    README_PICTURES.mkdir(parents=True, exist_ok=True)
    picture.save(path, optimize=True)
    assert path.stat().st_size <= README_PICTURE_MAX_BYTES, f"{path} is {path.stat().st_size:,} bytes"
    return path


def ratio(locator) -> float:
    return float(locator.get_attribute("data-ratio"))


@pytest.mark.browser
@pytest.mark.slow
def test_the_overview_says_what_an_expert_is_and_where_to_start(page, embedded_url, embedded):
    from playwright.sync_api import expect

    page.goto(embedded_url)
    expect(page.locator("#what-is-an-expert svg.expert-grid")).to_be_visible()
    expect(page.locator("#what-is-an-expert")).to_contain_text("64 × 64 = 4,096 tiny experts")
    buttons = page.locator("#start-here button.preset")
    expect(buttons).to_have_count(len(PRESETS))
    for button, preset in zip(buttons.all(), PRESETS, strict=True):
        expect(button.locator(".preset-title")).to_contain_text(preset.title)
        expect(button.locator(".preset-why")).to_have_text(preset.why)
    assert page.locator("#start-here").bounding_box()["y"] < 1000  # on the first screen, no scrolling
    shot(page, "first-minute-overview", full_page=False)
    readme_picture(page, "start-here", down_to="#start-here")

    # every example on the page is one of this model: placeholders included (a tab draws its boxes once opened)
    placeholders = []
    for tab, box in (("Search", "search-query"), ("Expert", "expert-spec"), ("Switch off", "ablation-set")):
        page.get_by_role("tab", name=tab).click()
        placeholders.append(page.locator(f"#{box} textarea").get_attribute("placeholder"))
    assert all(placeholders) and not [p for p in placeholders if any(other in p for other in HARD_CODED)]
    examples = embedded.examples
    assert examples.expert in placeholders[0] and examples.word in placeholders[0] and examples.pair in placeholders[1]
    assert f"domain:{examples.domain}" in placeholders[2] and embedded.search(examples.word, "token").rows

    # the Switch-off tab opens on the first preset, ready to run
    expect(page.locator("#prompt textarea")).to_have_value(PRESETS[0].prompt)
    expect(page.locator("#ablation-set textarea")).to_have_value(PRESETS[0].ablate)
    expect(page.locator("#ablation-summary")).to_contain_text("experts switched off")

    # the intro's example expert opens
    page.get_by_role("tab", name="Overview").click()
    page.locator("#what-is-an-expert .expert-link").click()
    expect(page.locator("#expert-header .expert-name")).to_have_text(embedded.examples.expert)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(PRESETS)), ids=[p.title for p in PRESETS])
def test_each_preset_runs_from_its_button_and_shows_its_effect(page, embedded_url, number):
    from playwright.sync_api import expect

    preset = PRESETS[number]
    page.goto(embedded_url)
    page.locator(f"#start-here button[data-preset='{number}']").click()
    expect(page.get_by_role("tab", name="Switch off")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#prompt textarea")).to_have_value(preset.prompt)
    expect(page.locator("#ablation-set textarea")).to_have_value(preset.ablate)
    expect(page.locator("#generate-status")).to_contain_text("Done", timeout=TIMEOUT)
    on_target, on_control = page.locator("#preset-effect .ratio-target"), page.locator("#preset-effect .ratio-control")
    assert_specific_effect(preset.title, ratio(on_target), ratio(on_control))
    expect(on_target).to_have_text(f"×{ratio(on_target):.2f}" if ratio(on_target) < 10 else f"×{ratio(on_target):.1f}")
    baseline = page.locator("#baseline .continuation").inner_text()
    ablated = page.locator("#ablated .continuation").inner_text()
    assert baseline != ablated, "switching the experts off changed nothing in the continuation"
    expect(page.locator("#effect .effect-summary")).to_be_visible()  # the continuation's own effect too
    shot(page, f"first-minute-preset-{number + 1}")

    page.locator("#prompt textarea").press_sequentially(" und")  # the numbers belong to the preset: dimmed once edited
    expect(page.locator("#preset-effect")).to_have_css("opacity", "0.45")


@pytest.mark.browser
@pytest.mark.slow
def test_talk_mode_fits_a_projector_and_runs_on_keys(browser, embedded_url, embedded, monkeypatch):
    from playwright.sync_api import expect

    page = new_page(browser, 1280, 720)
    page.goto(f"{embedded_url}?talk=1")
    expect(page.locator("#talk-presets button.preset")).to_have_count(len(PRESETS))
    for hidden in ("[role=tab]", "#app-header", "#main-tabs", "footer", "#intro"):  # nothing else on screen
        for element in page.locator(hidden).all():
            expect(element).to_be_hidden()
    expect(page.locator("#talk")).to_contain_text(f"Keys: 1–{len(PRESETS)} run a preset · Esc stops")
    expect(page.locator("#talk-baseline .panel")).to_be_visible()
    expect(page.locator("#talk-ablated .panel")).to_be_visible()

    page.keyboard.press("1")  # the first preset, by its key
    expect(page.locator("#talk-presets button[data-preset='0']")).to_have_class(re.compile("preset-active"))
    expect(page.locator("#talk-effect .ratio-target")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#talk-baseline .cursor")).to_have_count(0, timeout=TIMEOUT)
    assert_specific_effect(
        PRESETS[0].title, *(ratio(page.locator(f"#talk-effect .ratio-{w}")) for w in ("target", "control"))
    )
    assert page.locator("#talk-ablated .continuation").inner_text()
    for panel in ("#talk-baseline", "#talk-ablated"):  # large type, all of it on the screen
        size = page.locator(f"{panel} .continuation").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 24, f"{panel}: {size}px is too small for a projector"
        box = page.locator(f"{panel} .panel").bounding_box()
        assert box["y"] + box["height"] <= 720, f"{panel} runs off a 1280 x 720 screen"
    shot(page, "talk-mode", full_page=False)
    readme_picture(page, "talk-mode")

    generate = embedded.generate

    def slowly(*args, **kwargs):  # give Esc time to land mid-run
        for update in generate(*args, **kwargs):
            time.sleep(0.3)
            yield update

    monkeypatch.setattr(embedded, "generate", slowly)
    page.keyboard.press(str(len(PRESETS)))
    expect(page.locator("#talk-baseline .continuation")).not_to_be_empty(timeout=TIMEOUT)  # writing
    expect(page.locator("#talk-baseline .cursor")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#talk-status")).to_contain_text("Stopped")
    page.wait_for_timeout(1000)  # no late update overwrites the stopped state
    expect(page.locator("#talk-status")).to_contain_text("Stopped")
    expect(page.locator("#talk-baseline .cursor")).to_have_count(0)
    page.context.close()
