"""The retention policy: what is read, how it becomes Claude's turns, the budget, and what is never kept.

What this bot does with Slack content, in full:

1. Read only when invoked. Content is read only inside `answer(ask)`, for an Ask made by a person's
   mention, DM, slash command, assistant-thread message or message shortcut, and only from the
   conversation the Ask names: the thread it was made in (up to the invoking message), or the DM's
   top-level messages from the last DM_CONTEXT_HOURS. A slash command sends its own text alone. The
   channel an assistant-thread user is viewing is read only when their question is about it
   (`asks_about_channel`). The manifest subscribes to no channel-wide message event.
2. Only three fields survive the read: author, timestamp and text (`slim`). Files, reactions,
   attachments and metadata are dropped at once.
3. Turns: the bot's own messages become assistant turns; everyone else's are user turns that start
   with the speaker's display name, looked up for this request only. Same-role neighbours are merged,
   the first turn is a user turn and the last is the invoking message.
4. Budget: about CONTEXT_BUDGET_TOKENS (4 characters a token). A longer conversation keeps its newest
   messages, and Claude is told how many older ones were left out.
5. Nothing is kept. Content lives in the request's local variables and is gone when the answer is
   posted: no database, no files, no cache between requests, no message or answer text in any log
   line at any level (see `bot.logs`). Logs carry ids, counts, sizes and timings.
6. Claude: the Messages API only, which is eligible for Anthropic's zero data retention (ZDR is an
   agreement between your organization and Anthropic, not a request flag). The Slack user is sent as
   an opaque hash in `metadata.user_id`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from anthropic.types import MessageParam

from bot.pipeline.ask import BotIdentity, SlackMessage

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # the speaker prefix and separators
DM_MAX_MESSAGES = 500
# Message subtypes that carry what a person (or another app) said; joins, topics and edits do not.
SPOKEN_SUBTYPES = frozenset({None, "bot_message", "file_share", "thread_broadcast", "me_message"})
SHORTENED = " […shortened to fit the context budget]"

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_ABOUT_CHANNEL = re.compile(r"\b(this|that|the|current|my) (channel|conversation)\b", re.IGNORECASE)
# JSON may carry a lone UTF-16 surrogate ("\ud83d"); it cannot be encoded to send to Claude.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    messages: list[MessageParam]
    kept: int  # Slack messages in the prompt
    omitted: int  # older Slack messages left out for the budget


def slim(raw: Mapping[str, Any]) -> SlackMessage | None:
    """Keep author, timestamp and text of a message someone said; None for anything else."""
    ts, text, subtype = raw.get("ts"), raw.get("text"), raw.get("subtype")
    if not isinstance(ts, str) or not isinstance(text, str) or subtype not in SPOKEN_SUBTYPES:
        return None
    profile = raw.get("bot_profile")
    bot_name = raw.get("username") or (profile.get("name") if isinstance(profile, Mapping) else None)
    return SlackMessage(
        ts=ts,
        text=text,
        user=_str_or_none(raw.get("user")),
        bot_id=_str_or_none(raw.get("bot_id")),
        bot_name=_str_or_none(bot_name),
    )


def people_to_name(messages: Iterable[SlackMessage], bot: BotIdentity) -> set[str]:
    """User ids whose display names the turns need: authors and people mentioned."""
    ids: set[str] = set()
    for message in messages:
        if message.user and not message.bot_id:
            ids.add(message.user)
        ids.update(_MENTION.findall(message.text))
    ids.discard(bot.user_id or "")
    return ids


def asks_about_channel(question: str, channel_id: str) -> bool:
    """Whether a question in an assistant thread is about the channel its asker is viewing."""
    return f"<#{channel_id}" in question or _ABOUT_CHANNEL.search(question) is not None


def build_prompt(
    messages: Sequence[SlackMessage],
    *,
    bot: BotIdentity,
    names: Mapping[str, str],
    system: str,
    budget_tokens: int,
    viewed: Sequence[SlackMessage] = (),
    redact: Callable[[str], str] = str,
) -> Prompt:
    """Turn a conversation (oldest first, ending on the invoking message) into Claude's input.

    `viewed` is the channel an assistant thread's asker is viewing, read only because they asked
    about it; its newest messages get up to half the budget, in the system prompt. `redact` rewrites
    every message's text before it is measured or sent.
    """
    if viewed:
        lines = [
            f"{turn.text}"
            for turn in _newest_within_budget(
                viewed, BotIdentity(None, None), names, budget_tokens // 2, redact
            )
        ]
        budget_tokens -= sum(estimate_tokens(line) for line in lines)
        system += (
            "\n\nThe person is viewing a Slack channel and asked about it. Its most recent messages, oldest "
            "first:\n" + "\n".join(lines)
        )
    kept = _newest_within_budget(messages, bot, names, budget_tokens, redact)
    omitted = len(messages) - len(kept)
    turns = _merge(kept)
    if omitted:
        system += (
            f"\n\nThe {omitted} oldest messages of this conversation were left out to fit the context "
            "budget; say so if the answer may depend on them."
        )
    return Prompt(
        system=_encodable(system),
        messages=[_message_param(turn) for turn in turns],
        kept=len(kept),
        omitted=omitted,
    )


def _message_param(turn: Turn) -> MessageParam:
    if turn.role == "assistant":
        return {"role": "assistant", "content": _encodable(turn.text)}
    return {"role": "user", "content": _encodable(turn.text)}


def _encodable(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE


def opaque_user_id(team_id: str, user_id: str) -> str:
    """Claude's metadata.user_id: stable per Slack user, reveals no name or id."""
    return hashlib.sha256(f"slack:{team_id}:{user_id}".encode()).hexdigest()


def _newest_within_budget(
    messages: Sequence[SlackMessage],
    bot: BotIdentity,
    names: Mapping[str, str],
    budget_tokens: int,
    redact: Callable[[str], str],
) -> list[Turn]:
    turns: list[Turn] = []
    left = budget_tokens
    for message in reversed(messages):
        turn = _to_turn(message, bot, names, redact)
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
        turns.append(turn)
        left -= cost
    turns.reverse()
    return turns


def _to_turn(
    message: SlackMessage, bot: BotIdentity, names: Mapping[str, str], redact: Callable[[str], str]
) -> Turn | None:
    text = redact(_readable(message.text, bot, names))
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
            merged[-1] = Turn(turn.role, f"{merged[-1].text}\n\n{turn.text}")
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


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
