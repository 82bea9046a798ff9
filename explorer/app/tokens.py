"""Text to token ids with request limits, and token ids back to display pieces that add up to the text."""

import re

REPLACEMENT = "\ufffd"  # what a decoder prints for an incomplete multi-byte character


class RequestRejected(ValueError):
    """A request the app will not run (empty, too long, malformed); the message is shown as it is in the page."""


def encode(tokenizer, text: str, max_tokens: int, what: str = "text") -> list[int]:
    """Token ids of `text`, refusing empty text and text longer than `max_tokens` tokens."""
    if not text or not text.strip():
        raise RequestRejected(f"The {what} is empty: type some text first.")
    if len(text) > 40 * max_tokens:  # cheap guard before tokenizing a huge paste
        raise RequestRejected(f"The {what} is too long ({len(text):,} characters): the limit is {max_tokens:,} tokens.")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise RequestRejected(f"The {what} has no tokens.")
    if len(ids) > max_tokens:
        raise RequestRejected(f"The {what} has {len(ids):,} tokens: the limit is {max_tokens:,}. Shorten it.")
    return ids


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds when the ids are decoded in order, so the pieces join to the decoded text.

    Decoding one id alone loses a SentencePiece word's leading space and splits multi-byte characters
    into replacement marks; decoding growing prefixes does not. A token that only starts a character
    gets "" and the token completing it gets the whole character.
    """
    pieces, previous = [], ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end]).rstrip(REPLACEMENT)
        if text.startswith(previous):
            pieces.append(text[len(previous) :])
            previous = text
        else:  # the decoder rewrote earlier text (rare normalisation): fall back to the token alone
            pieces.append(tokenizer.decode(ids[end - 1 : end]))
            previous = text
    return pieces


# -- tokens shown alone ---------------------------------------------------------------------------------------
BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte tokens


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE (GPT-2 style): the printable character that stands for each byte in the vocabulary."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    alphabet, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + extra)] = byte
            extra += 1
    return alphabet


BYTE_LEVEL = _byte_level_alphabet()


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The bytes a token stands for, when its vocabulary entry says (byte fallback or byte-level BPE), else None."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str) or not piece:
        return None
    match = BYTE_FALLBACK.fullmatch(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    if all(char in BYTE_LEVEL for char in piece):
        return bytes(BYTE_LEVEL[char] for char in piece)
    return None


def bytes_text(raw: bytes) -> str:
    """Valid UTF-8 as text, each byte of an incomplete character as ⟨e2⟩ (no spaces: a page draws those)."""
    decoded = raw.decode("utf-8", errors="surrogateescape")  # an undecodable byte b becomes U+DC00 + b
    return re.sub("[\udc80-\udcff]", lambda byte: f"\u27e8{ord(byte.group()) - 0xDC00:02x}\u27e9", decoded)


def lone_token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text when shown alone; one holding only part of a multi-byte character shows its bytes
    (⟨e2⟩⟨80⟩) instead of the decoder's replacement mark (or its vocabulary entry, when the bytes are unknown)."""
    texts = []
    for token_id in ids:
        text = tokenizer.decode([token_id])
        if REPLACEMENT in text:
            raw = token_bytes(tokenizer, token_id)
            text = bytes_text(raw) if raw is not None else str(tokenizer.convert_ids_to_tokens(token_id))
        texts.append(text)
    return texts


def window_pieces(tokenizer, ids: list[int]) -> list[str]:
    """token_pieces for a window cut out of a longer text (or written by a model): bytes that make no whole
    character inside it (a character cut at either end, or invalid UTF-8) show as bytes (lone_token_texts)."""
    lone = lone_token_texts(tokenizer, ids)
    start = 0
    while start < len(ids):
        raw = token_bytes(tokenizer, ids[start])
        if not raw or raw[0] & 0xC0 != 0x80:  # not a UTF-8 continuation byte: decoding can start here
            break
        start += 1
    pieces = lone[:start] + token_pieces(tokenizer, ids[start:])
    waiting: list[int] = []  # tokens that gave "" (the first bytes of a character) since the last clean piece
    for k, piece in enumerate(pieces):
        if piece == "":
            waiting.append(k)
        elif REPLACEMENT in piece:  # bytes that make no character: this token and those before it show their bytes
            for w in [*waiting, k]:
                pieces[w] = lone[w]
            waiting = []
        else:
            waiting = []
    for w in waiting:  # cut at the end: the rest of the character lies beyond
        pieces[w] = lone[w]
    return pieces
