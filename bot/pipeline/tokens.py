"""What text costs of the context budget, estimated before anything is sent (the API counts the real
tokens): the reader stops by it (`bot.pipeline.context`), files are measured by it (`bot.pipeline.files`)
and the prompt is cut to it (`bot.pipeline.prompt`)."""

from __future__ import annotations

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # the speaker prefix and separators


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE
