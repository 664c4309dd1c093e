"""Direct message: a person's top-level DM to the bot becomes an Ask answered in that DM.

Messages in the DM's threads belong to the agent surface (`assistant.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.pipeline.ask import Ask, BotIdentity, InConversation, Reaction, RecentDirectMessages, SlackMessage
from bot.surfaces import Answer, answer_event, event_ask, event_fields


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    fields = event_fields(body)
    if fields is None:
        return None
    event, user, channel, ts, text = fields
    if event.get("channel_type") != "im" or event.get("thread_ts"):
        return None
    return event_ask(
        body,
        event,
        channel,
        SlackMessage(ts=ts, text=text, user=user),
        surface="direct_message",
        bot=bot,
        history=RecentDirectMessages(channel),
        reply_to=InConversation(channel, None),
        progress=Reaction(channel, ts),
    )


def register(app: AsyncApp, answer: Answer) -> None:
    # Every message event, so none goes unacknowledged; only a person's DM is answered.
    answer_event(app, "message", to_ask, answer)
