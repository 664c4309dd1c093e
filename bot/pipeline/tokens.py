"""What text costs of the context budget, estimated before anything is sent (the API counts the real
tokens): the reader stops by it (`bot.pipeline.context`), files are measured by it (`bot.pipeline.files`)
and the prompt is cut to it (`bot.pipeline.prompt`).

English and code run about four characters a token. Claude spends about a token on each kana, kanji or
hangul, so every character outside ASCII counts as a whole token: about right for those, and an
overcount, on the safe side, for accented, Cyrillic or Greek text."""

from __future__ import annotations

CHARS_PER_TOKEN = 4  # ASCII
TOKENS_PER_MESSAGE = 4  # the speaker prefix and separators


def estimate_tokens(text: str) -> int:
    return _tokens(text) + TOKENS_PER_MESSAGE


def cut_to(text: str, tokens: int, *, from_end: bool = False) -> str:
    """The longest start of `text` (or end, `from_end`) estimated at no more than `tokens`, and no longer
    than that many tokens of ASCII."""

    def piece(size: int) -> str:
        return text[len(text) - size :] if from_end else text[:size]

    lo, hi = 0, min(len(text), max(0, tokens) * CHARS_PER_TOKEN)
    while lo < hi:  # a longer piece never costs less: the longest that fits, by halving
        mid = (lo + hi + 1) // 2
        if _tokens(piece(mid)) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return piece(lo)


def _tokens(text: str) -> int:
    if text.isascii():
        return len(text) // CHARS_PER_TOKEN
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars // CHARS_PER_TOKEN + len(text) - ascii_chars
