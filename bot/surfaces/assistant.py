"""The agent surface (Slack's "Agents & AI apps"): threads in the bot's Messages tab become Asks.

Current agent view: `app_home_opened` on the Messages tab offers suggested prompts, each message in a
thread is answered with that thread as context, and the Stop button (`agent_session_stopped`) cancels
the answer being written. Legacy assistant view: `assistant_thread_started` greets and offers prompts,
and it and `assistant_thread_context_changed` say which channel the user is viewing. That channel's
id is remembered for the thread only as long as Slack's context says so (a new channel replaces it, no
channel forgets it: `bot.pipeline.viewed`), and the pipeline reads it only for a question plainly about
it, and only if the asker may read it then (`AccessCheck.may_read`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.ask import Ask, BotIdentity, InConversation, Thread, ThreadStatus
from bot.pipeline.progress import quietly
from bot.pipeline.viewed import ViewedChannels
from bot.surfaces import Answer, message_event

log = logging.getLogger(__name__)

Stop = Callable[[str, str], Awaitable[bool]]


GREETING = (
    "Hi! Ask me anything. I answer from this thread only, and I keep nothing: "
    "the conversation lives only here in Slack."
)
PROMPTS_TITLE = "Try one of these"
SUGGESTED_PROMPTS = [
    {"title": "Summarize this channel", "message": "Summarize the recent discussion in this channel."},
    {"title": "Draft a message", "message": "Help me draft a short, friendly update for my team about "},
    {"title": "Explain some code", "message": "Explain what this code does, step by step:\n"},
    {"title": "Brainstorm", "message": "Give me five ideas for "},
]


def to_ask(body: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    """A person's message in a thread of their DM with the bot."""
    said = message_event(body)
    if said is None or said.event.get("channel_type") != "im":
        return None
    channel, thread_ts = said.channel, said.event.get("thread_ts")
    if not isinstance(thread_ts, str):
        return None
    return said.ask(
        "assistant",
        bot,
        history=Thread(channel, thread_ts),
        reply_to=InConversation(channel, thread_ts),
        progress=ThreadStatus(channel, thread_ts),
        agent_thread=True,
    )


def register(app: AsyncApp, answer: Answer, stop: Stop, viewed: ViewedChannels) -> None:
    """Register before the direct-message surface: these listeners take the DM's threaded messages."""

    async def in_a_dm_thread(body: dict[str, Any]) -> bool:
        event = body.get("event") or {}
        return event.get("channel_type") == "im" and isinstance(event.get("thread_ts"), str)

    @app.event("message", matchers=[in_a_dm_thread])
    async def on_thread_message(body: dict[str, Any], context: AsyncBoltContext) -> None:
        # Nothing awaited before the pipeline: a stopping process waits for what reached it.
        ask = to_ask(body, BotIdentity(context.bot_user_id, context.bot_id))
        if ask is not None:
            await answer(ask)

    @app.event("assistant_thread_started")
    async def on_thread_started(event: dict[str, Any], client: AsyncWebClient) -> None:
        thread = _thread_of(event)
        if thread is None:
            return
        channel, thread_ts, viewing = thread
        if viewing:
            await viewed.put(channel, thread_ts, viewing)
        await quietly(client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=GREETING))
        await quietly(
            client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, thread_ts=thread_ts, prompts=SUGGESTED_PROMPTS, title=PROMPTS_TITLE
            )
        )

    @app.event("assistant_thread_context_changed")
    async def on_context_changed(event: dict[str, Any]) -> None:
        thread = _thread_of(event)
        if thread is not None:  # Slack's context now: a new channel, or None when none is viewed
            await viewed.put(*thread)

    @app.event("app_home_opened")
    async def on_messages_tab(event: dict[str, Any], client: AsyncWebClient) -> None:
        channel = event.get("channel")
        if event.get("tab") == "messages" and isinstance(channel, str):
            await quietly(
                client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel, prompts=SUGGESTED_PROMPTS, title=PROMPTS_TITLE
                )
            )

    @app.event("agent_session_stopped")
    async def on_stop(event: dict[str, Any]) -> None:
        channel, thread_ts = event.get("channel"), event.get("thread_ts")
        if isinstance(channel, str) and isinstance(thread_ts, str):
            stopped = await stop(channel, thread_ts)
            log.info(
                "stop pressed in %s/%s: %s",
                channel,
                thread_ts,
                "cancelled" if stopped else "passed on to every replica",
            )


def _thread_of(event: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
    """The assistant thread's DM channel, thread ts, and the channel the user is viewing."""
    thread = event.get("assistant_thread")
    if not isinstance(thread, Mapping):
        return None
    channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
    if not (isinstance(channel, str) and isinstance(thread_ts, str)):
        return None
    context = thread.get("context")
    viewing = context.get("channel_id") if isinstance(context, Mapping) else None
    return channel, thread_ts, viewing if isinstance(viewing, str) and viewing else None
