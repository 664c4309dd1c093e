"""Answers taken over from a replica that stopped writing them (`bot.pipeline.inflight`): the cut answer
is marked as cut off, the question is read again from Slack, the only copy, and its own surface turns it
into an Ask as if it had just arrived. Slash commands and shortcuts are not resumed: their private reply
needs a response URL, which is a capability and is not kept."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.ask import BotIdentity
from bot.pipeline.inflight import Claim, Resume
from bot.pipeline.progress import quietly
from bot.pipeline.reply import STOPPED_NOTE
from bot.slack_calls import SlackCallFailed, slack_call
from bot.surfaces import Answer, assistant, direct_message, mention

log = logging.getLogger(__name__)

CUT_OFF = "\n\n_(Cut off: I restarted while writing this, so I'm answering again below.)_"
GONE = frozenset({"thread_not_found", "message_not_found", "channel_not_found", "not_in_channel"})
EVENT_TYPES = {"mention": "app_mention", "direct_message": "message", "assistant": "message"}


def resumer(slack: AsyncWebClient, bot: BotIdentity, answer: Answer) -> Resume:
    async def resume(claim: Claim, stopped: bool) -> None:
        if claim.surface not in EVENT_TYPES:  # not a claim this version wrote
            return
        if stopped:
            log.info("taken-over %s question was stopped meanwhile: not answered again", claim.surface)
            await _mark(slack, claim, "\n\n" + STOPPED_NOTE)
            return
        # Raises if Slack fails it: the claim stays for the next sweep, and nothing is said yet.
        message = await _read(slack, claim.channel, claim.ts)
        await _mark(slack, claim, CUT_OFF)
        if message is None:  # deleted meanwhile: nothing to answer
            log.info("taken-over %s question is gone", claim.surface)
            return
        body = _as_event(claim, message)
        if claim.surface == "assistant":
            ask = assistant.to_ask(body, bot)
        elif claim.surface == "mention":
            ask = mention.to_ask(body, bot)
        else:
            ask = direct_message.to_ask(body, bot)
        if ask is not None:
            await answer(replace(ask, taken_over=True))

    return resume


async def _mark(slack: AsyncWebClient, claim: Claim, note: str) -> None:
    """The cut answer's stream is ended with the note; a posted message gets it after what it shows."""
    if claim.reply_ts is None:
        return
    if claim.reply_kind == "stream":
        await quietly(slack.chat_stopStream(channel=claim.channel, ts=claim.reply_ts, markdown_text=note))
        return
    try:
        shown = await _read(slack, claim.channel, claim.reply_ts)
    except SlackCallFailed:
        return
    if shown is not None and isinstance(shown.get("text"), str):
        await quietly(slack.chat_update(channel=claim.channel, ts=claim.reply_ts, text=shown["text"] + note))


async def _read(slack: AsyncWebClient, channel: str, ts: str) -> Mapping[str, Any] | None:
    """One message by its ts, None if it is gone: Slack answers conversations.replies for a reply's ts
    with that message, and for a thread's parent with the parent first. Raises SlackCallFailed."""
    try:
        with slack_call("conversations.replies"):
            response = await slack.conversations_replies(channel=channel, ts=ts, limit=1)
    except SlackCallFailed as exc:
        if exc.error in GONE:
            return None
        log.info("taken-over answer: conversations.replies failed (%s)", exc.error)
        raise
    messages = response.get("messages")
    if not isinstance(messages, list):
        return None
    return next((m for m in messages if isinstance(m, Mapping) and m.get("ts") == ts), None)


def _as_event(claim: Claim, message: Mapping[str, Any]) -> dict[str, Any]:
    """The Events API payload the question first came in, rebuilt from Slack's copy of the message."""
    event = {
        **message,
        "type": EVENT_TYPES[claim.surface],
        "channel": claim.channel,
        "channel_type": "im" if claim.channel.startswith("D") else "channel",
    }
    if claim.thread_ts is not None:
        event["thread_ts"] = claim.thread_ts
    return {
        "type": "event_callback",
        "team_id": claim.team_id,
        "event_id": f"resumed-{claim.ts}",
        "event": event,
    }
