"""Build Claude's input from what was read: turns, the budget, and one note on what was left out.

Pure functions over plain data, no clients. The conversation (oldest first, ending on the invoking
message) becomes alternating turns; every text is redacted first, oldest first, so that placeholders are
numbered as the thread was written; the budget then keeps the newest messages that fit, and the files of
kept messages while room remains. What was left out is said in one note, worded the same every time for
the same situation, so that an unchanged thread makes the same prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from anthropic.types import ContentBlockParam, MessageParam, TextBlockParam

from bot.pipeline.ask import BotIdentity, FileRef, SlackMessage
from bot.pipeline.files import Attached, Files
from bot.pipeline.tokens import CHARS_PER_TOKEN, estimate_tokens

SHORTENED = " […shortened to fit the context budget]"
OVER_BUDGET = "over the context budget"
EARLIER_UNREAD = (
    "The oldest messages of this conversation were left out to fit the context budget; say so if the "
    "answer may depend on them."
)
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
) -> Prompt:
    """Turn a conversation (oldest first, ending on the invoking message) into Claude's input.

    `viewed` is the channel an assistant thread's asker is viewing, read only because they asked
    about it; its newest messages get up to half the budget, in the system prompt. `redact` rewrites
    every message's text before it is measured or sent: all of them, oldest first and the conversation
    before the viewed channel, so that placeholders are numbered as the thread was written and its
    unchanged part renders byte for byte the same on the next question. `files` are the blocks fetched
    for the messages' files (`bot.pipeline.files`), or why each was left out. `earlier_unread`: the
    conversation goes back further than `messages`, which the reader stopped short of for the budget.
    """
    texts, files = _redacted(messages, bot, names, redact, files)
    if viewed:
        nobody = BotIdentity(None, None)
        viewed_texts, _ = _redacted(viewed, nobody, names, redact)
        lines = [
            f"{turn.text}"
            for turn in _newest_within_budget(
                viewed, viewed_texts, nobody, names, budget_tokens // 2, None, []
            )
        ]
        budget_tokens -= sum(estimate_tokens(line) for line in lines)
        system += (
            "\n\nThe person is viewing a Slack channel and asked about it. Its most recent messages, oldest "
            "first:\n" + "\n".join(lines)
        )
    left_out: list[str] = []  # why each file of a kept message was not sent
    kept = _newest_within_budget(messages, texts, bot, names, budget_tokens, files, left_out)
    omitted = len(messages) - len(kept)
    turns = _merge(kept)
    if omitted or earlier_unread:
        system += "\n\n" + messages_left_out_note(omitted, earlier_unread)
    if left_out:
        system += "\n\n" + files_left_out_note(left_out)
    return Prompt(
        system=_encodable(system),
        messages=[_message_param(turn) for turn in turns],
        kept=len(kept),
        omitted=omitted,
    )


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


def _newest_within_budget(
    messages: Sequence[SlackMessage],
    texts: Sequence[str],
    bot: BotIdentity,
    names: Mapping[str, str],
    budget_tokens: int,
    files: Files | None,
    left_out: list[str],
) -> list[Turn]:
    """The newest messages that fit, as turns; `texts` are the messages' redacted texts."""
    turns: list[Turn] = []
    left = budget_tokens
    for message, text in zip(reversed(messages), reversed(texts), strict=True):
        turn = _to_turn(message, text, bot, names, bool(files and message.files))
        if turn is None and not turns:  # a bare mention still asks about the conversation
            turn = Turn("user", f"{_speaker(message, names)}: (mentioned you with no further text)")
        if turn is None:
            continue
        cost = estimate_tokens(turn.text)
        if not turns and cost > left:  # the invoking message always goes, shortened if it must
            turn = Turn(turn.role, turn.text[: left * CHARS_PER_TOKEN] + SHORTENED)
            cost = left
        elif cost > left:
            break
        left -= cost
        if files and message.files and turn.role == "user":
            turn, left = _with_files(turn, message.files, files, left, left_out)
        turns.append(turn)
    turns.reverse()
    return turns


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
