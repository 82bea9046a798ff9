"""English registers from Debian packages: scripture, dictionary, manual pages and licences.

Each register is one domain whose vocabulary and style differ from the others', so a small model
can learn to route them apart (English fortunes by topic were too alike to split). Every reader
returns plain-text documents, cut into chunks of at most MAX_CHUNK characters at natural
boundaries (verses, paragraphs), in a deterministic order:
- scripture: the King James Bible (`bible-kjv-text`, read with `bible` from `bible-kjv`), one chapter
  per unit, verse numbers kept;
- dictionary: the Collaborative International Dictionary of English (`dict-gcide`: Webster 1913 and
  WordNet), one entry per document;
- manual: the Linux man-pages project (`manpages`), its troff turned into text by `troff_to_text`;
- legal: the licence texts of `/usr/share/common-licenses` (`base-files`) and Python's LICENSE.txt.
Held-out documents are chosen by a hash of their unit (a chapter, a man page, an entry, a chunk),
so a held-out chapter or page is never half in training.
"""

import gzip
import re
import subprocess
from collections import Counter
from pathlib import Path

MAX_CHUNK = 2_000
BIBLE_RANGE = "Gen1:1-Rev22:21"
GCIDE = Path("/usr/share/dictd")
MANPAGES_LIST = Path("/var/lib/dpkg/info/manpages.list")
LICENCES = Path("/usr/share/common-licenses")

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def chunk_lines(lines: list[str], max_chars: int = MAX_CHUNK, separator: str = "\n") -> list[str]:
    """Consecutive lines joined into chunks of at most max_chars (a longer line is a chunk of its own)."""
    chunks, current, size = [], [], 0
    for line in lines:
        if current and size + len(line) > max_chars:
            chunks.append(separator.join(current).strip())
            current, size = [], 0
        current.append(line)
        size += len(line) + len(separator)
    if current:
        chunks.append(separator.join(current).strip())
    return [c for c in chunks if c]


# ---------------------------------------------------------------- scripture


def bible_chapters(text: str) -> list[tuple[str, list[str]]]:
    """(chapter title, verse lines) of `bible -l0` output: a title line `Genesis 1`, then `  1 In the ...`."""
    chapters = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith(" "):
            if chapters:
                chapters[-1][1].append(line.strip())
        else:
            chapters.append((line.strip(), []))
    return [(title, verses) for title, verses in chapters if verses]


def scripture_units() -> list[tuple[str, list[str]]] | None:
    """(unit id, chunks) per chapter of the KJV, or None when the `bible` program is missing."""
    try:
        result = subprocess.run(["bible", "-l0", BIBLE_RANGE], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    chapters = bible_chapters(result.stdout.decode("utf-8", errors="replace"))
    return [(title, chunk_lines([title, *verses])) for title, verses in chapters]


# ---------------------------------------------------------------- dictionary


def _dictd_number(text: str) -> int:
    number = 0
    for char in text:
        number = number * 64 + _B64.index(char)
    return number


def dictionary_units(folder: Path = GCIDE) -> list[tuple[str, list[str]]] | None:
    """(headword, [entry]) per distinct entry of the dictd database (its .index points into the .dict.dz)."""
    index, data = folder / "gcide.index", folder / "gcide.dict.dz"
    if not index.is_file() or not data.is_file():
        return None
    body = gzip.decompress(data.read_bytes())  # dictzip is gzip-compatible
    units, seen, per_word = [], set(), Counter()
    for line in index.read_text(encoding="utf-8").splitlines():
        word, offset, length = line.split("\t")
        place = (_dictd_number(offset), _dictd_number(length))
        if word.startswith("00-database") or place in seen:
            continue
        seen.add(place)
        per_word[word] += 1  # a word with several entries (verb, noun): word, word~2, ...
        unit = word if per_word[word] == 1 else f"{word}~{per_word[word]}"
        entry = body[place[0] : place[0] + place[1]].decode("utf-8", errors="replace").strip()
        units.append((unit, chunk_lines(entry.splitlines())))
    return units


# ---------------------------------------------------------------- manual

_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_SIZE = re.compile(r"\\s[+-]?\d")
_NAMED = {"em": "--", "en": "-", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "bu": "*"}
_NAMED_CHAR = re.compile(r"\\(?:\(|\*\()(..)|\\\[([^\]]*)\]")
_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}
_WORDS = {"B", "I", "SM", "SB"}


def _inline(text: str) -> str:
    text = _FONT.sub("", _SIZE.sub("", text))
    text = _NAMED_CHAR.sub(lambda m: _NAMED.get(m.group(1) or m.group(2), ""), text)
    for escape, plain in (("\\-", "-"), ("\\e", "\\"), ("\\&", ""), ("\\ ", " "), ("\\~", " "), ("\\c", "")):
        text = text.replace(escape, plain)
    return text.replace("\\%", "").replace("\\|", "").replace("\\^", "")


def _arguments(text: str) -> list[str]:
    return [quoted or bare for quoted, bare in re.findall(r'"([^"]*)"|(\S+)', text)]


def troff_to_text(source: str) -> str:
    """Plain text of a man page: section titles kept as lines, requests dropped, font escapes removed."""
    lines, skipping = [], False
    for raw in source.splitlines():
        if raw.startswith(('.\\"', "'\\\"", '.\\"')):
            continue
        if raw.startswith((".TS", ".TE", ".EX", ".EE")):  # tables and code examples: not the register's prose
            skipping = raw.startswith((".TS", ".EX"))
            continue
        if skipping:
            continue
        if not raw.startswith((".", "'")):
            lines.append(_inline(raw))
            continue
        request, _, rest = raw[1:].strip().partition(" ")
        if request in ("SH", "SS"):
            lines += ["", _inline(rest.strip().strip('"'))]
        elif request in _ALTERNATING:
            lines.append(_inline("".join(_arguments(rest))))
        elif request in _WORDS or request in ("IP", "TP") and rest:
            lines.append(_inline(" ".join(_arguments(rest))))
        elif request in ("PP", "P", "LP", "sp", "TP", "IP"):
            lines.append("")
    text = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def manual_units(listing: Path = MANPAGES_LIST) -> list[tuple[str, list[str]]] | None:
    """(page, chunks) per English page of the `manpages` package (its own files, not other packages')."""
    if not listing.is_file():
        return None
    pages = sorted(p for p in listing.read_text().splitlines() if re.search(r"/man/man\d/[^/]+\.gz$", p))
    units = []
    for page in pages:
        path = Path(page)
        if path.is_symlink() or not path.is_file():
            continue
        source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        if source.lstrip().startswith(".so "):  # a link to another page
            continue
        text = troff_to_text(source)
        units.append((path.name.removesuffix(".gz"), chunk_lines(_paragraphs(text), separator="\n\n")))
    return units


def _paragraphs(text: str) -> list[str]:
    """Paragraphs (blank-line separated), so chunks cut between paragraphs."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


# ---------------------------------------------------------------- legal


def legal_units(folder: Path = LICENCES, python_licence: Path | None = None) -> list[tuple[str, list[str]]] | None:
    """(licence/chunk, [chunk]) per chunk of each licence text; a chunk is its own held-out unit (few files)."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    if python_licence is not None and python_licence.is_file():
        files.append(python_licence)
    units = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for k, chunk in enumerate(chunk_lines(_paragraphs(text), separator="\n\n")):
            units.append((f"{path.name}/{k}", [chunk]))
    return units
