"""Mention: `@Claude …` in a channel or thread becomes an Ask answered in that thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.pipeline.ask import Ask, BotIdentity, InConversation, Reaction, SlackMessage, Thread
from bot.pipeline.retention import file_refs
from bot.surfaces import Answer, answer_event, enterprise_of, event_fields, user_team


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    fields = event_fields(body)
    if fields is None:
        return None
    event, user, channel, ts, text = fields
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    return Ask(
        request_id=str(body.get("event_id") or ts),
        surface="mention",
        team_id=str(body.get("team_id") or event.get("team") or ""),
        user_id=user,
        message=SlackMessage(ts=ts, text=text, user=user, files=file_refs(event.get("files"))),
        # A top-level mention is its own whole conversation: nothing else to read.
        history=Thread(channel, thread_ts) if thread_ts else None,
        reply_to=InConversation(channel, thread_ts or ts),
        bot=bot,
        user_team_id=user_team(body, event),
        enterprise_id=enterprise_of(body),
        channel_id=channel,
        progress=Reaction(channel, ts),
    )


def register(app: AsyncApp, answer: Answer) -> None:
    answer_event(app, "app_mention", to_ask, answer)
