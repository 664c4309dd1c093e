"""Direct message: a person's top-level DM to the bot becomes an Ask answered in that DM.

Messages in the DM's threads belong to the agent surface (`assistant.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.pipeline.ask import Ask, BotIdentity, InConversation, Reaction, RecentDirectMessages, SlackMessage
from bot.surfaces import Answer, answer_event, enterprise_of, event_fields, user_team


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    fields = event_fields(body)
    if fields is None:
        return None
    event, user, channel, ts, text = fields
    if event.get("channel_type") != "im" or event.get("thread_ts"):
        return None
    return Ask(
        request_id=str(body.get("event_id") or ts),
        surface="direct_message",
        team_id=str(body.get("team_id") or event.get("team") or ""),
        user_id=user,
        message=SlackMessage(ts=ts, text=text, user=user),
        history=RecentDirectMessages(channel),
        reply_to=InConversation(channel, None),
        bot=bot,
        user_team_id=user_team(body, event),
        enterprise_id=enterprise_of(body),
        channel_id=channel,
        progress=Reaction(channel, ts),
    )


def register(app: AsyncApp, answer: Answer) -> None:
    # Every message event, so none goes unacknowledged; only a person's DM is answered.
    answer_event(app, "message", to_ask, answer)
