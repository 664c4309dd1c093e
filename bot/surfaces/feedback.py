"""Feedback: a click on the thumbs under an answer (`bot.pipeline.reply.feedback_block`) is acknowledged,
thanked privately, and counted by its value in `bot.metrics`; nothing else is kept or logged: not who
clicked, nor on which message, nor what it said."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.pipeline.progress import quietly
from bot.pipeline.reply import FEEDBACK_ACTION, NEGATIVE, POSITIVE

log = logging.getLogger(__name__)

THANKS = "Thanks for the feedback! Only the count of 👍 and 👎 is kept."


@dataclass(frozen=True, slots=True)
class Click:
    """One click, read from a block_actions payload: what it says, and where to thank whom."""

    value: str
    user_id: str
    channel_id: str
    thread_ts: str | None


def click_of(body: Mapping[str, Any]) -> Click | None:
    """The feedback click in a block_actions payload, or None when it is not one of ours or is malformed."""
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and len(actions) == 1 else None
    if not (
        isinstance(action, Mapping)
        and action.get("action_id") == FEEDBACK_ACTION
        and action.get("type") == "feedback_buttons"
    ):
        return None
    container = body.get("container")
    container = container if isinstance(container, Mapping) else {}
    message = body.get("message")
    message = message if isinstance(message, Mapping) else {}
    value = action.get("value")
    user, channel = _id(body.get("user")), _id(body.get("channel")) or container.get("channel_id")
    thread_ts = container.get("thread_ts") or message.get("thread_ts")  # None: the answer is top-level
    if value not in (POSITIVE, NEGATIVE) or not (_filled(user) and _filled(channel)):
        return None
    return Click(str(value), str(user), str(channel), thread_ts if _filled(thread_ts) else None)


def _id(entity: object) -> object:
    return entity.get("id") if isinstance(entity, Mapping) else None


def _filled(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def register(app: AsyncApp) -> None:
    @app.action(FEEDBACK_ACTION)
    async def on_feedback(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        click = click_of(body)
        if click is None:
            log.info("feedback click ignored: not a feedback value")
            return
        metrics.feedback(click.value)
        log.info("feedback %s", click.value)
        await quietly(
            client.chat_postEphemeral(
                channel=click.channel_id, user=click.user_id, thread_ts=click.thread_ts, text=THANKS
            )
        )
