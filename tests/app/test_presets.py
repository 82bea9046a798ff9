"""Demo presets: the data file, the check against the loaded model, and the shipped presets' effect."""

import json

import pytest

from explorer.app.presets import LoadedPresets, Preset, PresetError, load_presets, read_presets, usable_presets
from explorer.paths import ASSETS_DIR

SHIPPED = ASSETS_DIR / "presets.json"


def write(tmp_path, content) -> str:
    path = tmp_path / "presets.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "Cannot read the presets file"),
        ({"items": []}, "Cannot read the presets file"),
        ({"presets": [{"title": "x"}]}, "must have exactly the fields title, why, prompt, ablate, control"),
        ({"presets": [dict(title="x", why="y", prompt=" ", ablate="G1/1", control="c")]}, "non-empty text"),
    ],
)
def test_bad_files_say_what_to_fix(tmp_path, content, message):
    with pytest.raises(PresetError, match=message):
        read_presets(write(tmp_path, content))


def test_presets_that_do_not_resolve_are_left_out_with_a_reason(explorer):
    good = Preset("ok", "why", "The quick brown fox", "G1/5", "Der Hund")
    unknown_domain = Preset("lost", "why", "text", "domain:klingon", "control")
    outside = Preset("far", "why", "text", "G9/5", "control")
    usable, problems = usable_presets([good, unknown_domain, outside], explorer.resolve_ablation)
    assert usable == [good]
    assert "'lost' is left out" in problems[0] and "klingon" in problems[0]
    assert "'far' is left out" in problems[1] and "G9" in problems[1]


def perplexity_ratio(explorer, text: str, ablate: str) -> float:
    effect = explorer.measure_text(text, ablate).effect
    return effect.ablated_perplexity / effect.baseline_perplexity


def assert_specific_effect(title: str, on_target: float, on_control: float) -> None:
    """A preset shows a visible effect on its own text (perplexity ×1.25 or more: the English registers' sets move
    their text less than a language's set does) that is at least 5× its control's, and leaves the control within 10%."""
    assert on_target >= 1.25, f"{title}: perplexity only ×{on_target:.2f} on its text"
    assert abs(on_control - 1) <= 0.1, f"{title}: the control moved ×{on_control:.2f}"
    assert on_target - 1 >= 5 * abs(on_control - 1), (
        f"{title}: ×{on_target:.2f} on its text, ×{on_control:.2f} on control"
    )


@pytest.mark.slow
@pytest.mark.parametrize("preset", read_presets(SHIPPED), ids=lambda p: p.title)
def test_each_shipped_preset_removes_its_domain_and_spares_its_control(embedded, preset):
    usable, problems = usable_presets([preset], embedded.resolve_ablation)
    assert usable and not problems
    on_target = perplexity_ratio(embedded, preset.prompt, preset.ablate)
    on_control = perplexity_ratio(embedded, preset.control, preset.ablate)
    assert_specific_effect(preset.title, on_target, on_control)


# -- loading at app start: problems become sentences, never a crash ------------------------------------------------
def test_load_presets_keeps_the_usable_ones_and_says_why_for_the_rest(tmp_path, explorer):
    assert load_presets(None, explorer.resolve_ablation) == LoadedPresets()
    good = dict(title="Row", why="why", prompt="The quick brown fox", ablate="G1 (3, *)", control="It was")
    lost = {**good, "title": "Lost", "ablate": "domain:klingon"}
    loaded = load_presets(write(tmp_path, {"presets": [good, lost]}), explorer.resolve_ablation)
    assert [p.title for p in loaded.presets] == ["Row"] and len(loaded.problems) == 1 and "'Lost'" in loaded.problems[0]
    broken = load_presets(write(tmp_path, "{not json"), explorer.resolve_ablation)
    assert broken.presets == () and "Cannot read the presets file" in broken.problems[0]


def test_the_app_takes_presets_from_its_settings(tmp_path, monkeypatch, explorer):
    import app
    from explorer.web import ui

    monkeypatch.delenv("MONET_MODEL", raising=False)
    monkeypatch.delenv("MONET_PRESETS", raising=False)
    assert app.parse_args([]).presets == str(SHIPPED)  # the embedded model brings its presets
    assert app.parse_args(["--model", "elsewhere"]).presets is None  # another model: none unless given
    monkeypatch.setenv("MONET_PRESETS", str(tmp_path / "mine.json"))
    assert app.parse_args([]).presets == str(tmp_path / "mine.json")
    assert app.parse_args(["--presets", "x.json"]).presets == "x.json"

    # a presets file with a problem: the page comes up and says so beside the other load problems
    problems = load_presets(write(tmp_path, {"presets": [{"title": "x"}]}), explorer.resolve_ablation)
    demo = ui.build(explorer, presets=problems)
    shown = [block.value for block in demo.blocks.values() if getattr(block, "elem_id", None) == "app-problems"]
    assert len(shown) == 1 and "must have exactly the fields" in shown[0]
