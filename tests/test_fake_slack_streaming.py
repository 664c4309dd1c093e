"""FakeSlack streaming, views, reactions, assistant methods and new payloads, through the real clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.models.messages.chunk import MarkdownTextChunk, TaskUpdateChunk
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack

DM, CHANNEL, PARENT = "D0ALICE", "C0GENERAL", "1790000000.000100"
TO_ALICE: dict[str, Any] = {"recipient_user_id": "U0ALICE", "recipient_team_id": "T0TEAM"}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_thread(DM, [{"user": "U0ALICE", "text": "question", "ts": PARENT}])
        yield fake


@pytest.fixture
def web(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as raised:
        await call
    return str(raised.value.response["error"])


async def start(web: AsyncWebClient, text: str = "Hel", channel: str = DM) -> str:
    started = await web.chat_startStream(channel=channel, thread_ts=PARENT, markdown_text=text, **TO_ALICE)
    return str(started["ts"])


async def test_start_append_stop_builds_one_threaded_reply(slack: FakeSlack, web: AsyncWebClient) -> None:
    started = await web.chat_startStream(channel=DM, thread_ts=PARENT, markdown_text="Hel")
    ts = started["ts"]
    assert (started["ok"], started["channel"]) == (True, DM)
    await web.chat_appendStream(channel=DM, ts=ts, markdown_text="lo **wor")
    assert (slack.message(DM, ts)["text"], slack.message(DM, ts)["streaming"]) == ("Hello **wor", True)

    stopped = await web.chat_stopStream(channel=DM, ts=ts, markdown_text="ld**", metadata={"event_type": "x"})
    assert stopped["message"]["text"] == "Hello **world**"
    assert slack.message(DM, ts)["streaming"] is False
    assert slack.thread_texts(DM, PARENT) == ["Hello **world**"]
    replies = await web.conversations_replies(channel=DM, ts=PARENT)
    assert [m["text"] for m in replies["messages"]] == ["question", "Hello **world**"]
    assert "metadata" not in replies["messages"][1]  # only with include_all_metadata

    assert await error_of(web.chat_appendStream(channel=DM, ts=ts, markdown_text="!")) == (
        "message_not_in_streaming_state"
    )
    assert await error_of(web.chat_stopStream(channel=DM, ts=ts)) == "message_not_in_streaming_state"
    assert await error_of(web.chat_appendStream(channel=DM, ts="1.000000", markdown_text="!")) == (
        "message_not_found"
    )
    assert await error_of(web.chat_startStream(channel=DM, thread_ts="", markdown_text="x")) == (
        "invalid_arguments"
    )


async def test_expired_stream_refuses_appends_and_chat_update_recovers(
    slack: FakeSlack, web: AsyncWebClient
) -> None:
    slack.stream_lifetime = 0.05
    ts = await start(web)
    await asyncio.sleep(0.06)
    assert slack.message(DM, ts)["streaming"] is False
    append = web.chat_appendStream(channel=DM, ts=ts, markdown_text="lo")
    assert await error_of(append) == "message_not_in_streaming_state"
    assert await error_of(web.chat_stopStream(channel=DM, ts=ts)) == "message_not_in_streaming_state"

    await web.chat_update(channel=DM, ts=ts, markdown_text="Hello, in full")
    assert slack.thread_texts(DM, PARENT) == ["Hello, in full"]


async def test_stop_by_user(slack: FakeSlack, web: AsyncWebClient) -> None:
    ts = await start(web)
    slack.stop_by_user(ts)
    assert slack.message(DM, ts)["streaming"] is False
    assert await error_of(web.chat_appendStream(channel=DM, ts=ts, markdown_text="lo")) == "stopped_by_user"
    assert await error_of(web.chat_stopStream(channel=DM, ts=ts)) == "stopped_by_user"
    assert slack.thread_texts(DM, PARENT) == ["Hel"]


async def test_size_limits(slack: FakeSlack, web: AsyncWebClient) -> None:
    too_long = "x" * 12_001
    assert await error_of(web.chat_startStream(channel=DM, thread_ts=PARENT, markdown_text=too_long)) == (
        "msg_too_long"
    )
    ts = await start(web, "12345")
    assert await error_of(web.chat_appendStream(channel=DM, ts=ts, markdown_text=too_long)) == "msg_too_long"
    halves = [{"type": "markdown_text", "text": "x" * 6_001}] * 2
    assert await error_of(web.chat_appendStream(channel=DM, ts=ts, chunks=halves)) == "msg_too_long"

    slack.stream_total_limit = 10
    append = web.chat_appendStream(channel=DM, ts=ts, markdown_text="678901")
    assert await error_of(append) == "msg_blocks_too_long"
    assert slack.message(DM, ts)["text"] == "12345"  # the refused append changed nothing
    await web.chat_appendStream(channel=DM, ts=ts, markdown_text="67890")
    assert await error_of(web.chat_stopStream(channel=DM, ts=ts, markdown_text="!")) == "msg_blocks_too_long"
    assert slack.message(DM, ts)["streaming"] is True


async def test_channels_need_both_recipients(web: AsyncWebClient) -> None:
    for channel in (CHANNEL, "G0PRIVATE"):
        no_one = web.chat_startStream(channel=channel, thread_ts=PARENT, markdown_text="x")
        assert await error_of(no_one) == "missing_recipient_user_id"
        no_team = web.chat_startStream(
            channel=channel, thread_ts=PARENT, markdown_text="x", recipient_user_id="U0ALICE"
        )
        assert await error_of(no_team) == "missing_recipient_team_id"
        assert await start(web, channel=channel)


async def test_refuse_streaming(slack: FakeSlack, web: AsyncWebClient) -> None:
    slack.refuse_streaming(times=1)
    assert await error_of(web.chat_startStream(channel=DM, thread_ts=PARENT, markdown_text="x")) == (
        "not_allowed"
    )
    assert await start(web)
    slack.refuse_streaming("feature_not_enabled")
    for _ in range(2):
        assert await error_of(web.chat_startStream(channel=DM, thread_ts=PARENT)) == "feature_not_enabled"


async def test_chunks_count_as_markdown(slack: FakeSlack, web: AsyncWebClient) -> None:
    started = await web.chat_startStream(channel=DM, thread_ts=PARENT, chunks=[MarkdownTextChunk(text="A")])
    ts = started["ts"]
    task = TaskUpdateChunk(id="t1", title="Reading the thread", status="in_progress")
    await web.chat_appendStream(channel=DM, ts=ts, chunks=[task, {"type": "markdown_text", "text": "B"}])
    await web.chat_stopStream(channel=DM, ts=ts, markdown_text="C", chunks=[MarkdownTextChunk(text="D")])
    assert slack.thread_texts(DM, PARENT) == ["ABCD"]
    assert slack.calls_to("chat.startStream")[0].params["chunks"] == [{"type": "markdown_text", "text": "A"}]
    bad = web.chat_startStream(channel=DM, thread_ts=PARENT, chunks=[{"type": "sparkles"}])
    assert await error_of(bad) == "invalid_chunks"


async def test_sdk_chat_stream_helper_end_to_end(slack: FakeSlack, web: AsyncWebClient) -> None:
    streamer = await web.chat_stream(channel=CHANNEL, thread_ts=PARENT, buffer_size=8, **TO_ALICE)
    assert await streamer.append(markdown_text="Hi ") is None  # buffered below buffer_size
    flushed = await streamer.append(markdown_text="there, ")
    assert flushed is not None and flushed["ts"] == streamer.ts
    await streamer.append(markdown_text="from the helper")
    await streamer.stop(markdown_text=".")
    assert [c.method for c in slack.calls if c.method.endswith("Stream")] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    ]
    assert streamer.ts is not None
    message = slack.message(CHANNEL, streamer.ts)
    assert (message["text"], message["streaming"]) == ("Hi there, from the helper.", False)

    empty = await web.chat_stream(channel=DM, thread_ts=PARENT)
    await empty.stop()  # starts with no text, then stops with chunks=[]
    assert empty.ts is not None and slack.message(DM, empty.ts)["text"] == ""


async def test_reactions(slack: FakeSlack, web: AsyncWebClient) -> None:
    await web.reactions_add(channel=DM, timestamp=PARENT, name="eyes")
    await web.reactions_add(channel=DM, timestamp=PARENT, name="hourglass")
    assert await error_of(web.reactions_add(channel=DM, timestamp=PARENT, name="eyes")) == "already_reacted"
    await web.reactions_remove(channel=DM, timestamp=PARENT, name="hourglass")
    assert slack.reactions(DM, PARENT) == {"eyes"}
    remove = web.reactions_remove(channel=DM, timestamp=PARENT, name="hourglass")
    assert await error_of(remove) == "no_reaction"
    assert slack.reactions(DM, "1.000000") == set()


async def test_views_open_and_update(slack: FakeSlack, web: AsyncWebClient) -> None:
    modal = {
        "type": "modal",
        "callback_id": "ask",
        "title": {"type": "plain_text", "text": "Ask"},
        "blocks": [],
    }
    opened = (await web.views_open(trigger_id="1.2.fake", view=modal))["view"]
    assert opened["id"].startswith("V") and opened["callback_id"] == "ask"
    updated = await web.views_update(view_id=opened["id"], view={**modal, "private_metadata": "m"})
    assert (updated["view"]["id"], slack.views[opened["id"]]["private_metadata"]) == (opened["id"], "m")
    assert slack.calls_to("views.open")[0].params["trigger_id"] == "1.2.fake"
    assert await error_of(web.views_update(view_id="V0NONE", view=modal)) == "not_found"

    submitted = slack.view_submission_envelope("ask", values={"q": {"a": {"value": "hi"}}})
    assert submitted["payload"]["view"]["id"] == opened["id"]
    assert submitted["payload"]["view"]["private_metadata"] == "m"


async def test_update_and_post_accept_markdown_blocks_and_metadata(
    slack: FakeSlack, web: AsyncWebClient
) -> None:
    metadata = {"event_type": "assistant_thread_context", "event_payload": {"channel_id": CHANNEL}}
    posted = await web.chat_postMessage(
        channel=DM, thread_ts=PARENT, markdown_text="**one**", metadata=metadata
    )
    ts = posted["ts"]
    assert slack.message(DM, ts)["text"] == "**one**"
    with_metadata = await web.conversations_replies(channel=DM, ts=PARENT, include_all_metadata=True)
    assert with_metadata["messages"][1]["metadata"] == metadata

    await web.chat_update(channel=DM, ts=ts, markdown_text="**two**")
    assert slack.thread_texts(DM, PARENT) == ["**two**"]
    blocks = [{"type": "markdown", "text": "# three"}]
    # chat_update() warns (an error here) without text or markdown_text, so send blocks alone raw
    metadata = {"event_type": "y", "event_payload": {}}
    await web.api_call("chat.update", json={"channel": DM, "ts": ts, "blocks": blocks, "metadata": metadata})
    message = slack.message(DM, ts)
    assert (message["text"], message["blocks"], message["metadata"]["event_type"]) == ("# three", blocks, "y")
    too_long = web.chat_update(channel=DM, ts=ts, markdown_text="x" * 12_001)
    assert await error_of(too_long) == "msg_too_long"


async def test_assistant_methods_validate_required_params(slack: FakeSlack, web: AsyncWebClient) -> None:
    await web.assistant_threads_setStatus(channel_id=DM, thread_ts=PARENT, status="is thinking…")
    await web.assistant_threads_setStatus(channel_id=DM, thread_ts=PARENT, status="")  # clears it
    prompts = [{"title": "Summarise", "message": "Summarise this channel"}]
    await web.assistant_threads_setSuggestedPrompts(channel_id=DM, prompts=prompts, title="Try")
    await web.assistant_threads_setTitle(channel_id=DM, thread_ts=PARENT, title="Question")
    assert slack.calls_to("assistant.threads.setSuggestedPrompts")[0].params["prompts"] == prompts

    for method, params in (
        ("assistant.threads.setStatus", {"channel_id": DM, "status": "x"}),
        ("assistant.threads.setStatus", {"channel_id": DM, "thread_ts": PARENT}),
        ("assistant.threads.setSuggestedPrompts", {"channel_id": DM}),
        ("assistant.threads.setTitle", {"channel_id": DM, "thread_ts": PARENT}),
    ):
        assert await error_of(web.api_call(method, json=params)) == "invalid_arguments"


async def test_bolt_routes_the_new_payloads(slack: FakeSlack, web: AsyncWebClient) -> None:
    app = AsyncApp(client=web, request_verification_enabled=False)
    seen: dict[str, Any] = {}

    @app.message_shortcut("summarise")
    async def shortcut(ack: Any, shortcut: dict[str, Any], context: Any) -> None:
        await ack()
        seen["shortcut"] = (shortcut["message"]["text"], context.channel_id, context.user_id)

    @app.view_submission("ask")
    async def submission(ack: Any, view: dict[str, Any], context: Any) -> None:
        await ack()
        seen["view"] = (view["state"]["values"], view["private_metadata"], context.team_id)

    @app.event("assistant_thread_started")
    async def started(event: dict[str, Any], context: Any) -> None:
        seen["started"] = (context.channel_id, context.thread_ts, event["assistant_thread"]["context"])

    @app.event("assistant_thread_context_changed")
    async def changed(context: Any) -> None:
        seen["changed"] = context.channel_id

    @app.event("agent_session_stopped")
    async def stopped(event: dict[str, Any]) -> None:
        seen["stopped"] = event["streaming_message_ts"]

    @app.event("app_home_opened")
    async def home(event: dict[str, Any], set_suggested_prompts: Any) -> None:
        seen["home"] = (event["tab"], set_suggested_prompts is not None)

    handler = AsyncSocketModeHandler(app, slack.app_token)
    await handler.connect_async()
    ts = await start(web)
    envelopes = [
        slack.message_shortcut_envelope("summarise", message={"type": "message", "text": "hm", "ts": PARENT}),
        slack.view_submission_envelope("ask", values={"b": {"a": {"value": "v"}}}, private_metadata="pm"),
        slack.assistant_thread_started_envelope(thread_ts=PARENT),
        slack.assistant_context_changed_envelope(thread_ts=PARENT, context_channel_id="C0OTHER"),
        slack.agent_session_stopped_envelope(
            channel_id=DM, user_id="U0ALICE", thread_ts=PARENT, streaming_message_ts=[ts]
        ),
        slack.app_home_opened_envelope(),
    ]
    try:
        await slack.wait_for_socket()
        for envelope in envelopes:
            await slack.send_envelope(envelope)
            await slack.wait_for_ack(envelope["envelope_id"])
        async with asyncio.timeout(2):
            while len(seen) < len(envelopes):
                await asyncio.sleep(0.01)
    finally:
        await handler.close_async()

    assert envelopes[0]["type"] == "interactive" and envelopes[0]["accepts_response_payload"] is False
    assert envelopes[1]["accepts_response_payload"] is True
    assert seen["shortcut"] == ("hm", CHANNEL, "U0ALICE")
    assert seen["view"] == ({"b": {"a": {"value": "v"}}}, "pm", "T0TEAM")
    assert seen["started"] == (
        DM,
        PARENT,
        {"channel_id": CHANNEL, "team_id": "T0TEAM", "enterprise_id": None},
    )
    assert seen["changed"] == DM
    assert seen["stopped"] == [ts]
    assert seen["home"] == ("messages", True)
    assert await error_of(web.chat_appendStream(channel=DM, ts=ts, markdown_text="lo")) == "stopped_by_user"
