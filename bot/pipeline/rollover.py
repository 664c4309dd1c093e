"""Cutting a long answer into messages without breaking a code block: the one splitter every writer uses.

It cuts Claude's Markdown (a streamed message, or a posted one before it is rendered) and rendered mrkdwn
(a private answer) alike. In both, a code block runs from a fence line to the fence line that closes it, by
CommonMark's rule: the same character, at least as long, nothing after it (so a ``` line inside a ````
block is content). Our mrkdwn fences are always ``` alone on a line, or after "> " in a quote, and a run of
three backticks anywhere else in it is broken by a word joiner (see `mrkdwn`). A cut falls at a paragraph,
a line or a space when one is near, never inside an entity, a <link> or a run of backticks; a block open at
the cut is closed at the end of the piece and reopened at the start of the next, so no text is lost,
repeated or left outside its block.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MIN_ROOM", "Fence", "fenced_lines", "fitting_head", "open_fence", "roll_over", "split_message"]

# A fence line: in a quote after its ">"s, up to three spaces, then ``` or ~~~ and perhaps an info string
# (with no backtick after a backtick fence).
_FENCE_LINE = re.compile(r"(?P<quote>(?:> ?)*) {0,3}(?P<marker>`{3,}(?=[^`]*$)|~{3,})(?P<info>.*)")
_QUOTE = re.compile(r"(?:> ?)*")
_NUMBERED_ITEM = re.compile(r"(?P<indent> *)(?P<number>\d{1,9})(?P<delimiter>[.)])[ \t]")
_TABLE_DELIMITER = re.compile(r"\s*\|(?:\s*:?-+:?\s*\|)+\s*")  # | --- | :-: |
# Atoms a cut must never fall inside: fence lines, entities, <links>, [links](…), and runs of backticks.
_ATOM = re.compile(
    r"(?m)^(?:> ?)* {0,3}(?:`{3,}[^`\n]*|~{3,}.*)$|&(?:#\d+|#x[0-9a-fA-F]+|\w+);|<[^<>\n]*>|`{3,}"
    r"|!?\[[^\[\]\n]*\]\((?:[^()\s]|\([^()\s]*\))*\)"
)
MIN_ROOM = 16  # the smallest piece worth cutting: a closing fence and some text


@dataclass(frozen=True, slots=True)
class Fence:
    """The fence of an open code block, as its line began: "```", "````", "~~~" or "> ```"."""

    quote: str  # the quote markers before it
    marker: str

    @property
    def line(self) -> str:
        return f"{self.quote}{self.marker}"

    def closed_by(self, line: str) -> bool:
        match = _FENCE_LINE.fullmatch(line)
        return (
            match is not None
            and match["quote"].count(">") == self.quote.count(">")
            and match["marker"][0] == self.marker[0]
            and len(match["marker"]) >= len(self.marker)
            and not match["info"].strip()
        )


def open_fence(text: str) -> Fence | None:
    """The fence of a code block still open at the end of `text`, if one is."""
    return fenced_lines(text)[1]


def fenced_lines(text: str) -> tuple[list[bool], Fence | None]:
    """Whether each line of `text` is in a code block (its fence lines too), and the fence of the block
    still open at the end."""
    in_code: list[bool] = []
    fence: Fence | None = None
    for line in text.split("\n"):
        if fence is not None and fence.closed_by(line):
            fence = None
            in_code.append(True)
            continue
        if fence is not None and _quote_of(line).count(">") < fence.quote.count(">"):
            fence = None  # its quote ended, and so did the block
        if fence is None and (match := _FENCE_LINE.fullmatch(line)) is not None:
            fence = Fence(match["quote"], match["marker"])
        in_code.append(fence is not None)
    return in_code, fence


def _table_head(text: str) -> str:
    """The header and delimiter rows of the table that `text` ends inside of, if it does ("" if not)."""
    lines = text.split("\n")
    top = len(lines)
    while top > 0 and lines[top - 1].lstrip().startswith("|"):
        top -= 1
    rows = lines[top:]
    if len(rows) < 3 or not _TABLE_DELIMITER.fullmatch(rows[1]):  # a header, its delimiter, then rows
        return ""
    return f"{rows[0]}\n{rows[1]}\n"


def _numbered_on(head: str, tail: str) -> str:
    """`tail` with its first line, if it is an item of a numbered list that `head` ends inside of,
    numbered on from that list's items in `head` (Markdown numbers a list from its first item only)."""
    first = _NUMBERED_ITEM.match(tail)
    if first is None:
        return tail
    indent, delimiter = first["indent"], first["delimiter"]
    start, items = None, 0
    for line in reversed(head.split("\n")):
        item = _NUMBERED_ITEM.match(line)
        if item and item["indent"] == indent and item["delimiter"] == delimiter:
            start, items = int(item["number"]), items + 1
        elif line.strip() and len(line) - len(line.lstrip(" ")) <= len(indent):
            break  # the list ended before this line
    if start is None:
        return tail
    return f"{indent}{start + items}{delimiter}{tail[first.end('delimiter') :]}"


def _quote_of(line: str) -> str:
    """The quote markers a line opens with ("> ", "> > "), if any."""
    match = _QUOTE.match(line)
    return match.group() if match else ""


def roll_over(sent: str, pending: str, room: int, *, markdown: bool = True) -> tuple[str, str]:
    """Split `pending`, which follows `sent` in one message, so that the head fits `room` (the head may be
    empty when `room` is tiny); a code block open at the cut is closed at the end of the head and reopened
    at the start of the tail. In `markdown`, a table cut in two gets its header again, and a numbered
    list its next number."""
    if len(pending) <= room:
        return pending, ""
    if room <= 0:  # full: all of it goes to the next message
        return "", pending
    cut, resume = _cut_point(pending, room)
    if sent and cut == resume and cut:  # no good place to cut in what fits: all of it goes on to the next
        return "", pending
    fence = open_fence(sent + pending[:cut])
    if fence is not None:  # cut again, leaving room to close the block
        if room <= len(fence.line) + 1 and sent:  # no room to: the next message takes it all
            return "", pending
        cut, resume = _cut_point(pending, max(room - len(fence.line) - 1, 1))
        fence = open_fence(sent + pending[:cut])
    head, tail = pending[:cut].rstrip(), pending[resume:].lstrip("\n")
    if pending[cut:].partition("\n")[0].strip() and (fence is None or fence.quote):
        # a quoted line cut in two (not code content that looks like one): both halves are quoted
        tail = _quote_of((sent + pending[:cut]).rpartition("\n")[2]) + tail
    if fence is None:
        if not markdown:  # rendered text: what it shows is already written out
            return head, tail
        if tail.lstrip().startswith("|"):  # a table cut in two: its rows go on under its header again
            tail = _table_head(sent + head) + tail
        return head, _numbered_on(sent + head, tail)
    first_line, _, after = tail.partition("\n")
    if fence.closed_by(first_line):  # the block was about to close anyway: ours replaces its fence
        return f"{head}\n{fence.line}", after.lstrip("\n")
    return f"{head}\n{fence.line}", f"{fence.line}\n{tail}"


def split_message(text: str, limit: int = 3900) -> list[str]:
    """Split text into pieces of at most `limit` characters (see `roll_over`)."""
    if limit < MIN_ROOM:
        raise ValueError(f"limit too small to fit code fences: {limit}")
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        head, rest = roll_over("", rest, limit, markdown=False)
        pieces.append(head)
    return [piece for piece in pieces if piece.strip()]


def fitting_head(text: str, room: int, fits: Callable[[str], bool]) -> tuple[str, str]:
    """The longest head, from `room` characters down, that `fits` (say, whose rendering fits a message),
    and the rest."""
    while True:
        head, tail = roll_over("", text, room)
        if fits(head) or room < 200:
            return head, tail
        room = room * 3 // 4


def _cut_point(text: str, budget: int) -> tuple[int, int]:
    """Where to end this piece (`cut`) and start the next (`resume`), with cut <= budget; never within the
    fence line that opens `text` nor before anything of its block's content, never within the quote
    markers that open it (each would come back in the next piece: no progress)."""
    first_line = text.partition("\n")[0]
    lowest = len(first_line) + 2 if _FENCE_LINE.fullmatch(first_line) else len(_quote_of(first_line)) + 1
    atoms = []
    for match in _ATOM.finditer(text):
        if match.start() >= budget:
            break
        atoms.append(match.span())

    def safe(i: int) -> bool:
        return not any(start < i < end for start, end in atoms)

    def opens_a_fence(resume: int) -> bool:  # what followed on the line would start the next piece as a fence
        return (
            text[resume - 1] != "\n" and _FENCE_LINE.fullmatch(text[resume:].partition("\n")[0]) is not None
        )

    for sep, floor in (("\n\n", budget // 2), ("\n", budget // 2), (" ", 1)):
        floor = max(floor, lowest)
        i = text.rfind(sep, floor, budget + len(sep))  # the separator itself is dropped
        while i >= floor and (not safe(i) or opens_a_fence(i + len(sep))):
            i = text.rfind(sep, floor, i)
        if i >= floor and text[:i].strip():
            return i, i + len(sep)
    i = budget
    while i >= lowest and (not safe(i) or opens_a_fence(i)):
        i -= 1
    return (i, i) if i >= lowest else (budget, budget)
