"""Rolling a long answer over into the next message: cut near a boundary, never break a code block."""

from __future__ import annotations

import re

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
FENCE_ROOM = 8  # what closing a fence adds to a message: "\n" plus the fence


def open_fence(markdown: str) -> str | None:
    """The fence of a code block still open at the end of `markdown`, if one is."""
    fence: str | None = None
    for line in markdown.split("\n"):
        match = _FENCE.match(line)
        if match is None:
            continue
        marker = match.group(1)
        if fence is None:
            fence = marker
        elif marker[0] == fence[0] and len(marker) >= len(fence) and line.strip() == marker:
            fence = None
    return fence


def cut(text: str, room: int) -> tuple[str, str]:
    """A head of at most `room` characters and the rest, cut at a paragraph, line or word when one is near."""
    if len(text) <= room:
        return text, ""
    window = text[:room]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at >= room // 2:
            return text[:at], text[at + len(separator) :]
    return window, text[room:]


def roll_over(sent: str, pending: str, room: int) -> tuple[str, str]:
    """Split `pending` after `sent` so the head fits `room`; a code block open at the cut is closed
    at the end of the head and reopened at the start of the tail."""
    if len(pending) <= room:
        return pending, ""
    head, tail = cut(pending, max(room - FENCE_ROOM, 1))
    fence = open_fence(sent + head)
    if fence is not None:
        head = f"{head}\n{fence}"
        tail = f"{fence}\n{tail}"
    return head, tail
