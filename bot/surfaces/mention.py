"""Mention: `@Claude …` in a channel or thread becomes an Ask answered in that thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.pipeline.ask import Ask, BotIdentity, InConversation, Reaction, Thread
from bot.surfaces import Answer, answer_event, message_event


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    said = message_event(body, with_files=True)
    if said is None:
        return None
    channel, ts, thread_ts = said.channel, said.message.ts, said.event.get("thread_ts")
    thread = thread_ts if isinstance(thread_ts, str) and thread_ts else None
    return said.ask(
        "mention",
        bot,
        # A top-level mention is its own whole conversation: nothing else to read.
        history=Thread(channel, thread) if thread else None,
        reply_to=InConversation(channel, thread or ts),
        progress=Reaction(channel, ts),
    )


def register(app: AsyncApp, answer: Answer) -> None:
    answer_event(app, "app_mention", to_ask, answer)
