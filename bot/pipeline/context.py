"""Read, now, the conversation an Ask names, and the display names its turns need."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.ask import Ask, RecentDirectMessages, SlackMessage, Thread
from bot.pipeline.retention import DM_MAX_MESSAGES, slim

PAGE_SIZE = 200  # Slack's recommended page size for conversations.* reads
MAX_NAME_LOOKUPS = 100
NAME_LOOKUPS_AT_ONCE = 10


class ContextUnavailable(Exception):
    """Slack refused or failed a read; carries the method and Slack's error code, never content."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"{method} failed: {error}")
        self.method = method
        self.error = error


async def read_conversation(
    slack: AsyncWebClient, ask: Ask, *, dm_window_seconds: float, files: bool = False
) -> list[SlackMessage]:
    """The conversation oldest first, ending on the invoking message; with `files`, messages keep
    references to their files (the invoking one's as the read returns it, else as its event gave them);
    without, the event's references are dropped too."""
    invoking = ask.message if files or not ask.message.files else replace(ask.message, files=())
    match ask.history:
        case Thread(channel, thread_ts):
            read = await _read(
                slack,
                "conversations_replies",
                files=files,
                channel=channel,
                ts=thread_ts,
                latest=ask.message.ts,
            )
        case RecentDirectMessages(channel):
            oldest = f"{time.time() - dm_window_seconds:.6f}"
            read = await _read(
                slack,
                "conversations_history",
                limit=DM_MAX_MESSAGES,
                files=files,
                channel=channel,
                latest=ask.message.ts,
                oldest=oldest,
            )
            read.reverse()  # history comes newest first
        case None:
            return [invoking]
    invoked_at = _ts_key(ask.message.ts)
    earlier = [m for m in read if _ts_key(m.ts) < invoked_at]
    shared = next((m.files for m in read if m.ts == ask.message.ts and m.files), ())
    return [*earlier, replace(invoking, files=shared) if shared else invoking]


async def read_channel(slack: AsyncWebClient, channel: str) -> list[SlackMessage]:
    """A channel's most recent top-level messages, oldest first (one page: the budget keeps fewer)."""
    try:
        response = await slack.conversations_history(channel=channel, limit=PAGE_SIZE)
    except SlackApiError as exc:
        raise ContextUnavailable("conversations_history", str(exc.response.get("error", "unknown"))) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ContextUnavailable("conversations_history", exc.__class__.__name__) from None
    read = [
        message for raw in response.get("messages") or [] if isinstance(raw, dict) and (message := slim(raw))
    ]
    read.reverse()
    return read


async def look_up_names(
    slack: AsyncWebClient, user_ids: Iterable[str], known: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Display names for this request only; a failed lookup leaves the id as it is. `known` names,
    learnt earlier in this request, are not looked up again."""
    known = known or {}
    gate = asyncio.Semaphore(NAME_LOOKUPS_AT_ONCE)

    async def name_of(user_id: str) -> tuple[str, str | None]:
        async with gate:
            try:
                response = await slack.users_info(user=user_id)
            except (TimeoutError, SlackApiError, aiohttp.ClientError):
                return user_id, None
        return user_id, display_name(response.get("user"))

    to_find = sorted(set(user_ids) - set(known))[:MAX_NAME_LOOKUPS]
    found = await asyncio.gather(*(name_of(user_id) for user_id in to_find))
    return {**known, **{user_id: name for user_id, name in found if name}}


def display_name(user: object) -> str | None:
    """How Slack shows a person (users.info's `user`), or None if it names nobody."""
    if not isinstance(user, Mapping):
        return None
    profile = user.get("profile")
    profile = profile if isinstance(profile, Mapping) else {}
    name = profile.get("display_name") or profile.get("real_name") or user.get("name")
    return name if isinstance(name, str) and name else None


async def _read(
    slack: AsyncWebClient, method: str, *, limit: int | None = None, files: bool = False, **params: Any
) -> list[SlackMessage]:
    """Every page of a conversations.* read, slimmed as it arrives."""
    read: list[SlackMessage] = []
    cursor = None
    while limit is None or len(read) < limit:
        try:
            response = await getattr(slack, method)(limit=PAGE_SIZE, inclusive=True, cursor=cursor, **params)
        except SlackApiError as exc:
            raise ContextUnavailable(method, str(exc.response.get("error", "unknown"))) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ContextUnavailable(method, exc.__class__.__name__) from None
        for raw in response.get("messages") or []:
            message = slim(raw, files=files) if isinstance(raw, dict) else None
            if message is not None:
                read.append(message)
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            break
    return read if limit is None else read[:limit]


def _ts_key(ts: str) -> tuple[int, int]:
    """Slack timestamps ("1790000100.000200") compared exactly, without float rounding."""
    seconds, _, micros = ts.partition(".")
    try:
        return int(seconds), int(micros or 0)
    except ValueError:
        return (0, 0)
