"""Write the answer where the Ask said while Claude writes it, or one short error sentence.

    open_writer(slack, ask)
     ├── NativeStream      a thread: chat.startStream / appendStream / stopStream, falling back to
     ├── UpdatedMessages   chat.postMessage, then chat.update at a bounded rate (also top-level DMs)
     └── PrivateAnswer     the interaction's response_url, once the answer is complete

Streamed text goes out at most once per interval, never once per token, and an interval after it came
at the latest, should Claude pause. Long answers roll over into further messages before Slack's limits,
and a code block open at a cut is closed and reopened.

An answer Claude finished (also one cut at its length limit, or declined) ends with Slack's own feedback
buttons under its last message: given to the final chat.stopStream, or on a posted answer's last
chat.postMessage/chat.update, whose text then also goes in section blocks (Slack shows blocks instead of
`text`). No buttons on a message that rolled over, an empty answer, or one stopped, interrupted, timed out
or failed; nor on private answers (response_url), which are ephemeral. Should Slack refuse the blocks,
the answer goes out without them. Clicks: `bot.surfaces.feedback`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.models.blocks import (
    ContextActionsBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.pipeline.ask import Ask, InConversation, Privately
from bot.pipeline.defuse import defuse_markdown, split_unfinished
from bot.pipeline.mrkdwn import escape_meant_as_text, split_unfinished_word, to_mrkdwn
from bot.pipeline.progress import quietly
from bot.pipeline.rollover import fitting_head, roll_over, split_message
from bot.pipeline.said import STOPPED, Notice, VisibleError, sentence_of
from bot.slack_calls import SlackCallFailed, slack_call

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 3_900  # mrkdwn per message: Slack shows long text best below 4,000 characters
STREAM_LIMIT = 10_000  # markdown per streamed message, below the ~12k where Slack refuses more blocks
STREAM_INTERVAL = 0.5  # seconds between appendStream calls
UPDATE_INTERVAL = 1.0  # seconds between chat.update calls (Tier 3)
RESPONSE_URL_USES = 5  # a response_url takes five posts within 30 minutes
# Of those, an answer leaves two: a shortcut's working note, and one note said privately beside it.
ANSWER_RESPONSE_URL_USES = RESPONSE_URL_USES - 2
TEXT_LIMIT = 39_000  # Slack truncates `text` past 40,000 characters
SECTION_LIMIT = 3_000  # mrkdwn per section block
FEEDBACK_ACTION = "answer_feedback"  # the buttons' action_id, taken by bot.surfaces.feedback
POSITIVE, NEGATIVE = "positive", "negative"  # the buttons' values, sent back with a click
STOP_NOTES = {
    "max_tokens": "_(The answer was cut off at its length limit.)_",
    "model_context_window_exceeded": "_(The answer was cut off at its length limit.)_",
    "pause_turn": "_(Claude paused after a long search. Ask again to have it go on.)_",
    "refusal": "_(Claude declined to answer this.)_",
}
STOPPED_NOTE = f"_({STOPPED.sentence})_"  # under an answer the reader stopped


class ReplyFailed(VisibleError):
    """Slack refused a post; carries Slack's error code only."""


class StoppedByReader(Exception):
    """The reader pressed Stop on the streaming answer."""


def stop_note(stop_reason: str | None) -> str | None:
    return STOP_NOTES.get(stop_reason or "")


def feedback_block() -> dict[str, Any]:
    """Slack's own thumbs up and down under an answer (a context_actions block of feedback_buttons)."""
    buttons = FeedbackButtonsElement(
        action_id=FEEDBACK_ACTION,
        positive_button=FeedbackButtonObject(text="👍", value=POSITIVE, accessibility_label="Good answer"),
        negative_button=FeedbackButtonObject(text="👎", value=NEGATIVE, accessibility_label="Bad answer"),
    )
    return ContextActionsBlock(elements=[buttons]).to_dict()


def answer_blocks(mrkdwn: str) -> list[dict[str, Any]]:
    """A posted message's text as section blocks, then the feedback buttons. Verbatim: the text is
    already what it should show (links explicit, nothing to ping), so Slack must not parse it again."""
    sections = [
        SectionBlock(text=MarkdownTextObject(text=piece, verbatim=True)).to_dict()
        for piece in split_message(mrkdwn, SECTION_LIMIT)
    ]
    return [*sections, feedback_block()]


async def say_privately(slack: AsyncWebClient, ask: Ask, text: str) -> None:
    """One message only the asker sees, where they asked. Never raises."""
    match ask.reply_to:
        case Privately(response_url):
            await quietly(AsyncWebhookClient(response_url).send(text=text, response_type="ephemeral"))
        case InConversation(channel, thread_ts):
            await quietly(
                slack.chat_postEphemeral(
                    channel=channel, user=ask.origin.user_id, text=text, thread_ts=thread_ts
                )
            )


def open_writer(slack: AsyncWebClient, ask: Ask, preface: str = "") -> ReplyWriter:
    match ask.reply_to:
        case InConversation(channel, thread_ts) if thread_ts is not None:
            team = ask.origin.user_team_id or ask.origin.team_id or ""  # the asker's own workspace, if known
            return NativeStream(slack, channel, thread_ts, ask.origin.user_id, team)
        case InConversation(channel, None):
            return UpdatedMessages(slack, channel, None)
        case Privately(response_url):
            return PrivateAnswer(response_url, preface)
    raise AssertionError(ask.reply_to)


class ReplyWriter(ABC):
    def __init__(self) -> None:
        self.messages = 0  # posted so far
        self.chars = 0  # of Claude's answer received
        self.has_words = False  # more than white space among them

    def posted(self) -> int:
        """Messages posted so far."""
        return self.messages

    async def append(self, markdown: str) -> None:
        """A piece of Claude's answer, as it arrives."""
        self.chars += len(markdown)
        self.has_words = self.has_words or bool(markdown.strip())
        await self._append(markdown)

    @abstractmethod
    async def _append(self, markdown: str) -> None: ...

    async def finish(self, note: str | None = None) -> None:
        """The answer is complete; `note` says if it ended early. With any words of Claude's, it ends
        with the feedback buttons where the writer can show them."""
        await self._finish(note, feedback=self.has_words)

    @abstractmethod
    async def _finish(self, note: str | None, *, feedback: bool) -> None: ...

    @property
    @abstractmethod
    def started(self) -> bool:
        """Whether any of the answer is on its way to the reader."""

    async def interrupt(self, why: Notice | Exception) -> None:
        """End early: the partial answer stays with a note saying why, or why alone is said (nothing, if
        the reader stopped it before its first word). Never raises."""
        try:
            if why == STOPPED:
                if self.started:
                    await self._finish(STOPPED_NOTE, feedback=False)
            elif self.started:
                await self._finish(f"_(Cut off: {sentence_of(why)})_", feedback=False)
            else:
                await self._say(f":warning: {sentence_of(why)}")
        except (ReplyFailed, StoppedByReader) as exc:
            log.warning("interrupted reply not written: %s", exc)

    @abstractmethod
    async def _say(self, mrkdwn: str) -> None:
        """Post one short message."""

    def shown_at(self) -> tuple[str, str] | None:
        """The message the answer is being shown in now, as (ts, "stream" or "message"); None when none
        is, or when it is private."""
        return None

    def close(self) -> None:
        """No write is made from now on unless asked for: one waiting for its time is dropped (the answer
        was taken over elsewhere, say)."""
        return None


class _Throttled(ReplyWriter):
    """Collects pieces and writes them out at most once per `interval`. A piece that came too soon after
    a write goes out once the interval is over, should Claude pause (a web search, a long think) before
    its next words."""

    interval = UPDATE_INTERVAL

    def __init__(self) -> None:
        super().__init__()
        self._pending = ""
        self._last_write = float("-inf")
        self._due: asyncio.TimerHandle | None = None  # a late write, waiting for its interval to end
        self._late: asyncio.Task[None] | None = None  # a late write being made

    @property
    def started(self) -> bool:
        return self.messages > 0 or bool(self._pending)

    async def _append(self, markdown: str) -> None:
        await self._caught_up()
        self._pending += markdown
        wait = self._last_write + self.interval - time.monotonic()
        if wait <= 0:
            self._drop_due()  # its time has come, and this write takes it
            await self._flush(final=False)
        elif self._due is None:
            self._due = asyncio.get_running_loop().call_later(wait, self._write_late)

    def _write_late(self) -> None:
        self._due = None
        self._late = asyncio.ensure_future(self._flush(final=False))

    async def _caught_up(self) -> None:
        """A late write being made is done first (writes go in order), and how it failed is raised here."""
        late, self._late = self._late, None
        if late is not None:
            await late

    async def _finish(self, note: str | None, *, feedback: bool) -> None:
        self._drop_due()  # this write takes what waits
        await self._caught_up()
        if note:
            self._pending += f"\n\n{note}"
        await self._flush(final=True, feedback=feedback)

    async def interrupt(self, why: Notice | Exception) -> None:
        self._drop_due()
        with contextlib.suppress(ReplyFailed, StoppedByReader):  # ending anyway, and saying why
            await self._caught_up()
        await super().interrupt(why)

    def close(self) -> None:
        self._drop_due()
        if self._late is not None:  # not awaited by anyone now: how it ended is not worth a warning
            self._late.add_done_callback(lambda late: late.cancelled() or late.exception())

    def _drop_due(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None

    async def _flush(self, *, final: bool, feedback: bool = False) -> None:
        self._last_write = time.monotonic()
        pending, self._pending = self._pending, ""
        await self._write(pending, final=final, feedback=feedback)

    @abstractmethod
    async def _write(self, markdown: str, *, final: bool, feedback: bool = False) -> None:
        """`feedback`: this final write ends the answer with the feedback buttons."""


class UpdatedMessages(_Throttled):
    """Posts the first words at once, then edits the message; a full message rolls over to a new one."""

    def __init__(self, slack: AsyncWebClient, channel: str, thread_ts: str | None) -> None:
        super().__init__()
        self._slack, self._channel, self._thread_ts = slack, channel, thread_ts
        self._ts: str | None = None  # the message being written
        self._markdown = ""  # its whole text so far
        self._shown = ""  # what Slack shows of it

    def adopt(self, ts: str, markdown: str) -> None:
        """Carry on in a message another writer began (and counted)."""
        self._ts, self._markdown, self._shown = ts, markdown, ""

    def next_message(self) -> None:
        """The message being written is full: what follows begins the next one."""
        self._ts, self._markdown, self._shown = None, "", ""

    async def _write(self, markdown: str, *, final: bool, feedback: bool = False) -> None:
        text = self._markdown + markdown
        while not _fits_a_message(text):
            head, tail = fitting_head(text, MESSAGE_LIMIT, _fits_a_message)
            if not tail.strip():  # the head is the last message: it gets the buttons
                text = head
                break
            await self._show(head)
            self.next_message()
            text = tail
        self._markdown = text
        if text.strip():
            await self._show(text, feedback=final and feedback)

    async def _show(self, markdown: str, *, feedback: bool = False) -> None:
        mrkdwn = to_mrkdwn(markdown)
        if mrkdwn == self._shown and not feedback:
            return
        blocks = answer_blocks(mrkdwn) if feedback else None
        if self._ts is None:
            self._ts = await _post(self._slack, self._channel, self._thread_ts, mrkdwn, blocks)
            self.messages += 1
        else:
            await _call(self._slack.chat_update, blocks, channel=self._channel, ts=self._ts, text=mrkdwn)
        self._shown = mrkdwn

    async def _say(self, mrkdwn: str) -> None:
        await _post(self._slack, self._channel, self._thread_ts, mrkdwn)

    def shown_at(self) -> tuple[str, str] | None:
        return None if self._ts is None else (self._ts, "message")


class NativeStream(_Throttled):
    """Slack's native streaming in a thread; on refusal or expiry it carries on as UpdatedMessages."""

    interval = STREAM_INTERVAL

    def __init__(self, slack: AsyncWebClient, channel: str, thread_ts: str, user: str, team: str) -> None:
        super().__init__()
        self._slack, self._channel, self._thread_ts = slack, channel, thread_ts
        self._user, self._team = user, team  # channels need both to stream
        self._ts: str | None = None  # the streaming message
        self._markdown = ""  # its text so far
        self._written = ""  # the answer so far, as Claude wrote it
        self._fallback: UpdatedMessages | None = None
        self._ended = False  # the whole answer is shown and its stream ended: nothing is added to it

    async def _write(self, markdown: str, *, final: bool, feedback: bool = False) -> None:
        if self._ended:  # a Stop or the deadline as the stream was ended: nothing is left to cut
            return
        if not final:  # a ping, a link or a word may be cut at the end: make it safe with what follows
            markdown, held = split_unfinished(markdown)
            markdown, word = split_unfinished_word(markdown)
            self._pending = word + held + self._pending
        escaped = escape_meant_as_text(self._written, markdown)
        self._written += markdown
        markdown = defuse_markdown(escaped)
        while markdown and self._fallback is None:
            head, markdown = roll_over(self._markdown, markdown, STREAM_LIMIT - len(self._markdown))
            await self._stream(head)
            if markdown and self._fallback is not None:  # refused as this message filled up
                self._fallback.next_message()
            elif markdown:  # this message is full
                await self._stop()
        if self._fallback is not None:
            await self._fallback._write(markdown, final=final, feedback=feedback)
        elif final:
            self._ended = True
            await asyncio.shield(self._stop(feedback=feedback))  # a cancel now must not leave it open

    async def _stream(self, markdown: str) -> None:
        if not markdown:
            return
        try:
            with slack_call("streaming"):
                await self._send_to_stream(markdown)
        except SlackCallFailed as exc:
            if not exc.refused:
                raise ReplyFailed(str(exc)) from None
            if exc.error == "stopped_by_user":
                raise StoppedByReader() from None
            log.info("native streaming %s refused (%s): falling back to chat.update", self._ts, exc.error)
            self._fall_back()
            assert self._fallback is not None
            await self._stop()  # not left streaming: the rest goes in by chat.update
            await self._fallback._write(markdown, final=False)

    async def _send_to_stream(self, markdown: str) -> None:
        """Start the stream with the first piece, append the rest."""
        if self._ts is None:
            response = await self._slack.chat_startStream(
                channel=self._channel,
                thread_ts=self._thread_ts,
                markdown_text=markdown,
                recipient_user_id=self._user,
                recipient_team_id=self._team,
            )
            self._ts = str(response["ts"])
            self.messages += 1
        else:
            await self._slack.chat_appendStream(channel=self._channel, ts=self._ts, markdown_text=markdown)
        self._markdown += markdown

    def _fall_back(self) -> None:
        self.interval = UpdatedMessages.interval  # chat.update's pace from now on, not a stream's
        self._fallback = UpdatedMessages(self._slack, self._channel, self._thread_ts)
        if self._ts is not None:
            self._fallback.adopt(self._ts, self._markdown)

    async def _stop(self, *, feedback: bool = False) -> None:
        """End the streaming message; `feedback`: it ends the answer, with the buttons under it."""
        if self._ts is None:
            return
        ts, self._ts, self._markdown = self._ts, None, ""
        for blocks in ([feedback_block()], None) if feedback else (None,):
            try:
                with slack_call("chat.stopStream"):
                    await self._slack.chat_stopStream(channel=self._channel, ts=ts, blocks=blocks)
                return
            except SlackCallFailed as exc:  # an expired or stopped stream keeps what it showed
                if not exc.refused:  # what it showed stays too; Slack ends the stream in time
                    log.warning("chat.stopStream %s failed: %s", ts, exc)
                    return
                log.info("chat.stopStream %s: %s", ts, exc.error)
                if not (blocks and _refused_blocks(exc)):  # else stop it without: it must not stay open
                    return

    @property
    def started(self) -> bool:
        return super().started or (self._fallback is not None and self._fallback.started)

    async def _say(self, mrkdwn: str) -> None:
        await _post(self._slack, self._channel, self._thread_ts, mrkdwn)

    def posted(self) -> int:
        return self.messages + (self._fallback.messages if self._fallback else 0)

    def shown_at(self) -> tuple[str, str] | None:
        if self._fallback is not None:
            return self._fallback.shown_at()
        return None if self._ts is None else (self._ts, "stream")


class _WholeAnswer(ReplyWriter):
    """Ephemeral answers can't be edited as they grow, so the answer goes out whole, to the asker only,
    split where it is long."""

    def __init__(self, preface: str = "") -> None:
        super().__init__()
        self._markdown = preface
        self._said = 0  # pieces posted: cut off after them, only the rest and the note go

    @property
    def started(self) -> bool:
        return self.chars > 0

    async def _append(self, markdown: str) -> None:
        self._markdown += markdown

    async def _finish(self, note: str | None, *, feedback: bool) -> None:  # noqa: ARG002 (ephemeral: none)
        mrkdwn = to_mrkdwn(f"{self._markdown}\n\n{note}" if note else self._markdown)
        for piece in self._pieces(mrkdwn)[self._said :]:
            await self._say(piece)
            self._said += 1

    def _pieces(self, mrkdwn: str) -> list[str]:
        return split_message(mrkdwn, MESSAGE_LIMIT)


class PrivateAnswer(_WholeAnswer):
    """Through a slash command's or shortcut's response URL."""

    def __init__(self, response_url: str, preface: str) -> None:
        super().__init__(preface)
        self._response_url = response_url
        self._limit: int | None = None  # chosen once: pieces already posted must split the same again

    def _pieces(self, mrkdwn: str) -> list[str]:
        if self._limit is None:
            fits = len(super()._pieces(mrkdwn)) <= ANSWER_RESPONSE_URL_USES
            self._limit = MESSAGE_LIMIT if fits else TEXT_LIMIT
        return split_message(mrkdwn, self._limit)[:ANSWER_RESPONSE_URL_USES]

    async def _say(self, mrkdwn: str) -> None:
        self.messages += 1
        await _respond(self._response_url, mrkdwn)


class EphemeralAnswer(_WholeAnswer):
    """With chat.postEphemeral where the question was asked: an answer that must not be seen by the
    others there (it draws on another conversation, which they may not be able to read)."""

    def __init__(self, slack: AsyncWebClient, ask: Ask) -> None:
        super().__init__()
        assert isinstance(ask.reply_to, InConversation)
        self._slack, self._channel, self._thread_ts = slack, ask.reply_to.channel, ask.reply_to.thread_ts
        self._user = ask.origin.user_id

    async def _say(self, mrkdwn: str) -> None:
        await _call(
            self._slack.chat_postEphemeral,
            channel=self._channel,
            user=self._user,
            text=mrkdwn,
            thread_ts=self._thread_ts,
        )
        self.messages += 1


def _fits_a_message(markdown: str) -> bool:
    return len(to_mrkdwn(markdown)) <= MESSAGE_LIMIT


async def _post(
    slack: AsyncWebClient,
    channel: str,
    thread_ts: str | None,
    text: str,
    blocks: list[dict[str, Any]] | None = None,
) -> str:
    # No unfurling: Slack would fetch every link in the answer and show previews nobody asked for.
    response = await _call(
        slack.chat_postMessage,
        blocks,
        channel=channel,
        thread_ts=thread_ts,
        text=text,
        unfurl_links=False,
        unfurl_media=False,
    )
    return str(response["ts"])


async def _call(
    method: Callable[..., Awaitable[AsyncSlackResponse]],
    blocks: list[dict[str, Any]] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Call `method`; with `blocks`, and should Slack refuse them, again with the text alone: the
    buttons must never cost the answer."""
    name = getattr(method, "__name__", "slack")
    try:
        with slack_call(name):
            response = await method(**params, **({"blocks": blocks} if blocks else {}))
    except SlackCallFailed as exc:
        if not (blocks and _refused_blocks(exc)):
            raise ReplyFailed(str(exc)) from None
        log.info("%s refused the answer's blocks (%s): sent without them", name, exc.error)
        return await _call(method, **params)
    return dict(response.data) if isinstance(response.data, dict) else {}


def _refused_blocks(exc: SlackCallFailed) -> bool:
    """Slack refused the blocks themselves (invalid_blocks, invalid_blocks_format, msg_blocks_too_long)."""
    return exc.refused and "blocks" in exc.error


async def _respond(response_url: str, text: str) -> None:
    try:
        with slack_call("response_url"):
            response = await AsyncWebhookClient(response_url).send(text=text, response_type="ephemeral")
    except SlackCallFailed as exc:
        raise ReplyFailed(str(exc)) from None
    if response.status_code != 200:
        raise ReplyFailed(f"response_url status {response.status_code}")
