"""Message shortcuts: "Ask Claude about this thread" (a question in a modal) and "Summarize thread",
each answered privately to the person who used it, with the message's thread as context."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.ask import Ask, BotIdentity, Origin, Privately, SlackMessage, Thread, WorkingNote
from bot.pipeline.progress import quietly
from bot.surfaces import Answer

log = logging.getLogger(__name__)

ASK_ABOUT_THREAD = "ask_about_thread"
SUMMARIZE_THREAD = "summarize_thread"
SUMMARY_REQUEST = "Summarize this thread: the main points, the decisions made, and the open questions."
QUESTION_BLOCK, QUESTION_INPUT = "question", "text"
# The question comes after every message of the thread, whenever they were written.
AFTER_EVERYTHING = "9999999999.999999"


@dataclasses.dataclass(frozen=True, slots=True)
class ShortcutThread:
    """Who used a message shortcut, on which thread, and where to answer them: ids and the response URL
    only, which is all the question modal carries (as its private_metadata), never the thread's content."""

    team_id: str
    user_id: str
    channel_id: str
    thread_ts: str
    response_url: str

    def to_ask(self, question: str, bot: BotIdentity, enterprise_id: str | None) -> Ask:
        return Ask(
            # Each use its own request, though used twice at once on one thread.
            request_id=f"shortcut:{self.channel_id}:{self.thread_ts}:{uuid.uuid4().hex[:8]}",
            surface="shortcut",
            origin=Origin(
                self.user_id, self.team_id, enterprise_id=enterprise_id, channel_id=self.channel_id
            ),
            message=SlackMessage(ts=AFTER_EVERYTHING, text=question, user=self.user_id),
            history=Thread(self.channel_id, self.thread_ts),
            reply_to=Privately(self.response_url),
            bot=bot,
            progress=WorkingNote(self.response_url),
        )


THREAD_KEYS = frozenset(field.name for field in dataclasses.fields(ShortcutThread))


def thread_of(shortcut: Mapping[str, Any]) -> ShortcutThread | None:
    """The thread a message shortcut was used on, if all its ids and the response URL are there."""
    message = shortcut.get("message")
    return _thread(
        team_id=_id(shortcut.get("team")),
        user_id=_id(shortcut.get("user")),
        channel_id=_id(shortcut.get("channel")),
        thread_ts=message.get("thread_ts") or message.get("ts") if isinstance(message, Mapping) else None,
        response_url=shortcut.get("response_url"),
    )


def opened_for(view: Mapping[str, Any]) -> ShortcutThread | None:
    """The thread the modal was opened for, from the JSON object in its metadata."""
    try:
        fields = json.loads(view.get("private_metadata") or "")
    except (ValueError, TypeError):
        return None
    if not (isinstance(fields, dict) and fields.keys() == THREAD_KEYS):
        return None
    return _thread(**fields)


def _thread(**fields: object) -> ShortcutThread | None:
    """A ShortcutThread, when every field is a string that is not empty."""
    if not all(isinstance(value, str) and value for value in fields.values()):
        return None
    return ShortcutThread(**{name: str(value) for name, value in fields.items()})


def _id(entity: object) -> object:
    return entity.get("id") if isinstance(entity, Mapping) else None


def _question(view: Mapping[str, Any]) -> str:
    """The question typed into the modal, or "" if the submission carries none."""
    value: object = view
    for key in ("state", "values", QUESTION_BLOCK, QUESTION_INPUT, "value"):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def question_modal(thread: ShortcutThread) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": ASK_ABOUT_THREAD,
        "private_metadata": json.dumps(dataclasses.asdict(thread)),
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
            await answer(thread.to_ask(SUMMARY_REQUEST, bot, context.enterprise_id or None))

    @app.shortcut(ASK_ABOUT_THREAD)
    async def on_ask(ack: AsyncAck, shortcut: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        thread = thread_of(shortcut)
        trigger_id = shortcut.get("trigger_id")
        if thread is not None and isinstance(trigger_id, str):
            # A trigger expires after 3 seconds; Slack's refusal must not escape the listener.
            await quietly(client.views_open(trigger_id=trigger_id, view=question_modal(thread)))

    @app.view(ASK_ABOUT_THREAD)
    async def on_question(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        thread = opened_for(view)
        if thread is None or thread.user_id != _id(body.get("user")):
            await ack()  # not a modal we opened, or submitted by someone it was not opened for: ignored
            if thread is not None:
                log.info("modal submission ignored: submitted by another user than it was opened for")
            return
        question = _question(view)
        if not question:
            await ack(response_action="errors", errors={QUESTION_BLOCK: "Please type a question."})
            return
        await ack()
        bot = BotIdentity(context.bot_user_id, context.bot_id)
        await answer(thread.to_ask(question, bot, context.enterprise_id or None))
