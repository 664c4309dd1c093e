"""The retention policy: what is read, how it becomes Claude's turns, the budget, and what is never kept.

What this bot does with Slack content, in full:

1. Read only when invoked. Content is read only inside `answer(ask)`, for an Ask made by a person's
   mention, DM, slash command, assistant-thread message or message shortcut, and only from the
   conversation the Ask names: the thread it was made in (up to the invoking message), or the DM's
   top-level messages from the last DM_CONTEXT_HOURS. A slash command sends its own text alone. The
   channel an assistant-thread user is viewing is read only when their question is about it
   (`asks_about_channel`). The manifest subscribes to no channel-wide message event. Nothing is
   read before `bot.pipeline.access` lets the asker in; a refusal reads nothing.
2. Only three fields survive the read: author, timestamp and text (`slim`). Files, reactions,
   attachments and metadata are dropped at once. With SEND_FILES=on a file's id, name, type, size and
   private URL are kept too, and `bot.pipeline.files` fetches up to MAX_FILES of them, newest first,
   into the request's memory: images, PDFs and text files, sent inside the Messages request.
3. Turns: the bot's own messages become assistant turns; everyone else's are user turns that start
   with the speaker's display name, looked up for this request only. Same-role neighbours are merged,
   the first turn is a user turn and the last is the invoking message. Every text is redacted first
   (`bot.pipeline.redaction`): secrets, and the personal data REDACT_PERSONAL_DATA names, become
   typed placeholders such as [slack token 1].
4. Budget: about CONTEXT_BUDGET_TOKENS (4 characters a token). A longer conversation keeps its newest
   messages, and Claude is told how many older ones were left out. A file counts by a rough estimate
   (`bot.pipeline.files`: 1,600 tokens an image, 3,000 a PDF page, 4 characters a token of text); one
   that does not fit is left out, and Claude is told in one line how many files were and why.
5. Nothing is kept. Content lives in the request's local variables and is gone when the answer is
   posted: no database, no files, no cache between requests, no message or answer text in any log
   line at any level (see `bot.logs`). Logs carry ids, counts, sizes and timings.
6. Claude: the Messages API only, which is eligible for Anthropic's zero data retention (ZDR is an
   agreement between your organization and Anthropic, not a request flag); on Bedrock or Vertex AI
   (`bot.backends`) the cloud provider's terms apply instead. The Slack user is sent as an opaque
   hash in `metadata.user_id`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from anthropic.types import ContentBlockParam, MessageParam, TextBlockParam

from bot.pipeline.ask import BotIdentity, FileRef, SlackMessage

if TYPE_CHECKING:
    from bot.pipeline.files import Attached, Files

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # the speaker prefix and separators
DM_MAX_MESSAGES = 500
# Message subtypes that carry what a person (or another app) said; joins, topics and edits do not.
SPOKEN_SUBTYPES = frozenset({None, "bot_message", "file_share", "thread_broadcast", "me_message"})
SHORTENED = " […shortened to fit the context budget]"
OVER_BUDGET = "over the context budget"
_COUNTS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
# Phrasings that plainly mean the channel being viewed. "the channel" or "the conversation" alone do not
# ("how do I mute the channel?", "continue the conversation about mutexes"), nor does "here" outside
# "what's going on here"-like phrasing.
_ABOUT_CHANNEL = re.compile(
    r"\b(?:this|current) channel\b"
    r"|\bthe channel (?:I['’]?m|I am)(?: currently| now)? (?:in|on|viewing|looking at|reading)\b"
    r"|\b(?:going on|happening|happened|discussed|been said|missed) (?:in )?here\b"
    r"|\b(?:summar\w*|recap|catch (?:me )?up|tl;? ?dr)\b.*\bthis (?:conversation|discussion)\b",
    re.IGNORECASE | re.DOTALL,
)
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


def slim(raw: Mapping[str, Any], *, files: bool = False) -> SlackMessage | None:
    """Keep author, timestamp and text of a message someone said (and its files' references, if
    `files`); None for anything else."""
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
        files=file_refs(raw.get("files")) if files else (),
    )


def file_refs(raw: object) -> tuple[FileRef, ...]:
    """References to a message's files (ids, names, types, sizes, URLs): never their content."""
    if not isinstance(raw, list):
        return ()
    refs = []
    for file in raw:
        if isinstance(file, Mapping) and isinstance(file.get("id"), str):
            size = file.get("size")
            refs.append(
                FileRef(
                    id=file["id"],
                    name=str(file.get("name") or ""),
                    mimetype=str(file.get("mimetype") or ""),
                    size=size if isinstance(size, int) and not isinstance(size, bool) else 0,
                    url_private=str(file.get("url_private") or ""),
                )
            )
    return tuple(refs)


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
    """Whether a question in an assistant thread is plainly about the channel its asker is viewing: it
    links to it (`<#C…>` or `<#C…|name>`) or says "this channel", "the channel I'm in" and the like."""
    linked = re.search(rf"<#{re.escape(channel_id)}[|>]", question) is not None
    return linked or _ABOUT_CHANNEL.search(question) is not None


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
) -> Prompt:
    """Turn a conversation (oldest first, ending on the invoking message) into Claude's input.

    `viewed` is the channel an assistant thread's asker is viewing, read only because they asked
    about it; its newest messages get up to half the budget, in the system prompt. `redact` rewrites
    every message's text before it is measured or sent: all of them, oldest first and the conversation
    before the viewed channel, so that placeholders are numbered as the thread was written and its
    unchanged part renders byte for byte the same on the next question. `files` are the blocks fetched
    for the messages' files (`bot.pipeline.files`), or why each was left out.
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
    if omitted:
        system += (
            f"\n\nThe {omitted} oldest messages of this conversation were left out to fit the context "
            "budget; say so if the answer may depend on them."
        )
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


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE


def opaque_user_id(team_id: str, user_id: str) -> str:
    """Claude's metadata.user_id: stable per Slack user, reveals no name or id."""
    return hashlib.sha256(f"slack:{team_id}:{user_id}".encode()).hexdigest()


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


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
