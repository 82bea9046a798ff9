"""The README's API examples run on the embedded default: every `client.predict(...)` call of its API block is
called through the same endpoint functions the server registers (no network), and must answer without error."""

import ast
import re
from pathlib import Path

import pytest

from explorer.web.api import endpoints

README = Path(__file__).resolve().parents[2] / "README.md"


def api_calls() -> list[str]:
    block = re.search(r"### API\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    calls = [node for node in ast.parse(block).body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    calls = [node for node in calls if ast.unparse(node.value.func) == "client.predict"]  # one call may span lines
    return [ast.unparse(node.value) for node in calls]


class EndpointClient:
    """gradio_client.Client's predict(), answered by the endpoint functions in this process."""

    def __init__(self, explorer):
        self.functions = endpoints(explorer)

    def predict(self, *args, api_name: str, **kwargs):
        return self.functions[api_name.lstrip("/")](*args, **kwargs)


def test_the_readme_shows_every_named_endpoint(embedded):
    shown = {
        ast.literal_eval(re.search(r"api_name=('[^']+'|\"[^\"]+\")", call).group(1)).lstrip("/") for call in api_calls()
    }
    assert shown == set(endpoints(embedded))


@pytest.mark.parametrize("call", api_calls())
def test_each_readme_example_answers_on_the_embedded_model(embedded, call):
    answer = eval(call, {"client": EndpointClient(embedded)})  # noqa: S307  (our own README)
    assert answer, call
    text = repr(answer)
    assert "notice-error" not in text and "Something went wrong" not in text, (call, text[:300])
    if isinstance(answer, dict) and "results" in answer:
        assert answer["results"], f"{call} found nothing on the embedded model"
