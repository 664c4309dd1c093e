"""Filters before any surface: other bots, the bot itself, edits and other subtypes, redeliveries."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.response import BoltResponse

from bot.expiring import ExpiringMap

log = logging.getLogger(__name__)

# A person's message, alone or with files; every other subtype is an edit, a delete, a join...
ANSWERED_SUBTYPES = frozenset({None, "file_share"})


class RecentEventIds:
    """Event ids seen lately, so a redelivery is not answered twice. Ids only, for `ttl_seconds`."""

    def __init__(self, ttl_seconds: float = 3600.0, max_ids: int = 100_000) -> None:
        self._seen: ExpiringMap[str, bool] = ExpiringMap(ttl_seconds, max_ids)

    def first_time(self, event_id: str, now: float | None = None) -> bool:
        if self._seen.get(event_id, now):
            return False
        self._seen.put(event_id, True, now)
        return True


def why_ignored(event: object, bot_user_id: str | None) -> str | None:
    """Why an event gets no answer, or None when a surface should see it."""
    if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
        return "malformed"
    if event.get("bot_id"):
        return "from_a_bot"
    subtype = event.get("subtype")
    if not isinstance(subtype, str | None) or subtype not in ANSWERED_SUBTYPES:  # a list is unhashable
        return "subtype"
    if bot_user_id is not None and event.get("user") == bot_user_id:
        return "from_self"
    return None


def register(app: AsyncApp, recent: RecentEventIds) -> None:
    @app.middleware
    async def drop_unanswerable(
        body: dict[str, Any],
        context: AsyncBoltContext,
        ack: AsyncAck,
        next: Callable[[], Awaitable[BoltResponse]],  # noqa: A002 (Bolt passes it by this name)
    ) -> BoltResponse:
        if body.get("type") != "event_callback":
            return await next()
        event = body.get("event")
        reason = why_ignored(event, context.bot_user_id)
        event_id = body.get("event_id")
        if reason is None and isinstance(event_id, str) and not recent.first_time(event_id):
            reason = "redelivery"
        if reason is not None:
            event_type = event.get("type") if isinstance(event, Mapping) else None
            log.debug("event=%s type=%s ignored: %s", event_id, event_type, reason)
            return await ack()
        return await next()
