"""Direct message: a person's DM to the bot becomes an Ask answered in that DM."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.pipeline.ask import Ask, BotIdentity, InConversation, RecentDirectMessages, SlackMessage, Thread
from bot.surfaces import Answer, answer_event, event_fields


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    fields = event_fields(body)
    if fields is None:
        return None
    event, user, channel, ts, text = fields
    if event.get("channel_type") != "im":
        return None
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    return Ask(
        request_id=str(body.get("event_id") or ts),
        surface="direct_message",
        team_id=str(body.get("team_id") or event.get("team") or ""),
        user_id=user,
        message=SlackMessage(ts=ts, text=text, user=user),
        history=Thread(channel, thread_ts) if thread_ts else RecentDirectMessages(channel),
        reply_to=InConversation(channel, thread_ts),
        bot=bot,
    )


def register(app: AsyncApp, answer: Answer) -> None:
    # Every message event, so none goes unacknowledged; only a person's DM is answered.
    answer_event(app, "message", to_ask, answer)
