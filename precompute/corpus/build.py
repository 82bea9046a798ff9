"""The embedded default model's training corpus: labelled domains, built offline.

Sources, all local and deterministic:
- Python code: the standard library's own .py files (tests and generated tables left out),
  cut into chunks of at most MAX_CODE_CHUNK characters at top-level statement boundaries.
- English registers (precompute/corpus/registers.py): scripture (King James Bible), dictionary
  (GCIDE, Webster 1913), manual (Linux man-pages) and legal (licence texts), from Debian packages
  (`apt-get install -y bible-kjv dict-gcide manpages`).
- German, Spanish and Italian: Debian's fortune cookie packages
  (`apt-get install -y fortunes-de fortunes-es fortunes-it`), one document per
  fortune (fortunes are separated by a line holding only `%`). The offensive sets
  (`off/` directories, anything named offensive) are never read.
English fortunes by topic (computing, science, ...) were domains until the model showed no split
between them: they are one register, too alike to switch off apart.

Every document is labelled with its domain; each domain is capped at MAX_DOMAIN_CHARS
(documents kept in hash order, so the cut is an even sample), and about HELDOUT_PERCENT %
of each domain is held out by hash. Output: corpus.jsonl.gz (id, text, domain, split) and
manifest.json (per-domain counts, source versions). The shipped copy lives in assets/corpus,
so tests and CI never rebuild it.

    python -m precompute corpus --out assets/corpus
"""

import gzip
import hashlib
import json
import logging
import subprocess
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from precompute.cli import option
from precompute.corpus import registers

log = logging.getLogger(__name__)

FORTUNES = Path("/usr/share/games/fortunes")
MAX_DOMAIN_CHARS = 1_000_000
MAX_CODE_CHUNK = 2_000
MIN_DOC_CHARS = 20
HELDOUT_PERCENT = 5

# English registers: domain -> reader of (unit id, chunks); None when its package is missing.
ENGLISH_REGISTERS = {
    "scripture": registers.scripture_units,
    "dictionary": registers.dictionary_units,
    "manual": registers.manual_units,
    "legal": lambda: registers.legal_units(python_licence=Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"),
}
# Whole language packages; ASCII-art and banner files carry no language.
LANGUAGE_DOMAINS = {"german": "de", "spanish": "es", "italian": "it"}
LANGUAGE_SKIP = {"asciiart", "banner"}
CODE_DOMAIN = "python"
CODE_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "encodings", "pydoc_data", "ensurepip"}
CODE_SKIP_FILES = {"this.py"}  # rot13 text, not code
PACKAGES = [
    "bible-kjv",
    "bible-kjv-text",
    "dict-gcide",
    "manpages",
    "base-files",
    "fortunes-de",
    "fortunes-es",
    "fortunes-it",
]


def stable_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")


def split_of(key: str) -> str:
    return "heldout" if stable_hash("split:" + key) % 100 < HELDOUT_PERCENT else "train"


def read_text(path: Path) -> str | None:
    """The file as UTF-8 text, or None (with a warning) when it cannot be read or decoded."""
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        log.warning("skipping %s: %s", path, error)
        return None


def parse_fortunes(text: str) -> list[str]:
    """Fortunes of one file: the blocks between lines that hold only `%`."""
    fortunes, block = [], []
    for line in text.splitlines():
        if line.rstrip() == "%":
            fortunes.append("\n".join(block).strip("\n"))
            block = []
        else:
            block.append(line.rstrip())
    fortunes.append("\n".join(block).strip("\n"))
    return [f for f in fortunes if len(f.strip()) >= MIN_DOC_CHARS]


def chunk_code(text: str, max_chars: int = MAX_CODE_CHUNK) -> list[str]:
    """Cut source into chunks of at most max_chars, preferring top-level statement starts."""
    chunks, lines, size = [], [], 0

    def flush():
        nonlocal lines, size
        chunk = "".join(lines).strip("\n")
        if len(chunk.strip()) >= MIN_DOC_CHARS:
            chunks.append(chunk)
        lines, size = [], 0

    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:  # a single overlong line (data tables): hard cut
            flush()
            lines, size = [line[:max_chars]], max_chars
            line = line[max_chars:]
        top_level = line[:1] not in ("", " ", "\t", "\n", ")", "]", "}")
        if size + len(line) > max_chars or (top_level and size >= max_chars // 2):
            flush()
        lines.append(line)
        size += len(line)
    flush()
    return chunks


def fortune_files(folder: Path, names: list[str] | None = None) -> list[Path]:
    """Regular fortune text files of one folder (no .dat indexes, no .u8 or other links).

    Only the folder's own files are listed, so the offensive `off/` subfolders are never entered.
    """
    paths = [folder / name for name in names] if names is not None else sorted(folder.iterdir())
    return [
        path
        for path in paths
        if path.is_file()
        and not path.is_symlink()
        and path.suffix not in (".dat", ".u8")
        and "offensive" not in path.name
    ]


def fortune_documents(domain: str, files: list[Path], root: Path = FORTUNES) -> list[dict]:
    docs = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        source = path.relative_to(root).as_posix()
        for k, fortune in enumerate(parse_fortunes(text)):
            doc_id = f"{domain}/{source}#{k}"
            docs.append({"id": doc_id, "text": fortune, "domain": domain, "split": split_of(doc_id)})
    return docs


def code_documents(stdlib: Path) -> list[dict]:
    docs = []
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if CODE_SKIP_DIRS & set(relative.parts[:-1]) or relative.name in CODE_SKIP_FILES:
            continue
        if relative.name.startswith("_sysconfigdata") or relative.parts[0].startswith("config-"):
            continue
        text = read_text(path)
        if text is None:
            continue
        split = split_of(relative.as_posix())  # whole files are held out, never half a file
        for k, chunk in enumerate(chunk_code(text)):
            doc_id = f"{CODE_DOMAIN}/{relative.as_posix()}#{k}"
            docs.append({"id": doc_id, "text": chunk, "domain": CODE_DOMAIN, "split": split})
    return docs


def register_documents(domain: str, units: list[tuple[str, list[str]]]) -> list[dict]:
    """Documents of one English register: each unit's chunks, held out together by the unit's hash."""
    docs = []
    for unit, chunks in units:
        split = split_of(f"{domain}/{unit}")
        for k, chunk in enumerate(chunks):
            if len(chunk.strip()) >= MIN_DOC_CHARS:
                docs.append({"id": f"{domain}/{unit}#{k}", "text": chunk, "domain": domain, "split": split})
    return docs


def cap_domain(docs: list[dict], max_chars: int) -> list[dict]:
    """Drop exact duplicates, then keep documents in hash order up to max_chars; sorted by id."""
    seen, unique = set(), []
    for doc in docs:
        if doc["text"] not in seen:
            seen.add(doc["text"])
            unique.append(doc)
    kept, total = [], 0
    for doc in sorted(unique, key=lambda d: stable_hash(d["id"])):
        if total + len(doc["text"]) > max_chars:
            continue
        kept.append(doc)
        total += len(doc["text"])
    return sorted(kept, key=lambda d: d["id"])


def package_version(package: str) -> str | None:
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def missing_packages() -> list[str]:
    """The Debian packages of the corpus sources that this machine lacks (the corpus can still be built
    without them, with those domains empty and a warning)."""
    return [p for p in PACKAGES if package_version(p) is None]


def collect_documents(max_domain_chars: int = MAX_DOMAIN_CHARS) -> list[dict]:
    """All documents of all domains, capped and labelled, in a deterministic order."""
    by_domain = {CODE_DOMAIN: code_documents(Path(sysconfig.get_paths()["stdlib"]))}
    for domain, read_units in ENGLISH_REGISTERS.items():
        units = read_units()
        by_domain[domain] = register_documents(domain, units) if units is not None else []
    for domain, folder in LANGUAGE_DOMAINS.items():
        files = [p for p in fortune_files(FORTUNES / folder) if p.name not in LANGUAGE_SKIP]
        by_domain[domain] = fortune_documents(domain, files)
    docs = []
    for domain in sorted(by_domain):
        if not by_domain[domain]:
            log.warning("domain %s has no documents (is its package installed?)", domain)
        docs.extend(cap_domain(by_domain[domain], max_domain_chars))
    return docs


def manifest_of(docs: list[dict]) -> dict:
    domains = {}
    for domain in sorted({d["domain"] for d in docs}):
        mine = [d for d in docs if d["domain"] == domain]
        splits = Counter(d["split"] for d in mine)
        domains[domain] = {
            "docs": len(mine),
            "train_docs": splits["train"],
            "heldout_docs": splits["heldout"],
            "chars": sum(len(d["text"]) for d in mine),
            "sources": sorted({d["id"].split("/", 1)[1].split("#")[0] for d in mine}),
        }
    return {
        "format": "jsonl.gz, one document per line: id, text, domain, split (train | heldout)",
        "domains": domains,
        "total_docs": len(docs),
        "total_chars": sum(len(d["text"]) for d in docs),
        "heldout_percent": HELDOUT_PERCENT,
        "max_domain_chars": MAX_DOMAIN_CHARS,
        "sources": {
            "python": f"CPython {sys.version.split()[0]} standard library",
            **{p: package_version(p) for p in PACKAGES},
        },
    }


def write_corpus(docs: list[dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # mtime=0 and no file name in the gzip header: the same documents give the same bytes
    with (
        open(out_dir / "corpus.jsonl.gz", "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        for doc in docs:
            gz.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
    manifest = json.dumps(manifest_of(docs), indent=1, ensure_ascii=False)
    (out_dir / "manifest.json").write_text(manifest + "\n", encoding="utf-8")


def build_corpus(out_dir: str | Path, max_domain_chars: int = MAX_DOMAIN_CHARS) -> dict:
    """Build corpus.jsonl.gz and manifest.json in out_dir; returns the manifest."""
    docs = collect_documents(max_domain_chars)
    write_corpus(docs, Path(out_dir))
    return manifest_of(docs)


def load_corpus(path: str | Path = "assets/corpus") -> list[dict]:
    """The documents of a built corpus (a folder holding corpus.jsonl.gz, or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@dataclass
class CorpusOptions:
    """Options of `python -m precompute corpus`."""

    out: str = option("assets/corpus", "output folder (corpus.jsonl.gz, manifest.json)")
    max_domain_chars: int = option(MAX_DOMAIN_CHARS, "cap on the characters of each domain")


def run_corpus(options: CorpusOptions) -> None:
    """Build the corpus and print its domains (a few seconds: no progress bar needed)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    manifest = build_corpus(options.out, options.max_domain_chars)
    for domain, stats in manifest["domains"].items():
        print(f"{domain:14s} {stats['docs']:6d} docs {stats['chars']:9d} chars ({stats['heldout_docs']} held out)")
