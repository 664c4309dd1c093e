"""Filters before any surface: other bots, the bot itself, edits and other subtypes, redeliveries and
replays; and the last word on what Slack is sent back: every request is acknowledged."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.response import BoltResponse

from bot.state import State, StateKeys

log = logging.getLogger(__name__)

# A person's message, alone, with files, or a thread reply also sent to the channel ("Also send to
# channel": an app_mention or DM with subtype thread_broadcast); every other subtype is an edit, a
# delete, a join...
ANSWERED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})


class RecentIds:
    """Ids seen lately, so that a second delivery of one is not answered again, in every process that
    shares `state`. Each id is kept only as a keyed hash, for `ttl_seconds`, under `kind`."""

    def __init__(self, state: State, keys: StateKeys, kind: str, ttl_seconds: float) -> None:
        self._state, self._keys, self._kind, self._ttl = state, keys, kind, ttl_seconds

    async def first_time(self, unique_id: str) -> bool:
        """One atomic claim: of two processes that see an id at once, one gets True."""
        return await self._state.claim(f"dedupe:{self._kind}:{self._keys.of(unique_id)}", self._ttl)


def recent_event_ids(state: State, keys: StateKeys) -> RecentIds:
    """Event ids, for an hour: Slack redelivers an unacknowledged event for a few minutes."""
    return RecentIds(state, keys, "event", 3600.0)


# A signature is accepted up to 5 minutes either side of its timestamp, so one signed request can be
# replayed for 10 minutes after it is first seen; its id is remembered longer than that.
SIGNATURE_WINDOW_SECONDS = 300.0


def recent_interaction_ids(state: State, keys: StateKeys) -> RecentIds:
    """Trigger ids of slash commands, shortcuts, view submissions and block actions, each unique to one
    use, remembered past any replay a signature allows."""
    return RecentIds(state, keys, "interaction", 3 * SIGNATURE_WINDOW_SECONDS)


def always_acknowledged(response: BoltResponse) -> BoltResponse:
    """What Slack is sent for a request Bolt has answered: Bolt's answer when it is a 200, otherwise an
    empty 200. Bolt answers 404 when no listener takes a request (a command or interaction that is not
    ours) and 500 when a middleware fails on a payload; unacknowledged, Slack would show the person a
    timeout, or retry."""
    if response.status == 200:
        return response
    log.debug("acknowledged a request Bolt answered with %d", response.status)
    return BoltResponse(status=200, body="")


_EVENT_IDS = frozenset(
    {"event_id", "api_app_id", "team_id", "enterprise_id", "context_team_id", "context_enterprise_id"}
)


def bolt_can_read(body: object) -> bool:
    """Whether Bolt's own middleware, which runs before ours, can read a request body without failing
    (and logging an error): an object and, for an event, its event an object, its ids strings and its
    authorizations objects. Anything else is acknowledged and dropped before Bolt."""
    if not isinstance(body, Mapping):
        return False
    if body.get("type") != "event_callback":
        return True
    authorizations = body.get("authorizations")
    return (
        isinstance(body.get("event"), Mapping)
        and all(isinstance(body.get(name), str | None) for name in _EVENT_IDS)
        and (authorizations is None or isinstance(authorizations, list))
        and all(isinstance(each, Mapping) for each in authorizations or ())
    )


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


def register(app: AsyncApp, recent: RecentIds, interactions: RecentIds | None = None) -> None:
    """`interactions`: answer each signed interaction once (HTTP mode, where a captured request can be
    replayed; over Socket Mode only Slack's own connection delivers)."""

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
        if reason is None and isinstance(event_id, str) and not await recent.first_time(event_id):
            reason = "redelivery"
        if reason is not None:
            event_type = event.get("type") if isinstance(event, Mapping) else None
            log.debug("event=%s type=%s ignored: %s", event_id, event_type, reason)
            return await ack()
        return await next()

    if interactions is None:
        return

    @app.middleware
    async def answer_once(
        body: dict[str, Any],
        ack: AsyncAck,
        next: Callable[[], Awaitable[BoltResponse]],  # noqa: A002 (Bolt passes it by this name)
    ) -> BoltResponse:
        # Slack never retries a command or an interaction, so a trigger id seen twice is a replay.
        trigger_id = body.get("trigger_id")
        if isinstance(trigger_id, str) and trigger_id and not await interactions.first_time(trigger_id):
            log.debug("%s ignored: replay", "command" if "command" in body else "interaction")
            return await ack()
        return await next()
