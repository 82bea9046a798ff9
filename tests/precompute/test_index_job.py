"""The index job's life: resume after a kill, shards and merge, the CLI, and bad input."""

import gzip
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest

from explorer.index.reader import ExpertIndex
from precompute.cli import main as cli
from precompute.corpus.documents import CorpusError, read_documents
from precompute.indexing.job import IndexJob, checkpoint_path, run_index
from precompute.indexing.options import IndexJobError
from precompute.indexing.shards import merge_indexes

TABLES = {
    "examples": "grp, expert, kind, rank",
    "experts": "grp, expert",
    "expert_domains": "grp, expert, domain",
    "expert_tokens": "grp, expert, token_id",
    "tokens": "doc, position",
    "documents": "doc",
    "domains": "domain",
}


def table_rows(path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return {name: conn.execute(f"SELECT * FROM {name} ORDER BY {order}").df() for name, order in TABLES.items()}


def assert_same_index(a, b, exact: bool) -> None:
    left, right = table_rows(a), table_rows(b)
    for name in TABLES:
        x, y = left[name], right[name]
        assert list(x.columns) == list(y.columns) and len(x) == len(y), name
        for column in x.columns:
            xs, ys = ([v.tolist() if isinstance(v, np.ndarray) else v for v in t[column]] for t in (x, y))
            if exact or x[column].dtype.kind not in "f":
                if column in ("window_weights", "window_max") and not exact:
                    continue  # 8-bit highlights of float-noisy weights: compared below
                assert xs == ys, f"{name}.{column}"
            else:
                np.testing.assert_allclose(xs, ys, rtol=1e-5, err_msg=f"{name}.{column}")


@pytest.fixture
def corpus(tiny_corpus):
    return tiny_corpus


def run_killed_at_batch(options, n: int, monkeypatch) -> None:
    """Run the job until it is killed (KeyboardInterrupt) as batch `n` starts; later runs go on normally."""
    process, calls = IndexJob._process, []

    def dies_at_batch_n(self, batch, state):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        process(self, batch, state)

    with monkeypatch.context() as patched:
        patched.setattr(IndexJob, "_process", dies_at_batch_n)
        with pytest.raises(KeyboardInterrupt):
            run_index(options)


def test_killed_job_resumes_to_the_same_index(vd_tiny, corpus, tmp_path, monkeypatch, index_options):
    whole = index_options(vd_tiny.checkpoint, corpus, tmp_path / "whole.duckdb", checkpoint_every=40)
    run_index(whole)
    killed = index_options(vd_tiny.checkpoint, corpus, tmp_path / "killed.duckdb", checkpoint_every=40)
    run_killed_at_batch(killed, 5, monkeypatch)
    assert checkpoint_path(killed_out := tmp_path / "killed.duckdb").exists() and not killed_out.exists()
    run_index(killed)
    assert not checkpoint_path(killed_out).exists()
    assert_same_index(whole.out, killed.out, exact=True)


def test_two_shards_merged_equal_one_run(vd_tiny, corpus, tmp_path, index_options):
    run_index(index_options(vd_tiny.checkpoint, corpus, tmp_path / "all.duckdb"))
    for k in range(2):
        run_index(index_options(vd_tiny.checkpoint, corpus, tmp_path / f"shard{k}.duckdb", shard=f"{k}/2"))
    for k in range(2):  # each shard holds only its own documents: index % 2 == k
        assert {doc % 2 for (doc,) in table_rows(tmp_path / f"shard{k}.duckdb")["documents"][["doc"]].values} == {k}
    assert (
        cli(
            [
                "merge",
                str(tmp_path / "shard0.duckdb"),
                str(tmp_path / "shard1.duckdb"),
                "--out",
                str(tmp_path / "merged.duckdb"),
                "--no-embeddings",
            ]
        )
        == 0
    )
    assert_same_index(tmp_path / "all.duckdb", tmp_path / "merged.duckdb", exact=False)
    merged = ExpertIndex(tmp_path / "merged.duckdb").meta()
    assert merged.shards == ["0/2", "1/2"]
    assert merged.tokens_processed == ExpertIndex(tmp_path / "all.duckdb").meta().tokens_processed
    with pytest.raises(IndexJobError, match="already merged"):
        merge_indexes([tmp_path / "shard0.duckdb", tmp_path / "merged.duckdb"], tmp_path / "again.duckdb")


def test_cli_index_and_schema(vd_tiny, corpus, tmp_path, capsys):
    out = tmp_path / "cli.duckdb"
    args = [
        "index",
        "--model",
        str(vd_tiny.checkpoint),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--max-tokens",
        "100",
        "--seq-len",
        "32",
        "--no-embeddings",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert cli(args) == 0
    assert ExpertIndex(out).meta().tokens_processed == 100
    assert cli(args) == 1  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert cli(["schema"]) == 0
    assert "### `examples`" in capsys.readouterr().out


def test_corpus_formats(tmp_path):
    (tmp_path / "a.txt").write_text("plain text document")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write('{"text": "one", "domain": "x", "split": "train"}\n\n{"text": "two", "split": "heldout"}\n')
    pd.DataFrame({"text": ["three"], "id": ["p3"]}).to_parquet(tmp_path / "c.parquet")
    docs = list(read_documents(tmp_path))
    assert [(d.index, d.text, d.domain, d.source_id) for d in docs] == [
        (0, "plain text document", None, "a.txt"),
        (1, "one", "x", "b.jsonl.gz:1"),
        (2, "two", None, "b.jsonl.gz:3"),
        (3, "three", None, "p3"),
    ]
    assert [d.text for d in read_documents(tmp_path, split="train")] == ["plain text document", "one", "three"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"", "empty corpus file"),
        (b'{"text": 1}\n', "no string `text`"),
        (b"{broken\n", "not JSON"),
    ],
)
def test_bad_corpus_files_name_the_file(tmp_path, content, message):
    path = tmp_path / ("bad.txt" if b"{" not in content else "bad.jsonl")
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message) as error:
        list(read_documents(path))
    assert "bad." in str(error.value)


def test_missing_corpus_and_optional_datasets(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        list(read_documents(tmp_path / "nope.jsonl"))
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(CorpusError, match="pip install datasets"):
            list(read_documents("someone/some-dataset"))


def test_bad_corpus_mid_run_keeps_progress(vd_tiny, corpus, tmp_path, index_options):
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(corpus, folder / "a.jsonl")
    (folder / "b.jsonl").write_bytes(b"\xff\xfe")
    options = index_options(vd_tiny.checkpoint, folder, tmp_path / "out.duckdb")
    with pytest.raises(IndexJobError, match="b.jsonl: not UTF-8") as error:
        run_index(options)
    assert "progress so far" in str(error.value)
    assert checkpoint_path(tmp_path / "out.duckdb").exists()


def test_model_without_tokenizer(vd_tiny, corpus, tmp_path, index_options):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(vd_tiny.checkpoint / name, folder / name)
    with pytest.raises(IndexJobError, match="tokenizer") as error:
        run_index(index_options(folder, corpus, tmp_path / "out.duckdb"))
    assert str(folder) in str(error.value)


def test_resuming_with_another_model_is_refused(vd_tiny, hd_tiny, corpus, tmp_path, monkeypatch, index_options):
    out = tmp_path / "out.duckdb"
    run_killed_at_batch(index_options(vd_tiny.checkpoint, corpus, out, checkpoint_every=1), 2, monkeypatch)
    hd = hd_tiny.checkpoint
    with pytest.raises(IndexJobError, match="another job .*config") as error:
        run_index(index_options(hd, corpus, out))
    assert str(checkpoint_path(out)) in str(error.value)
    assert checkpoint_path(out).exists()
