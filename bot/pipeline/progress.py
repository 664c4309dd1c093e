"""Show at once that the bot is working, and clear it when the answer is complete.

A reaction on the invoking message in channels and top-level DMs; the thread's status line in
assistant threads; a private note for message shortcuts (a slash command's ack says it already).
Progress is a courtesy: a failure to show or clear it is logged, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.pipeline.ask import Progress, Reaction, ThreadStatus, WorkingNote
from bot.slack_calls import SlackCallFailed, slack_call

log = logging.getLogger(__name__)

WORKING_REACTION = "hourglass_flowing_sand"
SEARCH_REACTION = "mag"  # while Claude searches the web (WEB_SEARCH)
SEARCHING_STATUS = "is searching the web…"
WORKING_NOTE = ":hourglass_flowing_sand: Reading the thread and asking Claude…"
STATUS = "is thinking…"
WAITING_STATUS = "is waiting for a free moment…"
LOADING_MESSAGES = ["Reading the conversation…", "Asking Claude…"]
TITLE_LENGTH = 60


async def show_progress(slack: AsyncWebClient, progress: Progress) -> None:
    match progress:
        case WorkingNote(response_url):
            await quietly(AsyncWebhookClient(response_url).send(text=WORKING_NOTE, response_type="ephemeral"))
        case Reaction(channel, ts):
            await quietly(slack.reactions_add(channel=channel, timestamp=ts, name=WORKING_REACTION))
        case ThreadStatus(channel, thread_ts):
            await quietly(
                slack.assistant_threads_setStatus(
                    channel_id=channel, thread_ts=thread_ts, status=STATUS, loading_messages=LOADING_MESSAGES
                )
            )


async def show_waiting(slack: AsyncWebClient, progress: Progress) -> None:
    """Every Claude slot is busy: say so where there is a status line (a reaction already shows it)."""
    if isinstance(progress, ThreadStatus):
        await quietly(
            slack.assistant_threads_setStatus(
                channel_id=progress.channel, thread_ts=progress.thread_ts, status=WAITING_STATUS
            )
        )


async def show_waiting_over(slack: AsyncWebClient, progress: Progress) -> None:
    """Its turn came: the status line says it is working again (a reaction said so all along)."""
    if isinstance(progress, ThreadStatus):
        await show_progress(slack, progress)


async def show_searching(slack: AsyncWebClient, progress: Progress) -> None:
    """Claude is searching the web: the step, never its query (content, perhaps not for everyone here).
    A status line says so; in a channel a second reaction does, until `clear_searching`."""
    match progress:
        case Reaction(channel, ts):
            await quietly(slack.reactions_add(channel=channel, timestamp=ts, name=SEARCH_REACTION))
        case ThreadStatus(channel, thread_ts):
            await quietly(
                slack.assistant_threads_setStatus(
                    channel_id=channel, thread_ts=thread_ts, status=SEARCHING_STATUS
                )
            )


async def clear_searching(slack: AsyncWebClient, progress: Progress) -> None:
    if isinstance(progress, Reaction):  # a status line is cleared with the rest of the progress
        await quietly(
            slack.reactions_remove(channel=progress.channel, timestamp=progress.ts, name=SEARCH_REACTION)
        )


async def clear_progress(slack: AsyncWebClient, progress: Progress) -> None:
    match progress:
        case Reaction(channel, ts):
            await quietly(slack.reactions_remove(channel=channel, timestamp=ts, name=WORKING_REACTION))
        case ThreadStatus(channel, thread_ts):
            await quietly(
                slack.assistant_threads_setStatus(channel_id=channel, thread_ts=thread_ts, status="")
            )


async def name_thread(slack: AsyncWebClient, progress: Progress, question: str) -> None:
    """Title an assistant thread after its first question."""
    if isinstance(progress, ThreadStatus):
        first_line = question.strip().split("\n", 1)[0]
        title = first_line if len(first_line) <= TITLE_LENGTH else first_line[: TITLE_LENGTH - 1] + "…"
        await quietly(
            slack.assistant_threads_setTitle(
                channel_id=progress.channel, thread_ts=progress.thread_ts, title=title
            )
        )


async def quietly(call: Awaitable[Any]) -> None:
    """Await a courtesy call to Slack; a refusal or failure is logged, never raised."""
    try:
        with slack_call("courtesy call"):
            await call
    except SlackCallFailed as exc:
        log.info("courtesy call %s: %s", "refused" if exc.refused else "failed", exc.error)
    except Exception as exc:  # e.g. an odd response_url; a courtesy must never end the answer
        log.warning("courtesy call failed: %s", exc.__class__.__name__)
