"""Redaction: secrets (and, if chosen, personal data) become typed placeholders before Claude sees them.

A Redactor lives for one request: the same value gets the same placeholder (`[email 1]`) within it,
and its table of values goes when the request ends.
"""

from __future__ import annotations


class Redactor:
    def __init__(self, *, secrets: bool = True, personal: frozenset[str] = frozenset()) -> None:
        self._secrets = secrets
        self._personal = personal
        self._placeholders: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return text

    @property
    def counts(self) -> dict[str, int]:
        """How many distinct values of each kind were replaced: for logs, never the values."""
        counts: dict[str, int] = {}
        for placeholder in self._placeholders.values():
            kind = placeholder[1:].rsplit(" ", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts
