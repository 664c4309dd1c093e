"""Read, now, the conversation an Ask names, and the display names its turns need.

Reads stop where the context budget does: a thread longer than a page is read back from the invoking
message in time windows of about a page each (conversations.replies pages forward only), a DM's history
(newest first) page by page, each until the budget is full, and never more than MAX_PAGES pages a
request. Display names go through one process-wide gate (`NameLookups`), so that a flood of big threads
never takes the users.info calls the access check needs for its askers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.ask import Ask, FileRef, RecentDirectMessages, SlackMessage, Thread
from bot.pipeline.said import VisibleError
from bot.pipeline.tokens import estimate_tokens
from bot.slack_calls import SlackCallFailed, slack_call

PAGE_SIZE = 200  # Slack's recommended page size for conversations.* reads
CLOCK_ERROR_SECONDS = 3600  # how far Slack's clock may run ahead of ours
MAX_PAGES = 30  # conversations.* calls a read may make: 6,000 messages at PAGE_SIZE
MAX_NAME_LOOKUPS = 100  # a request's
# The whole process's, across requests: well under the 100 connections (aiohttp's pool) that every Slack
# call shares, and users.info's rate limit is the access check's too.
NAME_LOOKUPS_AT_ONCE = 40
NAME_LOOKUPS_WAIT_SECONDS = 5.0  # a request waits this long for its names; the rest stay ids
NAME_LOOKUPS_PAUSE_SECONDS = 60.0  # none after Slack rate-limits one: its limits are per minute
DM_MAX_MESSAGES = 500
DM_WINDOW_STEPS = 12  # the DM window's start moves forward a twelfth of it at a time (2 hours of 24)
SPEAKER_TOKENS = 4  # the "Name: " each person's turn starts with, about 16 characters, not yet known
MICROS = 1_000_000
# Message subtypes that carry what a person (or another app) said; joins, topics and edits do not.
SPOKEN_SUBTYPES = frozenset({None, "bot_message", "file_share", "thread_broadcast", "me_message"})
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


class ContextUnavailable(VisibleError):
    """Slack refused or failed a read; carries the method and Slack's error code, never content."""

    sentence = "I couldn't read this conversation from Slack. If it's a private channel, invite me first."

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"{method} failed: {error}")
        self.method = method
        self.error = error


@dataclass(frozen=True, slots=True)
class Conversation:
    """What was read for an Ask: oldest first, ending on the invoking message."""

    messages: list[SlackMessage]
    earlier_unread: bool = False  # older messages were left in Slack: the budget was full (or MAX_PAGES)


async def read_conversation(
    slack: AsyncWebClient,
    ask: Ask,
    *,
    dm_window_seconds: float,
    files: bool = False,
    budget_tokens: int | None = None,
) -> Conversation:
    """The conversation, newest kept, read no further back than `budget_tokens` can use (None: as far
    as MAX_PAGES allow). With `files`, messages keep references to their files (the invoking one's as
    the read returns it, else as its event gave them); without, the event's references are dropped too."""
    invoking = ask.message if files or not ask.message.files else replace(ask.message, files=())
    match ask.history:
        case Thread(channel, thread_ts):
            pages = _Pages(slack, "conversations_replies", files, channel=channel, ts=thread_ts)
            read, earlier_unread = await _read_thread(pages, thread_ts, ask.message.ts, budget_tokens)
        case RecentDirectMessages(channel):
            oldest = _ts(dm_window_start(time.time(), dm_window_seconds))
            pages = _Pages(slack, "conversations_history", files, channel=channel, oldest=oldest)
            read, earlier_unread = await _read_newest_first(pages, ask.message.ts, budget_tokens)
            read.reverse()  # history comes newest first
        case None:
            return Conversation([invoking])
    invoked_at = ts_micros(ask.message.ts)
    earlier = [m for m in read if ts_micros(m.ts) < invoked_at]
    shared = next((m.files for m in read if m.ts == ask.message.ts and m.files), ())
    return Conversation([*earlier, replace(invoking, files=shared) if shared else invoking], earlier_unread)


def dm_window_start(now: float, window_seconds: float) -> int:
    """Where a DM's recent messages begin, in microseconds: `window_seconds` back, moved forward to the
    next line of a grid of DM_WINDOW_STEPS steps a window, so that consecutive questions read from the
    same point (prompt caching wants the same prefix) and never from further back than the window."""
    step = max(1, int(window_seconds * MICROS) // DM_WINDOW_STEPS)
    earliest = int((now - window_seconds) * MICROS)
    return -(-earliest // step) * step


def asks_about_channel(question: str, channel_id: str | None) -> bool:
    """Whether a question in an assistant thread is plainly about the channel its asker is viewing: it
    links to it (`<#C…>` or `<#C…|name>`) or says "this channel", "the channel I'm in" and the like
    (the latter alone when no channel is known to be viewed). Only then is that channel read (and only
    if the asker may read it: `AccessCheck.may_read`)."""
    linked = channel_id is not None and re.search(rf"<#{re.escape(channel_id)}[|>]", question) is not None
    return linked or _ABOUT_CHANNEL.search(question) is not None


async def read_channel(slack: AsyncWebClient, channel: str) -> list[SlackMessage]:
    """A channel's most recent top-level messages, oldest first (one page: the budget keeps fewer)."""
    try:
        with slack_call("conversations_history"):
            response = await slack.conversations_history(channel=channel, limit=PAGE_SIZE)
    except SlackCallFailed as exc:
        raise ContextUnavailable(exc.method, exc.error) from None
    read = [
        message for raw in response.get("messages") or [] if isinstance(raw, dict) and (message := slim(raw))
    ]
    read.reverse()
    return read


async def read_linked_thread(
    slack: AsyncWebClient, channel: str, thread_ts: str, budget_tokens: int
) -> list[SlackMessage]:
    """A linked message's thread, oldest first, newest kept: read back from now as far as the budget
    goes (conversations.replies; no files)."""
    pages = _Pages(slack, "conversations_replies", False, channel=channel, ts=thread_ts)
    read, _ = await _read_thread(pages, thread_ts, None, budget_tokens)
    return read


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


class NameLookups:
    """The process's users.info calls for display names, across all requests: at most NAME_LOOKUPS_AT_ONCE
    at a time, and none for NAME_LOOKUPS_PAUSE_SECONDS after Slack rate-limits one. The access check's
    lookup of an asker (bot.pipeline.access) uses the same method and rate limit and decides whether the
    person is answered at all, so names, a courtesy, leave it room. Holds a count and a time, nothing else."""

    def __init__(self, at_once: int = NAME_LOOKUPS_AT_ONCE) -> None:
        self._gate = asyncio.Semaphore(at_once)
        self._paused_until = 0.0

    async def name_of(self, slack: AsyncWebClient, user_id: str) -> str | None:
        """The person's display name, or None if it could not (or may not now) be looked up."""
        async with self._gate:
            if time.monotonic() < self._paused_until:
                return None
            try:
                with slack_call("users.info"):
                    response = await slack.users_info(user=user_id)
            except SlackCallFailed as exc:
                if exc.rate_limited:
                    self._paused_until = time.monotonic() + NAME_LOOKUPS_PAUSE_SECONDS
                return None
        return display_name(response.get("user"))


async def look_up_names(
    slack: AsyncWebClient,
    user_ids: Iterable[str],
    known: Mapping[str, str] | None = None,
    *,
    lookups: NameLookups | None = None,
) -> dict[str, str]:
    """Display names for this request only; a lookup that fails, or waits past NAME_LOOKUPS_WAIT_SECONDS
    for `lookups` (the process's gate; by default one of this call's own), leaves the id as it is.
    `known` names, learnt earlier in this request, are not looked up again."""
    known = known or {}
    lookups = lookups or NameLookups()
    to_find = sorted(set(user_ids) - set(known))[:MAX_NAME_LOOKUPS]
    if not to_find:
        return dict(known)
    tasks = {asyncio.ensure_future(lookups.name_of(slack, user_id)): user_id for user_id in to_find}
    try:
        done, pending = await asyncio.wait(tasks, timeout=NAME_LOOKUPS_WAIT_SECONDS)
    finally:  # also when this request is cancelled: no lookup outlives it
        for task in tasks:
            task.cancel()
    found = {tasks[task]: name for task in done if not task.cancelled() and (name := task.result())}
    return {**known, **found}


def display_name(user: object) -> str | None:
    """How Slack shows a person (users.info's `user`), or None if it names nobody."""
    if not isinstance(user, Mapping):
        return None
    profile = user.get("profile")
    profile = profile if isinstance(profile, Mapping) else {}
    name = profile.get("display_name") or profile.get("real_name") or user.get("name")
    return name if isinstance(name, str) and name else None


class _Pages:
    """The pages of one conversations.* read, at most MAX_PAGES of them, slimmed as they arrive."""

    def __init__(self, slack: AsyncWebClient, method: str, files: bool, **fixed: Any) -> None:
        self._call = getattr(slack, method)
        self._method, self._files, self._fixed = method, files, fixed
        self.left = MAX_PAGES

    async def read(self, **params: Any) -> _Page:
        self.left -= 1
        try:
            with slack_call(self._method):
                response = await self._call(limit=PAGE_SIZE, inclusive=True, **self._fixed, **params)
        except SlackCallFailed as exc:
            raise ContextUnavailable(exc.method, exc.error) from None
        raw = [m for m in response.get("messages") or [] if isinstance(m, dict)]
        return _Page(
            messages=[message for m in raw if (message := slim(m, files=self._files))],
            stamps=[ts_micros(m["ts"]) for m in raw if isinstance(m.get("ts"), str)],
            cursor=(response.get("response_metadata") or {}).get("next_cursor") or None,
            latest_reply=max(
                (ts_micros(m["latest_reply"]) for m in raw if isinstance(m.get("latest_reply"), str)),
                default=None,
            ),
        )


@dataclass(frozen=True, slots=True)
class _Page:
    messages: list[SlackMessage]  # what slim kept
    stamps: list[int]  # every returned message's ts, in microseconds, kept or not
    cursor: str | None  # the next page's, if there is one
    latest_reply: int | None = None  # a thread's newest reply, as its parent says (in microseconds)


async def _read_thread(
    pages: _Pages, thread_ts: str, until: str | None, budget_tokens: int | None
) -> tuple[list[SlackMessage], bool]:
    """A thread up to `until` (None: all of it), oldest first, and whether older messages were left unread.

    conversations.replies pages forward from the thread's start. Most threads fit one page. A longer
    one is read back from `until` in windows [lo, hi] (`oldest`/`latest`, both inclusive) meant to hold
    about three quarters of a page each, sized by how dense the thread was so far: a window that holds
    more than a page is narrowed and read again (its page is the window's oldest part, not its newest),
    an emptier one widens the next. Should the narrowed window come back empty (a pause in the thread
    before the question), the full window's rest is read forward instead. Every window is checked against
    its bounds, so it does not matter whether Slack also returns the thread's parent with a window that
    does not reach it."""
    first = await pages.read(latest=until)
    if first.cursor is None:
        return first.messages, False
    if budget_tokens is None:  # no budget: forward, as far as MAX_PAGES go
        read: list[SlackMessage] = list(first.messages)
        cursor: str | None = first.cursor
        while cursor and pages.left:
            page = await pages.read(latest=until, cursor=cursor)
            read.extend(page.messages)
            cursor = page.cursor
        return read, cursor is not None
    capacity = max(1, len(first.stamps))
    target = max(1, capacity * 3 // 4)
    start_end = max(first.stamps, default=ts_micros(thread_ts))  # the first page reaches this far
    width = max(1, (start_end - ts_micros(thread_ts) + 1) * target // capacity)
    now = int((time.time() + CLOCK_ERROR_SECONDS) * MICROS)
    hi = now + 1 if until is None else ts_micros(until)
    if hi > now:  # after everything (a shortcut, a linked thread): as far as its parent says it goes
        hi = first.latest_reply or now
    windows, used = list[list[SlackMessage]](), 0
    floor = start_end + 1  # no window below it: (floor - 1, hi] holds more than the last page read
    while hi > start_end:
        if not pages.left:
            return _oldest_first(windows), True
        lo = max(floor, hi - width + 1)
        page = await pages.read(oldest=_ts(lo), latest=_ts(hi))
        stamps = [stamp for stamp in page.stamps if lo <= stamp <= hi]
        if page.cursor is not None and lo < hi:  # more than a page: narrow toward `hi`, read again
            covered = (max(stamps) if stamps else lo + (hi - lo) // 2) - lo + 1
            width = max(1, min(covered * target // capacity, (hi - lo + 1) // 2))
            if stamps:  # the rest lies past the page, however sparse the window's newer end
                floor = max(stamps) + 1
            continue
        window = [m for m in page.messages if lo <= ts_micros(m.ts) <= hi]
        if not stamps and start_end + 1 < floor < lo:  # a gap above a full window's rest: read it forward
            rest = await _read_forward(pages, floor, lo - 1)
            if rest is None:
                return _oldest_first(windows), True
            lo, window = floor, rest
        windows.append(window)
        used += _cost(window)
        if used >= budget_tokens:
            return _oldest_first(windows), True
        span, hi = hi - lo + 1, lo - 1
        if hi < floor:  # below the pages read: nothing is known of it but the thread's density
            floor = start_end + 1
        width = min(span * 8, span * target // len(stamps)) if stamps else span * 8
        width = max(1, width)
    return [*first.messages, *_oldest_first(windows)], False


async def _read_forward(pages: _Pages, lo: int, hi: int) -> list[SlackMessage] | None:
    """All of [lo, hi], oldest first; None if MAX_PAGES ran out first."""
    read: list[SlackMessage] = []
    cursor: str | None = None
    while pages.left:
        page = await pages.read(oldest=_ts(lo), latest=_ts(hi), cursor=cursor)
        read += [m for m in page.messages if lo <= ts_micros(m.ts) <= hi]
        if page.cursor is None:
            return read
        cursor = page.cursor
    return None


async def _read_newest_first(
    pages: _Pages, until: str, budget_tokens: int | None
) -> tuple[list[SlackMessage], bool]:
    """Up to DM_MAX_MESSAGES of a history read (newest first), until the budget is full; and whether
    older messages were left unread."""
    read: list[SlackMessage] = []
    used, cursor = 0, None
    while pages.left:
        page = await pages.read(latest=until, cursor=cursor)
        read.extend(page.messages)
        used += _cost(page.messages)
        cursor = page.cursor
        full = len(read) >= DM_MAX_MESSAGES or (budget_tokens is not None and used >= budget_tokens)
        if cursor is None or full:
            break
    return read[:DM_MAX_MESSAGES], cursor is not None or len(read) > DM_MAX_MESSAGES


def _cost(messages: list[SlackMessage]) -> int:
    """About what the messages will cost of the budget (bot.pipeline.prompt counts it exactly later)."""
    return sum(estimate_tokens(m.text) + SPEAKER_TOKENS for m in messages)


def _oldest_first(windows: list[list[SlackMessage]]) -> list[SlackMessage]:
    """Windows read newest first, each oldest first inside: one list, oldest first."""
    return [message for window in reversed(windows) for message in window]


def ts_micros(ts: str) -> int:
    """A Slack timestamp ("1790000100.000200") in whole microseconds: exact, unlike a float."""
    seconds, _, fraction = ts.partition(".")
    try:
        return int(seconds) * MICROS + int(fraction[:6].ljust(6, "0") or 0)
    except ValueError:
        return 0


def _ts(micros: int) -> str:
    return f"{micros // MICROS}.{micros % MICROS:06d}"


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
