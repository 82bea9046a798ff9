"""Fixtures of the app tests (not a test module): a small index of the tiny VD checkpoint, an Explorer, a running app.

The index is built once per test session (embeddings included, for semantic search) from the index
tests' labelled corpus. Import the fixtures you use into a test module: `from app_fixtures import explorer`.
"""

import socket
from pathlib import Path

import pytest
from index_corpus import tiny_options, write_corpus

from explorer.app.explorer import AppSettings, Explorer
from explorer.app.generation import Limits

_BUILT: dict[str, Path] = {}
LIMITS = Limits(max_prompt_tokens=64, max_new_tokens=24, max_text_tokens=128)


def build_app_index(folder: Path, checkpoint: Path) -> Path:
    if "index" not in _BUILT:
        from precompute.indexing.job import run_index

        corpus = write_corpus(folder)
        _BUILT["index"] = run_index(tiny_options(checkpoint, corpus, folder / "tiny.duckdb", no_embeddings=False))
    return _BUILT["index"]


@pytest.fixture(scope="session")
def app_index(tmp_path_factory, vd_tiny) -> Path:
    return build_app_index(tmp_path_factory.mktemp("app-index"), vd_tiny.checkpoint)


@pytest.fixture(scope="session")
def explorer(app_index, vd_tiny) -> Explorer:
    return Explorer.load(AppSettings(str(vd_tiny.checkpoint), str(app_index), "cpu", "float32", LIMITS))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(explorer):
    """The app served on a free localhost port in this process (a background thread), closed afterwards."""
    from explorer.web import ui

    demo = ui.build(explorer, model_concurrency=2).queue(max_size=64, default_concurrency_limit=4)
    demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **ui.launch_options()
    )
    yield demo.local_url
    demo.close()
