"""Fixtures of every test folder, registered here (test modules never import each other).

Everything the tests need ships in tests/fixtures/, so a bare clone runs the whole suite:
- conformance/: the reference checkpoints (a copy of the project's shared conformance data; .ci/run
  checks the copy still equals ../shared where that folder exists);
- tiny_corpus.jsonl: a small labelled corpus that the index, app and web tests index with the tiny VD model;
tests/golden/ holds the expected rows and rendered pages of that tiny index (`pytest --update-golden` rewrites them).
"""

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import explorer as _registers_monet  # noqa: E402,F401  (registers model_type "monet")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFORMANCE = FIXTURES / "conformance"
CONFORMANCE_NAMES = ("monet-vd-tiny", "monet-hd-tiny")
TINY_CORPUS = FIXTURES / "tiny_corpus.jsonl"


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/fixtures/golden from this run")


class Conformance:
    """One reference folder: its checkpoint, cases.json and expected.safetensors."""

    def __init__(self, name: str):
        from safetensors.torch import load_file

        self.name = name
        self.folder = CONFORMANCE / name
        self.checkpoint = self.folder / "checkpoint"
        self.cases = json.loads((self.folder / "cases.json").read_text())
        self.expected = load_file(self.folder / "expected.safetensors")
        self.input_ids = torch.tensor(self.cases["input_ids"])
        self.attention_mask = torch.tensor(self.cases["attention_mask"])

    def load_model(self, **kwargs):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.checkpoint, **kwargs).eval()


@pytest.fixture(scope="session", params=CONFORMANCE_NAMES)
def conformance(request) -> Conformance:
    return Conformance(request.param)


@pytest.fixture(scope="session")
def vd_tiny() -> Conformance:
    return Conformance("monet-vd-tiny")


@pytest.fixture(scope="session")
def hd_tiny() -> Conformance:
    return Conformance("monet-hd-tiny")


@pytest.fixture(scope="session")
def model(conformance):
    return conformance.load_model()


# -- the tiny labelled corpus and index ------------------------------------------------------------------
@dataclass(frozen=True)
class TinyDocument:
    domain: str
    text: str


@pytest.fixture(scope="session")
def tiny_documents() -> list[TinyDocument]:
    rows = [json.loads(line) for line in TINY_CORPUS.read_text().splitlines()]
    return [TinyDocument(row["domain"], row["text"]) for row in rows]


@pytest.fixture(scope="session")
def tiny_corpus_file() -> Path:
    """The shipped tiny corpus, read-only."""
    return TINY_CORPUS


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """A private copy of the tiny corpus (tests may append bad lines to it)."""
    path = tmp_path / "corpus.jsonl"
    path.write_text(TINY_CORPUS.read_text())
    return path


@pytest.fixture(scope="session")
def index_options():
    """index_options(checkpoint, corpus, out, **overrides) -> IndexOptions of a seconds-long index job."""
    from precompute.indexing.job import IndexOptions

    def make(checkpoint: Path, corpus: Path, out: Path, **overrides) -> IndexOptions:
        settings = dict(
            model=str(checkpoint),
            corpus=str(corpus),
            out=str(out),
            seq_len=24,
            batch_size=3,
            top_k=4,
            samples=3,
            context=3,
            min_weight=0.01,
            device="cpu",
            dtype="float32",
            checkpoint_every=10**9,
            no_embeddings=True,
            quiet=True,
        )
        return IndexOptions(**{**settings, **overrides})

    return make


@pytest.fixture(scope="session")
def app_index(tmp_path_factory, vd_tiny, index_options, tiny_corpus_file) -> Path:
    """The tiny corpus indexed once per session with the tiny VD model, embeddings included."""
    from precompute.indexing.job import run_index

    folder = tmp_path_factory.mktemp("app-index")
    return run_index(index_options(vd_tiny.checkpoint, tiny_corpus_file, folder / "tiny.duckdb", no_embeddings=False))


# -- the app ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def limits():
    from explorer.app.generation import Limits

    return Limits(max_prompt_tokens=64, max_new_tokens=24, max_text_tokens=128)


@pytest.fixture(scope="session")
def explorer(app_index, vd_tiny, limits):
    from explorer.app.explorer import AppSettings, Explorer

    return Explorer.load(AppSettings(str(vd_tiny.checkpoint), str(app_index), "cpu", "float32", limits))


@pytest.fixture(scope="session")
def embedded():
    """An Explorer on the shipped embedded model and index (assets/), as `python app.py` runs it."""
    from explorer.app.explorer import AppSettings, Explorer
    from explorer.paths import EMBEDDED_INDEX_PATH, EMBEDDED_MODEL_DIR

    loaded = Explorer.load(AppSettings(str(EMBEDDED_MODEL_DIR), str(EMBEDDED_INDEX_PATH), "cpu", "float32"))
    assert not loaded.problems, loaded.problems
    return loaded


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [  # headless on a CI machine: no sandbox, no GPU, nothing fetched in the background
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (never a browser download)."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (the README's test command does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _served(explorer):
    """The app of an Explorer served on a free localhost port in this process (a background thread): its URL, then
    closed."""
    from explorer.web import ui

    demo = ui.build(explorer, model_concurrency=2).queue(max_size=64, default_concurrency_limit=4)
    demo.launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True, **ui.launch_options()
    )
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def app_url(explorer):
    """The app on the tiny model and index, served on a free localhost port, closed afterwards."""
    yield from _served(explorer)


@pytest.fixture(scope="module")
def embedded_app_url(embedded):
    """The app on the shipped embedded model and index (as `python app.py` serves it, without presets)."""
    yield from _served(embedded)
