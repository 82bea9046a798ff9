"""Expert labels, and how text with invisible characters is drawn: one home for both.

The index writer makes every expert's label here; the page draws tokens and labels with `visible`, so a
label and a token chip show a newline, a tab or a control character the same way.

A label names the tokens that distinguish an expert, not the ones it sees most: "." and "\\n" top
every expert's raw counts. For each token highlighted at the expert's stored examples (top contexts
and samples, each place once) it compares the token's share there with its share of the whole
indexed corpus (vocab.corpus_count): the log-odds ratio with an informative Dirichlet prior, as a
z-score (Monroe, Colaresi & Quinn 2008, "Fightin' Words", eq. 16-22):

    delta = log((n + a) / (N + A - n - a)) - log((c + a) / (C + A - c - a)),   a = A * c / C
    z     = delta / sqrt(1 / (n + a) + 1 / (c + a))

n of N examples highlight the token, c of the corpus' C tokens are it, A = PRIOR_TOKENS. The variance
term keeps a token seen once from outranking one the expert returns to again and again; a label word
must also be seen MIN_COUNT times and be clearly over-represented (z >= MIN_SCORE). When the domain
rule (explorer.index.domains) calls the expert specialised, its leading domain comes first:
"german: Hund · Katze".
"""

import unicodedata

import numpy as np
import polars as pl

LABEL_WORDS = 3
PRIOR_TOKENS = 100.0  # A: the prior's weight, in tokens, spread over the vocabulary as the corpus is
MIN_COUNT = 2  # a token must be highlighted at this many of the expert's examples to be a label word
MIN_SCORE = 1.96  # ... and over-represented there at about the 5% level
WORD_SEPARATOR = " · "
DOMAIN_SEPARATOR = ": "
REPLACEMENT = "\ufffd"  # a decoder's mark for part of a multi-byte character: never a label word

NEWLINE = "\u21b5"  # ↵
SPACE = "\u2423"  # ␣ (not "·": labels already separate their words with " · ")
EMPTY = "\u2205"  # ∅
# Whitespace drawn as symbols; other control characters by their ASCII names in angle brackets (⟨BS⟩, ⟨ESC⟩), the
# notation of bytes that are not a whole character (⟨e2⟩⟨80⟩). Not the U+2400 "control pictures" (␈): the fonts
# Linux machines fall back on (DejaVu) lack them and draw empty boxes.
SYMBOLS = {"\n": NEWLINE, "\t": "\u21e5", "\u00a0": "\u237d"}  # ↵ ⇥ ⍽ (no-break space)
CONTROL_NAMES = (  # noqa: SIM905 (the ASCII table, one line)
    "NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB ESC FS GS RS US"
).split()


def _symbol(char: str) -> str:
    if char in SYMBOLS:
        return SYMBOLS[char]
    if ord(char) < 0x20:
        return f"\u27e8{CONTROL_NAMES[ord(char)]}\u27e9"
    if char == "\x7f":
        return "\u27e8DEL\u27e9"
    if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):  # C1 controls, zero-width and direction marks
        return f"\u27e8U+{ord(char):04X}\u27e9"
    return char


def visible(text: str, spaces: bool = True) -> str:
    """Text with its whitespace and control characters drawn visibly (not yet escaped).

    The one place that decides how a token looks when shown alone (spaces=True): " the" is "␣the", a newline
    "↵", a tab "⇥", a backspace "⟨BS⟩", "" is "∅". With spaces=False, how running text and labels show what
    would otherwise be invisible (spaces stay spaces). A token holding only part of a multi-byte character
    comes here already written as its bytes (Explorer.token_texts), never as "\ufffd".
    """
    if text == "":
        return EMPTY if spaces else ""
    shown = "".join(_symbol(char) for char in text)
    return shown.replace(" ", SPACE) if spaces else shown


def label_word(text: str) -> str | None:
    """A token as a label word: the spaces around a word trimmed (" Hund" is "Hund"), a token of spaces, newlines or
    tabs drawn whole ("↵⇥⇥"); None for a token that is part of a character ("\ufffd") or decodes to nothing."""
    if not text or REPLACEMENT in text:
        return None
    word = text.strip(" ")
    return visible(word, spaces=False) if word else visible(text)


def token_scores(counts: pl.DataFrame, corpus_counts: np.ndarray) -> pl.DataFrame:
    """`counts` (slot, token_id, count: how many of the slot's examples highlight the token) with `score`, the
    z-score of the token's log-odds at the slot's examples against the corpus (see the module doc)."""
    corpus = np.asarray(corpus_counts, dtype=np.float64)
    total = max(float(corpus.sum()), 1.0)
    token_ids = counts["token_id"].to_numpy()
    looked_up = corpus[token_ids.clip(0, len(corpus) - 1)] if len(corpus) else np.zeros(len(counts))
    n, c = pl.col("count").cast(pl.Float64), pl.col("corpus")
    prior = PRIOR_TOKENS * c / total
    scored = counts.with_columns(corpus=pl.Series(looked_up)).with_columns(
        corpus=pl.max_horizontal("corpus", n),  # every highlighted token is in the corpus at least that often
        examples=n.sum().over("slot"),
    )
    delta = ((n + prior) / (pl.col("examples") + PRIOR_TOKENS - n - prior)).log() - (
        (c + prior) / (total + PRIOR_TOKENS - c - prior)
    ).log()
    return scored.with_columns(score=delta / (1 / (n + prior) + 1 / (c + prior)).sqrt()).drop("corpus", "examples")


def label_texts(scored: pl.DataFrame, vocab: list[str]) -> dict[int, str]:
    """Per slot of `scored` (token_scores' frame): its distinguishing tokens as words joined by " · ", best first.

    Words seen MIN_COUNT times and over-represented come first, at most LABEL_WORDS, each once; a slot with none
    (every token seen once) is named by its best-scored word alone."""
    words = [label_word(text) for text in vocab]
    ranked = (
        scored.with_columns(recurring=(pl.col("count") >= MIN_COUNT) & (pl.col("score") >= MIN_SCORE))
        .sort("slot", "recurring", "score", "token_id", descending=[False, True, True, False])
        .filter(pl.int_range(pl.len()).over("slot") < 4 * LABEL_WORDS)  # room for skipped words, fewer to loop over
    )
    labels = {}
    per_slot = ranked.group_by("slot", maintain_order=True).agg("token_id", "recurring")
    for slot, token_ids, recurring in per_slot.iter_rows():
        chosen, seen = [], set()
        for token_id, counts_as_word in zip(token_ids, recurring, strict=True):
            if chosen and not counts_as_word:
                break
            word = words[token_id] if 0 <= token_id < len(words) else None
            if word is None or word.casefold() in seen:
                continue
            chosen.append(word)
            seen.add(word.casefold())
            if len(chosen) == LABEL_WORDS or not counts_as_word:
                break
        labels[slot] = WORD_SEPARATOR.join(chosen)
    return labels


def with_domain(domain: str, label: str) -> str:
    """An expert's label led by the domain it is specialised in: "german: Hund · Katze"."""
    return f"{domain}{DOMAIN_SEPARATOR}{label}" if label else domain
