"""The shipped multi-domain corpus (assets/corpus), its builder and the byte-level BPE tokenizer."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from precompute.corpus import build as corpus
from precompute.corpus import registers
from precompute.training.tokenizer import SPECIAL_TOKENS, save_tokenizer, train_tokenizer

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "assets" / "corpus"
NON_ENGLISH = {"german", "spanish", "italian"}
SAMPLES = {
    "german": "Grüße aus Köln: Die Straße ist naß, Öl über Äpfel.",
    "spanish": "El niño comió piñata mañana; ¿qué año es? ¡Olé!",
    "italian": "Perché è così difficile? Più caffè, però.",
    "symbols": "x → y ≤ 3 · 10⁻³ 😀\tend\n",
}


@pytest.fixture(scope="module")
def docs():
    return corpus.load_corpus(SHIPPED)


@pytest.fixture(scope="module")
def tokenizer(docs):
    by_domain = Counter()
    sample = []
    for doc in docs:  # a few documents of every domain: enough for a small vocabulary, fast
        if doc["split"] == "train" and by_domain[doc["domain"]] < 60:
            by_domain[doc["domain"]] += 1
            sample.append(doc["text"])
    return train_tokenizer(sample, vocab_size=600)


def test_shipped_corpus_has_labelled_domains_and_splits(docs):
    domains = Counter(d["domain"] for d in docs)
    assert len(domains) >= 6
    assert len(NON_ENGLISH & set(domains)) >= 2
    assert "python" in domains
    assert all(d["text"] and d["id"] and d["domain"] and d["split"] in ("train", "heldout") for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)
    for domain in domains:
        splits = Counter(d["split"] for d in docs if d["domain"] == domain)
        assert splits["train"] > 5 * splits["heldout"] > 0, domain  # about 5 %, by unit (a page, a chapter)


def test_manifest_matches_corpus(docs):
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["total_docs"] == len(docs)
    for domain, stats in manifest["domains"].items():
        mine = [d for d in docs if d["domain"] == domain]
        assert stats["docs"] == len(mine)
        assert stats["chars"] == sum(len(d["text"]) for d in mine)
        assert stats["chars"] <= manifest["max_domain_chars"]
    assert (SHIPPED / "corpus.jsonl.gz").stat().st_size < 8_000_000


def test_no_offensive_sources(docs):
    assert not [d["id"] for d in docs if "/off/" in d["id"] or "offensive" in d["id"]]


def test_parse_fortunes_splits_on_percent_lines():
    text = "First fortune, long enough.\n\t-- Someone\n%\n%\nSecond fortune, also long.\n%  \nx\n"
    assert corpus.parse_fortunes(text) == ["First fortune, long enough.\n\t-- Someone", "Second fortune, also long."]


def test_chunk_code_bounds_chunks_and_keeps_text():
    source = "".join(f"def f{k}(x):\n    return x + {k}\n\n" for k in range(200)) + "T = '" + "a" * 5000 + "'\n"
    chunks = corpus.chunk_code(source, max_chars=300)
    assert all(len(c) <= 300 for c in chunks)
    assert chunks[0].startswith("def f0(x):")
    assert "".join(chunks).replace("\n", "") == source.replace("\n", "")


def test_unreadable_files_are_skipped_with_a_warning(tmp_path, caplog):
    (tmp_path / "good").write_text("A perfectly fine fortune text.\n%\nAnother fine fortune here.\n")
    (tmp_path / "bad").write_bytes(b"Caf\xe9 in Latin-1, not UTF-8, long enough.\n%\n")
    files = corpus.fortune_files(tmp_path)
    assert [p.name for p in files] == ["bad", "good"]
    docs = corpus.fortune_documents("test", files, root=tmp_path)
    assert [d["id"] for d in docs] == ["test/good#0", "test/good#1"]
    assert "skipping" in caplog.text and "bad" in caplog.text


def test_split_is_a_stable_hash():
    assert corpus.split_of("german/de/zitate#1") == corpus.split_of("german/de/zitate#1")
    held = sum(corpus.split_of(f"doc#{k}") == "heldout" for k in range(10_000))
    assert 400 < held < 600  # about 5 %


@pytest.mark.skipif(bool(corpus.missing_packages()), reason="corpus packages not installed (see README's test command)")
def test_rebuild_reproduces_the_shipped_corpus(tmp_path):
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    if manifest["sources"]["python"] != f"CPython {sys.version.split()[0]} standard library":
        pytest.skip("a different Python version: its standard library differs")
    built = corpus.build_corpus(tmp_path)
    if built["sources"] != manifest["sources"]:
        pytest.skip("different Debian package versions")
    assert (tmp_path / "corpus.jsonl.gz").read_bytes() == (SHIPPED / "corpus.jsonl.gz").read_bytes()


def test_tokenizer_special_ids_and_byte_level_round_trip(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    for text in SAMPLES.values():
        ids = tokenizer.encode(text).ids
        assert 0 not in ids  # byte-level: nothing is unknown
        assert tokenizer.decode(ids) == text


def test_tokenizer_folder_loads_with_auto_tokenizer(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path, model_max_length=256)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (loaded.unk_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    ids = loaded(SAMPLES["german"])["input_ids"]
    assert ids[0] != loaded.bos_token_id  # no automatic BOS, like the conformance tokenizers
    assert loaded.decode(ids) == SAMPLES["german"]
    assert (
        loaded.decode(loaded("<s>" + SAMPLES["spanish"] + "</s>")["input_ids"], skip_special_tokens=True)
        == (SAMPLES["spanish"])
    )


def test_english_registers_are_domains_of_the_shipped_corpus(docs):
    domains = Counter(d["domain"] for d in docs)
    assert {"scripture", "dictionary", "manual", "legal"} <= set(domains)
    assert not {"computing", "science", "politics_law", "literature"} & set(domains)  # retired fortune topics


def test_chunk_lines_bounds_chunks_and_keeps_order():
    lines = [f"line {k} " + "x" * (k % 37) for k in range(300)]
    chunks = registers.chunk_lines(lines, max_chars=200)
    assert all(len(c) <= 200 for c in chunks)
    assert "\n".join(chunks) == "\n".join(lines)
    assert registers.chunk_lines(["a" * 500, "b"], max_chars=100) == ["a" * 500, "b"]  # an overlong line stays whole


def test_bible_chapters_read_titles_and_verses():
    text = "\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth.\n\nGenesis 2\n\n  1 Thus the heavens.\n"
    assert registers.bible_chapters(text) == [
        ("Genesis 1", ["1 In the beginning.", "2 And the earth."]),
        ("Genesis 2", ["1 Thus the heavens."]),
    ]


def test_troff_to_text_keeps_prose_and_drops_markup():
    source = "\n".join(
        [
            '.\\" a comment that must go',
            '.TH SIGNAL 7 2023-02-05 "Linux man-pages 6.03"',
            ".SH NAME",
            "signal \\- overview of signals",
            ".SH DESCRIPTION",
            "Each signal has a current",
            ".IR disposition ,",
            "see",
            ".BR sigaction (2).",
            ".PP",
            "Use \\fBkill\\fP \\(em or \\fIraise\\fR.",
            ".EX",
            "int main(void) { return 0; }",
            ".EE",
            ".TS",
            "l l.",
            "SIGHUP\tP1990",
            ".TE",
        ]
    )
    text = registers.troff_to_text(source)
    assert text == (
        "NAME\nsignal - overview of signals\n\nDESCRIPTION\nEach signal has a current\ndisposition,\nsee\n"
        "sigaction(2).\n\nUse kill -- or raise."
    )


def test_dictionary_units_follow_the_dictd_index(tmp_path):
    import gzip

    entries = [b'Abaca \\Ab"a*ca\\, n. A kind of hemp.\n', b'Abacus \\Ab"a*cus\\, n. A counting frame.\n']
    body = b"00-database-short\n GCIDE\n" + b"".join(entries)
    (tmp_path / "gcide.dict.dz").write_bytes(gzip.compress(body))

    def number(n: int) -> str:
        digits = ""
        while True:
            digits = registers._B64[n % 64] + digits
            n //= 64
            if n == 0:
                return digits

    first = body.index(entries[0])
    second = body.index(entries[1])
    index = [
        f"00-database-short\t{number(0)}\t{number(first)}",
        f"abaca\t{number(first)}\t{number(len(entries[0]))}",
        f"abacus\t{number(second)}\t{number(len(entries[1]))}",
        f"abacuses\t{number(second)}\t{number(len(entries[1]))}",  # a second headword of the same entry
    ]
    (tmp_path / "gcide.index").write_text("\n".join(index) + "\n")
    units = registers.dictionary_units(tmp_path)
    assert units == [("abaca", [entries[0].decode().strip()]), ("abacus", [entries[1].decode().strip()])]
    assert registers.dictionary_units(tmp_path / "missing") is None


def test_register_documents_hold_out_whole_units():
    units = [(f"Book {k}", [f"chunk {k}.{c} long enough to keep" for c in range(3)]) for k in range(400)]
    docs = corpus.register_documents("scripture", units)
    by_unit = {}
    for doc in docs:
        by_unit.setdefault(doc["id"].rsplit("#", 1)[0], set()).add(doc["split"])
    assert all(len(splits) == 1 for splits in by_unit.values())
    assert 0 < sum(splits == {"heldout"} for splits in by_unit.values()) < 60
