"""The Switch-off tab's concept panel and control table as HTML: what they show, and user text always escaped."""

import re

from explorer.web import concept_views, pages

MARKUP = "<img src=x onerror=alert(1)>"
GERMAN = "Der Fuchs springt.\n\nÜber den Wolken.\n\nDer Hund schläft.\n\nEin Fuchs ist kein Hund.\n\nDer Hund bellt."


def test_the_concept_panel_shows_the_preview_and_experts_and_keeps_the_set(explorer):
    result, found_set, status = concept_views.concept_view(explorer, GERMAN, None, "", 2.0)
    assert "notice-error" not in status
    assert 'class="figure-value concept-rise-held-out"' in result and "Preview" in result
    assert found_set == explorer.concept(GERMAN).ablate
    if found_set:
        first = found_set.split(", ")[0]
        assert f'data-expert="{first}"' in result  # rows open their expert


def test_an_uploaded_file_adds_examples(explorer, tmp_path):
    upload = tmp_path / "examples.txt"
    upload.write_text("Über den Wolken.\n\nDer Hund schläft.", encoding="utf-8")
    _, with_file, _ = concept_views.concept_view(
        explorer, "Der Fuchs springt.\n\nEin Fuchs ist kein Hund.", str(upload), "", 2.0
    )
    _, in_box, _ = concept_views.concept_view(
        explorer,
        "Der Fuchs springt.\n\nEin Fuchs ist kein Hund.\n\nÜber den Wolken.\n\nDer Hund schläft.",
        None,
        "",
        2.0,
    )
    assert with_file == in_box
    upload.write_bytes(b"\xff\xfe not utf-8 \xff")
    _, nothing, status = concept_views.concept_view(explorer, GERMAN, str(upload), "", 2.0)
    assert nothing == "" and "not UTF-8" in status


def test_markup_in_the_examples_never_reaches_the_page_as_markup(explorer):
    for examples, counter in ((f"{MARKUP}\n\n{MARKUP} {MARKUP}\n\n{MARKUP}", MARKUP), (MARKUP, "")):
        for part in concept_views.concept_view(explorer, examples, None, counter, 2.0):
            assert "<img" not in part
    _, _, status = concept_views.concept_view(explorer, GERMAN, None, "", float("nan"))
    assert "ratio must lie" in status and "notice-error" in status


def test_the_measure_shows_the_set_against_its_control_with_escaped_tokens(explorer):
    shown, status = pages.measure_view(explorer, f"The quick brown fox {MARKUP} jumps", "G1/5, G1/40, G2 (3, *)")
    assert status == "" and "<img" not in shown and "&lt;" in shown  # the tokens of "<img" each escaped
    assert 'class="figure-value specificity"' in shown and "control: like experts at random" in shown
    specificity = float(re.search(r'data-specificity="([0-9.]+)"', shown).group(1))
    assert specificity > 0
    plain, _ = pages.measure_view(explorer, "The quick brown fox", "")
    assert "Nothing is switched off: no control" in plain and "specificity" not in plain
