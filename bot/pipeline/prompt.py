"""Build Claude's input from what was read: turns, the budget, and one note on what was left out.

Pure functions over plain data, no clients. The conversation (oldest first, ending on the invoking
message) becomes alternating turns; every text is redacted first, oldest first, so that placeholders are
numbered as the thread was written; the budget then keeps the newest messages that fit, and the files of
kept messages while room remains. What was left out is said in one note, worded the same every time for
the same situation, so that an unchanged thread makes the same prompt.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from anthropic.types import ContentBlockParam, MessageParam, TextBlockParam

from bot.pipeline.ask import BotIdentity, FileRef, SlackMessage
from bot.pipeline.context import ts_micros
from bot.pipeline.files import Attached, Files
from bot.pipeline.tokens import cut_to, estimate_tokens

SHORTENED = " […its middle was left out to fit the context budget…] "
OVER_BUDGET = "over the context budget"
EARLIER_UNREAD = (
    "The oldest messages of this conversation were left out to fit the context budget; say so if the "
    "answer may depend on them."
)
# The window's start moves in steps of up to a quarter of the budget (`_stepped_start`), on a grid of
# times from 2**GRID_LEVELS microseconds (about 4.5 years) down to one.
STEP_FRACTION = 4
GRID_LEVELS = 47
_COUNTS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
# JSON may carry a lone UTF-16 surrogate ("\ud83d"); it cannot be encoded to send to Claude.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str
    blocks: tuple[ContentBlockParam, ...] = ()  # files, and text merged after them, in order


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    messages: list[MessageParam]
    kept: int  # Slack messages in the prompt
    omitted: int  # older Slack messages left out for the budget
    answer_privately: bool = False  # it holds a private thread that the answer's readers may not see


def people_to_name(messages: Iterable[SlackMessage], bot: BotIdentity) -> set[str]:
    """User ids whose display names the turns need: authors and people mentioned."""
    ids: set[str] = set()
    for message in messages:
        if message.user and not message.bot_id:
            ids.add(message.user)
        ids.update(_MENTION.findall(message.text))
    ids.discard(bot.user_id or "")
    return ids


def build_prompt(
    messages: Sequence[SlackMessage],
    *,
    bot: BotIdentity,
    names: Mapping[str, str],
    system: str,
    budget_tokens: int,
    viewed: Sequence[SlackMessage] = (),
    redact: Callable[[str], str] = str,
    files: Files | None = None,
    earlier_unread: bool = False,
    linked: Sequence[tuple[str, Sequence[SlackMessage]]] = (),
) -> Prompt:
    """Turn a conversation (oldest first, ending on the invoking message) into Claude's input.

    `viewed` is the channel an assistant thread's asker is viewing, read only because they asked
    about it; its newest messages get up to half the budget, in the system prompt. `redact` rewrites
    the text of every message sent, after the window is chosen (by the unredacted lengths): the
    conversation's oldest first, then the viewed channel's, so that placeholders are numbered from the
    window's start as the thread was written and do not depend on how far back the read went. `files`
    are the blocks fetched for the messages' files (`bot.pipeline.files`), or why each was left out.
    `earlier_unread`: the conversation goes back further than `messages`, which the reader stopped short
    of for the budget.

    Prompt caching wants the part of one question's prompt that the next question repeats to render
    byte for byte the same: every message renders from itself alone (a message is sent whole, with its
    files, or not at all; only the invoking message may be shortened or lose files), and the window's
    start moves in steps (`_stepped_start`), so the left-out note keeps its words for several questions.

    `linked` are the threads the question links to, as (channel id, messages oldest first): their newest
    messages share up to a third of the budget, and they go into the question's own turn, the last one,
    after its text, so that the system prompt and the earlier turns, the part prompt caching reuses, are
    the same bytes whether or not a question links to a thread.
    """
    nobody = BotIdentity(None, None)
    viewed_share = budget_tokens // 2
    shown = _window(viewed, nobody, names, viewed_share, None, stepped=False)
    budget_tokens -= shown.cost
    linked_windows = []
    for channel, thread in linked:
        share = budget_tokens // 3 // len(linked)
        window_of = _window(thread, nobody, names, share, None, stepped=False)
        linked_windows.append(_Linked(channel, thread[window_of.start :], share))
        budget_tokens -= window_of.cost
    window = _window(messages, bot, names, budget_tokens, files)
    kept_messages = messages[window.start :]
    texts, files = _redacted(kept_messages, bot, names, redact, files)  # before the viewed channel's
    if viewed:
        seen = viewed[shown.start :]
        seen_texts = [redact(_readable(message.text, nobody, names)) for message in seen]
        lines = [turn.text for turn in _turns(seen, seen_texts, nobody, names, viewed_share, None, [])]
        system += (
            "\n\nThe person is viewing a Slack channel and asked about it. Its most recent messages, oldest "
            "first:\n" + "\n".join(lines)
        )
    left_out: list[str] = []  # why each file of a kept message was not sent, newest message first
    turns = _turns(kept_messages, texts, bot, names, budget_tokens, files, left_out)
    if window.start or earlier_unread:
        system += "\n\n" + messages_left_out_note(window.start, earlier_unread)
    if left_out:
        system += "\n\n" + files_left_out_note(left_out)
    merged = _merge(list(turns))
    if linked_windows and merged:  # redacted last: the conversation's placeholders come first
        merged[-1] = _with_linked(merged[-1], linked_windows, names, redact)
    return Prompt(
        system=_encodable(system),
        messages=[_message_param(turn) for turn in merged],
        kept=len(turns),
        omitted=window.start,
    )


@dataclass(frozen=True, slots=True)
class _Linked:
    channel: str
    messages: Sequence[SlackMessage]  # the window kept, oldest first
    share: int  # of the budget: its newest message is shortened to it


def _with_linked(
    turn: Turn, linked: Sequence[_Linked], names: Mapping[str, str], redact: Callable[[str], str]
) -> Turn:
    """The question's turn with the linked threads after it, each marked with the channel it is from."""
    nobody = BotIdentity(None, None)
    parts = []
    for thread in linked:
        lines = [
            f"{_speaker(m, names)}: {redact(text)}"
            for m in thread.messages
            if (text := _readable(m.text, nobody, names))
        ]
        if lines:
            lines[-1] = _shortened(lines[-1], thread.share)
        parts.append(
            f"A Slack thread the question links to, linked from #{thread.channel}, oldest first:\n"
            + "\n".join(lines)
        )
    text = "\n\n".join(parts)
    if turn.blocks:
        return Turn(turn.role, turn.text, (*turn.blocks, _text_block(text)))
    return Turn(turn.role, f"{turn.text}\n\n{text}")


def _shortened(text: str, budget_tokens: int) -> str:
    """`text` cut to the budget, saying so, if it is longer: its start and its end are kept, for a
    question is often asked before a long paste or after it."""
    if estimate_tokens(text) <= budget_tokens:
        return text
    end = budget_tokens // 4
    return cut_to(text, budget_tokens - end) + SHORTENED + cut_to(text, end, from_end=True)


def _message_param(turn: Turn) -> MessageParam:
    if turn.role == "assistant":
        return {"role": "assistant", "content": _encodable(turn.text)}
    if turn.blocks:  # with files: a list of blocks; a text-only turn stays a plain string
        return {"role": "user", "content": [_text_block(turn.text), *turn.blocks]}
    return {"role": "user", "content": _encodable(turn.text)}


def _text_block(text: str) -> TextBlockParam:
    return {"type": "text", "text": _encodable(text)}


def messages_left_out_note(omitted: int, earlier_unread: bool) -> str:
    """One line for Claude on the oldest messages left out: how many, when all were read; else the same
    words whatever part of them was read (that part depends on where the reader's pages fell)."""
    if earlier_unread:
        return EARLIER_UNREAD
    return (
        f"The {omitted} oldest messages of this conversation were left out to fit the context budget; "
        "say so if the answer may depend on them."
    )


def files_left_out_note(reasons: Sequence[str]) -> str:
    """One line for Claude: how many files were left out and why, by count, never by name."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    why = ", ".join(f"{_COUNTS[n] if n < len(_COUNTS) else n} {reason}" for reason, n in counts.items())
    many = len(reasons) > 1
    return (
        f"{len(reasons)} file{'s' if many else ''} shared in this conversation {'were' if many else 'was'} "
        f"not given to you ({why}); say so if the answer may depend on them."
    )


def _encodable(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


def _redacted(
    messages: Sequence[SlackMessage],
    bot: BotIdentity,
    names: Mapping[str, str],
    redact: Callable[[str], str],
    files: Files | None = None,
) -> tuple[list[str], Files | None]:
    """Each message's readable text, redacted, and then its files' titles and text, oldest first: the
    order placeholders are numbered in, so that what is added later renumbers nothing before it."""
    texts: list[str] = []
    attached: dict[str, Attached] = {}
    for message in messages:
        texts.append(redact(_readable(message.text, bot, names)))
        for ref in message.files if files else ():
            found = files.attached.get(ref.id) if files else None
            if found is not None and ref.id not in attached:
                attached[ref.id] = found.redacted(redact)
    return texts, (replace(files, attached=attached) if files else None)


@dataclass(frozen=True, slots=True)
class _Window:
    start: int  # the index of the oldest message kept
    cost: int  # about what the kept messages cost of the budget


def _window(
    messages: Sequence[SlackMessage],
    bot: BotIdentity,
    names: Mapping[str, str],
    budget_tokens: int,
    files: Files | None,
    *,
    stepped: bool = True,
) -> _Window:
    """The newest messages that fit, measured on their unredacted text: the invoking message always
    (shortened to the budget if it must be, with those of its files that fit in what is left), then
    each older one whole, text and files, back to the first that does not fit, from where the start
    moves on in steps (`_stepped_start`)."""
    if not messages:
        return _Window(0, 0)
    costs = [0] * len(messages)  # measured back from the newest, only as far as the window can reach
    newest = messages[-1]
    with_files = bool(files and newest.files)
    turn = _turn_of(newest, _readable(newest.text, bot, names), bot, names, with_files, newest=True)
    first = min(estimate_tokens(turn.text), budget_tokens) if turn else 0
    if turn is not None and turn.role == "user" and files and newest.files:
        _, left = _with_files(turn, newest.files, files, budget_tokens - first, [])
        first = budget_tokens - left
    costs[-1] = first
    left, start = budget_tokens - first, len(messages) - 1
    while start > 0:
        cost = _cost(messages[start - 1], bot, names, files, newest=False)
        if cost > left:
            break
        start -= 1
        costs[start], left = cost, left - cost
    if stepped and start > 0:
        start = _stepped_start(messages, costs, start, budget_tokens // STEP_FRACTION)
    return _Window(start, sum(costs[start:]))


def _stepped_start(messages: Sequence[SlackMessage], costs: Sequence[int], lo: int, step: int) -> int:
    """Where a window that could start at `lo` starts: at the first message on or after the coarsest line
    of a grid of times (every 2**k microseconds) that leaves out at most `step` more tokens. The lines
    are the same for every question, and `lo` only moves forward as a thread grows, so the start stays
    put until the thread has grown by about a step: the prefix the next question repeats stays cacheable,
    where dropping one message at a time would change it on every question. Stateless: it needs neither
    the thread's first message (long threads are not read that far) nor anything kept between requests."""
    stamps = [ts_micros(message.ts) for message in messages[lo:]]  # stamps[i] is messages[lo + i]'s
    last = len(stamps) - 1
    dropped = [0]
    for cost in costs[lo : lo + last]:
        dropped.append(dropped[-1] + cost)
    for level in range(GRID_LEVELS, -1, -1):
        spacing = 1 << level
        line = -(-stamps[0] // spacing) * spacing  # the first line at or after `lo`'s time
        at = bisect_left(stamps, line, 0, last)
        if stamps[at] >= line and dropped[at] <= step:
            return lo + at
    return lo


def _cost(
    message: SlackMessage, bot: BotIdentity, names: Mapping[str, str], files: Files | None, *, newest: bool
) -> int:
    """A message's cost of the budget, sent whole: its text and, in a person's turn, its files."""
    with_files = bool(files and message.files)
    turn = _turn_of(message, _readable(message.text, bot, names), bot, names, with_files, newest=newest)
    if turn is None:
        return 0
    cost = estimate_tokens(turn.text)
    if files and turn.role == "user":
        cost += sum(found.tokens for ref in message.files if (found := files.attached.get(ref.id)))
    return cost


def _turns(
    messages: Sequence[SlackMessage],
    texts: Sequence[str],
    bot: BotIdentity,
    names: Mapping[str, str],
    budget_tokens: int,
    files: Files | None,
    left_out: list[str],
) -> list[Turn]:
    """The window's messages as turns, oldest first (`texts`: their redacted texts). Each renders from
    itself alone but the invoking one, the last, which is shortened to the budget if it must be and
    keeps those of its files that fit in what is left."""
    turns: list[Turn] = []
    reasons: list[list[str]] = []
    for i, (message, text) in enumerate(zip(messages, texts, strict=True)):
        newest = i == len(messages) - 1
        with_files = bool(files and message.files)
        turn = _turn_of(message, text, bot, names, with_files, newest=newest)
        if turn is None:
            continue
        left = sys.maxsize  # an older message was measured whole: all of its files fit
        if newest:
            cost = estimate_tokens(turn.text)
            if cost > budget_tokens:
                turn, cost = Turn(turn.role, _shortened(turn.text, budget_tokens)), budget_tokens
            left = budget_tokens - cost
        reasons.append([])
        if files and message.files and turn.role == "user":
            turn, _ = _with_files(turn, message.files, files, left, reasons[-1])
        turns.append(turn)
    left_out.extend(reason for found in reversed(reasons) for reason in found)
    return turns


def _turn_of(
    message: SlackMessage,
    text: str,
    bot: BotIdentity,
    names: Mapping[str, str],
    with_files: bool,
    *,
    newest: bool,
) -> Turn | None:
    """A message's turn, or None if it says nothing. A bare mention of the bot still asks about the
    conversation, and renders the same when it is asked and when it is an earlier turn."""
    turn = _to_turn(message, text, bot, names, with_files)
    if turn is None and (newest or (not bot.wrote(message) and _mentions(message.text, bot))):
        turn = Turn("user", f"{_speaker(message, names)}: (mentioned you with no further text)")
    return turn


def _mentions(text: str, bot: BotIdentity) -> bool:
    return bot.user_id is not None and bot.user_id in _MENTION.findall(text)


def _with_files(
    turn: Turn, refs: Sequence[FileRef], files: Files, left: int, left_out: list[str]
) -> tuple[Turn, int]:
    """The turn with the blocks of its message's files that fit in what is left of the budget."""
    blocks: list[ContentBlockParam] = []
    for ref in refs:
        attached = files.attached.get(ref.id)
        if attached is not None and attached.tokens <= left:
            blocks.append(attached.block)
            left -= attached.tokens
        elif attached is not None:
            left_out.append(OVER_BUDGET)
        elif ref.id in files.left_out:
            left_out.append(files.left_out[ref.id])
    return Turn(turn.role, turn.text, tuple(blocks)), left


def _to_turn(
    message: SlackMessage, text: str, bot: BotIdentity, names: Mapping[str, str], with_files: bool = False
) -> Turn | None:
    if not text and with_files and not bot.wrote(message):
        text = "(shared a file)" if len(message.files) == 1 else f"(shared {len(message.files)} files)"
    if not text:
        return None
    if bot.wrote(message):
        return Turn("assistant", text)
    return Turn("user", f"{_speaker(message, names)}: {text}")


def _merge(turns: list[Turn]) -> list[Turn]:
    """Alternate roles, start with the user and end on the user's turn, as the Messages API wants."""
    while turns and turns[-1].role == "assistant":
        turns.pop()
    if turns and turns[0].role == "assistant":
        turns.insert(0, Turn("user", "(This conversation opens with a message you wrote earlier.)"))
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            last = merged[-1]
            if last.blocks:  # after files, the next message's text is a block of its own
                merged[-1] = Turn(turn.role, last.text, (*last.blocks, _text_block(turn.text), *turn.blocks))
            else:
                merged[-1] = Turn(turn.role, f"{last.text}\n\n{turn.text}", turn.blocks)
        else:
            merged.append(turn)
    return merged


def _readable(text: str, bot: BotIdentity, names: Mapping[str, str]) -> str:
    def name_of(match: re.Match[str]) -> str:
        user_id = match.group(1)
        if user_id == bot.user_id:
            return ""
        return f"@{names[user_id]}" if user_id in names else match.group(0)

    return _MENTION.sub(name_of, text).strip()


def _speaker(message: SlackMessage, names: Mapping[str, str]) -> str:
    if message.bot_id:
        return f"{message.bot_name or 'An app'} (app)"
    if message.user:
        return names.get(message.user, message.user)
    return "Someone"
