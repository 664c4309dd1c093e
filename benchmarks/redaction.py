"""Redaction's cost: 200 KB of ordinary engineering messages, a call per message as the prompt makes."""

from __future__ import annotations

import gc
import time

from benchmarks.harness import REPO
from benchmarks.stats import Summary
from bot.config import PERSONAL_DATA
from bot.pipeline.redaction import Redactor

CORPUS = REPO / "tests" / "corpus" / "engineering_messages.txt"
PROMPT_CHARS = 200_000
# Fake but well-formed values, added to every tenth message: a busier thread than most.
SPRINKLES = (
    ("the corpus as it is", ""),
    (
        "a token, an email and a phone in every 10th message",
        " xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx ada@example.com +1 415 555 0134",
    ),
    # Slack's escaping (decoded, then mapped back) and a value after a password-like name.
    ("an escaped password and a quote in every 10th message", " PGPASSWORD=Tr0ub4dor&amp;3 &gt; said so"),
)


def messages(sprinkle: str) -> list[str]:
    corpus = CORPUS.read_text(encoding="utf-8").split("\n%%\n")
    batch: list[str] = []
    size = 0
    while size < PROMPT_CHARS:
        for message in corpus:
            if sprinkle and len(batch) % 10 == 0:
                message += sprinkle
            batch.append(message)
            size += len(message)
    return batch


def time_redaction(batch: list[str], personal: frozenset[str], repeats: int) -> Summary:
    samples = []
    for _ in range(repeats):
        redactor = Redactor(secrets=True, personal=personal)  # one per request, as the bot makes them
        gc.collect()
        started = time.perf_counter()
        for message in batch:
            redactor(message)
        samples.append(time.perf_counter() - started)
    return Summary.of(samples, scale=1000)


def redaction_lines(repeats: int) -> list[str]:
    kilobytes = PROMPT_CHARS // 1000
    lines = [f"Redaction of {kilobytes} KB of messages, a call per message ({repeats} runs; ms p50/p95/p99)"]
    for what, sprinkle in SPRINKLES:
        batch = messages(sprinkle)
        for label, personal in (("secrets only", frozenset()), ("all kinds", frozenset(PERSONAL_DATA))):
            summary = time_redaction(batch, personal, repeats)
            lines.append(f"  {what:<54} {label:<13} {summary.triple(1)}")
    return lines


if __name__ == "__main__":
    print("\n".join(redaction_lines(20)))  # noqa: T201
