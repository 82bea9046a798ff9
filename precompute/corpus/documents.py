"""Reading a corpus as a stream of documents, in a fixed order.

A corpus is a file, a folder of files (read in sorted path order), or a Hugging Face dataset name
(streamed with the optional `datasets` package). Files:
- `.txt`: the whole file is one document;
- `.jsonl` / `.jsonl.gz`: one JSON object per line with `text`, optional `domain`, `id`, `split`;
- `.parquet`: columns `text`, optional `domain`, `id`, `split`.
With `split`, records whose `split` field differs are skipped (a dataset's split for hub names).
Every document gets `index`, its 0-based position in that order: the address the index uses.
"""

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from precompute.cli import CommandError

SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")


class CorpusError(CommandError, ValueError):
    """A corpus that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class Document:
    index: int
    text: str
    domain: str | None
    source_id: str


def _suffix(path: Path) -> str | None:
    return next((s for s in SUFFIXES if path.name.endswith(s)), None)


def corpus_files(path: Path) -> list[Path]:
    if path.is_file():
        if _suffix(path) is None:
            raise CorpusError(f"{path}: unsupported corpus file; use one of {', '.join(SUFFIXES)}.")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p))
    if not files:
        raise CorpusError(f"{path}: no corpus files ({', '.join(SUFFIXES)}) in this folder.")
    return files


def _records(path: Path) -> Iterator[tuple[dict, str]]:
    """(record, default id) of one file; raises CorpusError naming the file on any read problem."""
    suffix = _suffix(path)
    try:
        if suffix == ".txt":
            text = path.read_bytes().decode("utf-8")
            if text.strip():
                yield {"text": text}, path.name
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches():
                for n, record in enumerate(batch.to_pylist()):
                    yield record, f"{path.name}:{n}"
        else:
            opener = gzip.open if suffix == ".jsonl.gz" else open
            with opener(path, "rt", encoding="utf-8") as lines:
                for n, line in enumerate(lines, start=1):
                    if line.strip():
                        try:
                            yield json.loads(line), f"{path.name}:{n}"
                        except json.JSONDecodeError as error:
                            raise CorpusError(f"{path}:{n}: not JSON ({error}); fix or drop that line.") from None
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: not UTF-8 text ({error}); re-encode it as UTF-8.") from None
    except (OSError, EOFError) as error:
        raise CorpusError(f"{path}: cannot be read ({error}); check the file or leave it out.") from None
    except Exception as error:  # pyarrow's own errors: a corrupt or truncated parquet file
        if isinstance(error, CorpusError):
            raise
        raise CorpusError(f"{path}: cannot be read ({error}); check the file or leave it out.") from None


def _hub_records(name: str, split: str | None) -> Iterator[tuple[dict, str]]:
    try:
        import datasets
    except ImportError:
        raise CorpusError(
            f"{name!r} is not a file or folder here; to stream it as a Hugging Face dataset,"
            " `pip install datasets` (optional, not in requirements.txt)."
        ) from None
    stream = datasets.load_dataset(name, split=split or "train", streaming=True)
    for n, record in enumerate(stream):
        yield record, f"{name}:{n}"


def read_documents(source: str | Path, split: str | None = None) -> Iterator[Document]:
    """Documents of a corpus in their fixed order; see the module doc for formats."""
    path = Path(source)
    if path.exists():
        records = (item for file in corpus_files(path) for item in _checked_records(file))
    elif _suffix(path) is None and str(source).count("/") <= 1 and not str(source).startswith((".", "/")):
        records = _hub_records(str(source), split)
    else:
        raise CorpusError(f"{source}: no such file or folder; give a corpus file, a folder or a dataset name.")
    index = 0
    for record, default_id in records:
        if split is not None and record.get("split", split) != split:
            continue
        text = record.get("text")
        if not isinstance(text, str):
            raise CorpusError(f"{default_id}: record has no string `text` field; every record needs one.")
        domain = record.get("domain")
        yield Document(index, text, None if domain is None else str(domain), str(record.get("id", default_id)))
        index += 1


def _checked_records(path: Path) -> Iterator[tuple[dict, str]]:
    empty = True
    for item in _records(path):
        empty = False
        yield item
    if empty:
        raise CorpusError(f"{path}: empty corpus file; remove it or fill it.")


def describe_corpus(source: str | Path, split: str | None) -> str:
    """How an index's meta names its corpus: the source, and the split when one was chosen."""
    return f"{source}" + (f" (split {split})" if split else "")


def parse_corpus_description(description: str) -> tuple[str, str | None]:
    """(source, split) back from describe_corpus's text."""
    source, marker, split = description.rpartition(" (split ")
    if marker and split.endswith(")"):
        return source, split[:-1]
    return description, None
