"""Text to token ids with request limits, and token ids back to display pieces that add up to the text."""

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
