"""Mention: `@Claude …` in a channel or thread becomes an Ask answered in that thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.pipeline.ask import Ask, BotIdentity, InConversation, Reaction, SlackMessage, Thread
from bot.pipeline.context import file_refs
from bot.surfaces import Answer, answer_event, event_ask, event_fields


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    fields = event_fields(body)
    if fields is None:
        return None
    event, user, channel, ts, text = fields
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    return event_ask(
        body,
        event,
        channel,
        SlackMessage(ts=ts, text=text, user=user, files=file_refs(event.get("files"))),
        surface="mention",
        bot=bot,
        # A top-level mention is its own whole conversation: nothing else to read.
        history=Thread(channel, thread_ts) if thread_ts else None,
        reply_to=InConversation(channel, thread_ts or ts),
        progress=Reaction(channel, ts),
    )


def register(app: AsyncApp, answer: Answer) -> None:
    answer_event(app, "app_mention", to_ask, answer)
