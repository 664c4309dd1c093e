"""Message shortcuts: "Ask Claude about this thread" (a question in a modal) and "Summarize thread",
each answered privately to the person who used it, with the message's thread as context."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.ask import Ask, BotIdentity, Privately, SlackMessage, Thread, WorkingNote
from bot.pipeline.progress import quietly
from bot.surfaces import Answer

log = logging.getLogger(__name__)

ASK_ABOUT_THREAD = "ask_about_thread"
SUMMARIZE_THREAD = "summarize_thread"
SUMMARY_REQUEST = "Summarize this thread: the main points, the decisions made, and the open questions."
QUESTION_BLOCK, QUESTION_INPUT = "question", "text"
# The question comes after every message of the thread, whenever they were written.
AFTER_EVERYTHING = "9999999999.999999"


def thread_of(shortcut: Mapping[str, Any]) -> tuple[str, str, str, str, str] | None:
    """(team, user, channel, thread_ts, response_url) of a message shortcut, if all are there."""
    message = shortcut.get("message") or {}
    fields = (
        _id(shortcut.get("team")),
        _id(shortcut.get("user")),
        _id(shortcut.get("channel")),
        message.get("thread_ts") or message.get("ts") if isinstance(message, Mapping) else None,
        shortcut.get("response_url"),
    )
    if not all(isinstance(field, str) and field for field in fields):
        return None
    team, user, channel, thread_ts, response_url = (str(field) for field in fields)
    return team, user, channel, thread_ts, response_url


def _id(entity: object) -> object:
    return entity.get("id") if isinstance(entity, Mapping) else None


def opened_for(view: Mapping[str, Any]) -> tuple[str, str, str, str, str] | None:
    """(team, user, channel, thread_ts, response_url) the modal was opened with, from its metadata."""
    try:
        fields = json.loads(view.get("private_metadata") or "")
    except (ValueError, TypeError):
        return None
    if not (isinstance(fields, list) and len(fields) == 5 and all(isinstance(f, str) and f for f in fields)):
        return None
    team, user, channel, thread_ts, response_url = fields
    return team, user, channel, thread_ts, response_url


def _question(view: Mapping[str, Any]) -> str:
    """The question typed into the modal, or "" if the submission carries none."""
    value: object = view
    for key in ("state", "values", QUESTION_BLOCK, QUESTION_INPUT, "value"):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def to_ask(
    team: str,
    user: str,
    channel: str,
    thread_ts: str,
    response_url: str,
    question: str,
    bot: BotIdentity,
    enterprise: str = "",
) -> Ask:
    return Ask(
        request_id=f"shortcut:{channel}:{thread_ts}",
        surface="shortcut",
        team_id=team,
        user_id=user,
        message=SlackMessage(ts=AFTER_EVERYTHING, text=question, user=user),
        history=Thread(channel, thread_ts),
        reply_to=Privately(response_url),
        bot=bot,
        progress=WorkingNote(response_url),
        enterprise_id=enterprise,
        channel_id=channel,
    )


def question_modal(team: str, user: str, channel: str, thread_ts: str, response_url: str) -> dict[str, Any]:
    # Ids and the response URL only: the modal carries no content of the thread.
    metadata = json.dumps([team, user, channel, thread_ts, response_url])
    return {
        "type": "modal",
        "callback_id": ASK_ABOUT_THREAD,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Ask Claude"},
        "submit": {"type": "plain_text", "text": "Ask"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": QUESTION_BLOCK,
                "label": {"type": "plain_text", "text": "Your question about this thread"},
                "element": {"type": "plain_text_input", "action_id": QUESTION_INPUT, "multiline": True},
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Only you will see the answer. Nothing is kept."}],
            },
        ],
    }


def register(app: AsyncApp, answer: Answer) -> None:
    @app.shortcut(SUMMARIZE_THREAD)
    async def on_summarize(ack: AsyncAck, shortcut: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        thread = thread_of(shortcut)
        if thread is not None:
            bot = BotIdentity(context.bot_user_id, context.bot_id)
            await answer(to_ask(*thread, SUMMARY_REQUEST, bot, context.enterprise_id or ""))

    @app.shortcut(ASK_ABOUT_THREAD)
    async def on_ask(ack: AsyncAck, shortcut: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        thread = thread_of(shortcut)
        trigger_id = shortcut.get("trigger_id")
        if thread is not None and isinstance(trigger_id, str):
            # A trigger expires after 3 seconds; Slack's refusal must not escape the listener.
            await quietly(client.views_open(trigger_id=trigger_id, view=question_modal(*thread)))

    @app.view(ASK_ABOUT_THREAD)
    async def on_question(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        fields = opened_for(view)
        if fields is None or fields[1] != _id(body.get("user")):
            await ack()  # not a modal we opened, or submitted by someone it was not opened for: ignored
            if fields is not None:
                log.info("modal submission ignored: submitted by another user than it was opened for")
            return
        question = _question(view)
        if not question:
            await ack(response_action="errors", errors={QUESTION_BLOCK: "Please type a question."})
            return
        await ack()
        team, user, channel, thread_ts, response_url = fields
        await answer(
            to_ask(
                team,
                user,
                channel,
                thread_ts,
                response_url,
                question,
                BotIdentity(context.bot_user_id, context.bot_id),
                context.enterprise_id or "",
            )
        )
