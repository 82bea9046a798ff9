"""Safe by construction: every message the page shows is built (and escaped) in explorer.web.messages, and
every page handler answers markup in its input with text, in its status line, never with a raised error."""

import ast
import html as html_lib
import logging
import re
from pathlib import Path

import gradio as gr
import pytest

from explorer.app.tokens import RequestRejected
from explorer.web import messages, pages

WEB = Path(__file__).resolve().parents[2] / "explorer" / "web"
MARKUP = "<img src=x onerror=__pwned=1><b id=pwn>x</b><form><input type=password></form>"
LIVE = ("<img", "<b id", "<form", "<input")  # any of these in an output would be live markup


def _alert_calls(path: Path) -> list[str]:
    """Calls of gr.Error / gr.Warning / gr.Info (or gradio.X, or the names imported from gradio) in a module."""
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "gradio"
        for alias in node.names
        if alias.name in ("Error", "Warning", "Info")
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        if isinstance(fn, ast.Attribute) and fn.attr in ("Error", "Warning", "Info"):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(fn)}")
        elif isinstance(fn, ast.Name) and fn.id in imported:
            found.append(f"{path.name}:{node.lineno} {fn.id}")
    return found


def test_only_the_messages_module_builds_gradio_alerts():
    """Gradio renders gr.Error / gr.Warning / gr.Info messages as HTML: one module builds them, escaped."""
    modules = sorted(WEB.rglob("*.py"))
    assert len(modules) >= 8  # ui, pages, html, charts, api, messages and the tabs are all scanned
    outside = [call for path in modules if path.name != "messages.py" for call in _alert_calls(path)]
    assert outside == []
    assert _alert_calls(WEB / "messages.py")  # the scan does see a call where there is one


def test_status_lines_escape_what_the_user_typed():
    line = messages.error_status(RequestRejected(f"{MARKUP!r} is not an expert: write G<group>/<id>"))
    assert isinstance(line, messages.ErrorNotice) and "notice-error" in line
    assert not any(tag in line for tag in LIVE) and "write G&lt;group&gt;/&lt;id&gt;" in line
    assert html_lib.unescape(line).count(MARKUP) == 1
    assert messages.status(MARKUP, "stale") == f'<div class="notice notice-stale">{html_lib.escape(MARKUP)}</div>'


def test_api_errors_carry_the_sentence_escaped():
    def fails(spec: str) -> dict:
        raise RequestRejected(f"{spec!r} is not an expert: write G<group>/<id>")

    endpoint = messages.api_errors(fails)
    with pytest.raises(gr.Error) as caught:
        endpoint(MARKUP)
    message = caught.value.message
    assert not any(tag in message for tag in LIVE)
    assert html_lib.unescape(message) == f"{MARKUP!r} is not an expert: write G<group>/<id>"
    assert message.startswith("'&lt;img")  # quotes stay readable in element content
    assert endpoint.__wrapped__ is fails  # gr.api reads the endpoint's signature through the wrapper


def test_handlers_report_failures_in_their_status_line_and_never_raise(caplog):
    @messages.reports_errors("", None)
    def rejected(text):
        raise RequestRejected(f"bad: {text}")

    @messages.reports_errors("")
    def streams(text):
        yield "first", ""
        raise KeyError(text)

    results, state, status = rejected(MARKUP)
    assert (results, state) == ("", None) and "bad: &lt;img" in status
    with caplog.at_level(logging.ERROR, logger="explorer.web.messages"):
        updates = list(streams(MARKUP))
    assert updates[0] == ("first", "") and updates[1][0] == ""
    assert "Something went wrong (KeyError" in updates[1][1] and "&lt;img" in updates[1][1]
    assert "unexpected error" in caplog.text  # the unexpected one is logged with its traceback


def _outputs(value) -> list[str]:
    """Every string a handler returned (nested in tuples and dicts)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _outputs(v)]
    if isinstance(value, (tuple, list)):
        return [s for v in value for s in _outputs(v)]
    return []


def _page_answers(explorer) -> dict:
    """Each page handler that takes typed text, fed MARKUP in that text."""
    answers = {
        "expert box": pages.expert_view(explorer, MARKUP),
        "expert extras": pages.expert_extras(explorer, MARKUP),
        "inspector": pages.inspect_view(explorer, MARKUP, 0.01),
        "switched-off set": pages.ablation_summary(explorer, MARKUP),
        "switch off an expert": pages.add_expert(explorer, "", MARKUP),
        "add a domain": pages.add_domain(explorer, "", MARKUP),
        "add a text's experts": pages.add_firing(explorer, "", MARKUP, 5),
        "generate: prompt": list(pages.generate_view(explorer, MARKUP, "G1/5", 3, 0.0, 0)),
        "generate: set": list(pages.generate_view(explorer, "The quick", MARKUP, 3, 0.0, 0)),
        "measure: text": pages.measure_view(explorer, MARKUP, "G1/5"),
        "measure: set": pages.measure_view(explorer, "The quick brown fox", MARKUP),
    }
    for mode in ("auto", "id", "token", "text", "meaning"):
        answers[f"search by {mode}"] = pages.search_view(explorer, MARKUP, mode, None)
    return answers


def test_every_page_handler_shows_markup_as_text(explorer):
    answers = _page_answers(explorer)
    for where, answer in answers.items():
        shown = _outputs(answer)
        assert shown, where
        assert not [s for s in shown if any(tag in s for tag in LIVE)], where
    # where the text is echoed it reads back whole, as a user sees it (escaped once, not twice)
    echoed = ("expert box", "switched-off set", "search by id", "search by text", "generate: set", "inspector")
    for where in echoed:
        assert any(MARKUP in _visible_text(s) for s in _outputs(answers[where])), where


def _visible_text(fragment: str) -> str:
    """What a browser shows of an HTML fragment: the text between tags, entities decoded."""
    return html_lib.unescape(re.sub(r"<[^>]*>", "", fragment))
