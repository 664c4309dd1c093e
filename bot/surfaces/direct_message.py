"""Direct message: a person's top-level DM to the bot becomes an Ask answered in that DM.

Messages in the DM's threads belong to the agent surface (`assistant.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.pipeline.ask import Ask, BotIdentity, InConversation, Reaction, RecentDirectMessages
from bot.surfaces import Answer, answer_event, message_event


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    said = message_event(body)
    if said is None or said.event.get("channel_type") != "im" or said.event.get("thread_ts"):
        return None
    return said.ask(
        "direct_message",
        bot,
        history=RecentDirectMessages(said.channel),
        reply_to=InConversation(said.channel, None),
        progress=Reaction(said.channel, said.message.ts),
    )


def register(app: AsyncApp, answer: Answer) -> None:
    # Every message event, so none goes unacknowledged; only a person's DM is answered.
    answer_event(app, "message", to_ask, answer)
