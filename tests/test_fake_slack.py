"""Checks that FakeSlack speaks Slack's wire protocol well enough for the real slack_sdk clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_api import FakeSlack

THREAD = [
    {"user": "U0ALICE", "text": "parent", "ts": "1790000000.000100"},
    {"user": "U0BOB", "text": "one", "ts": "1790000010.000200"},
    {"user": "U0ALICE", "text": "two", "ts": "1790000020.000300"},
    {"user": "U0BOB", "text": "three", "ts": "1790000030.000400"},
    {"user": "U0ALICE", "text": "four", "ts": "1790000040.000500"},
]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def web(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


async def read_thread(web: AsyncWebClient, **kwargs: Any) -> tuple[list[str], list[bool]]:
    texts: list[str] = []
    has_more: list[bool] = []
    cursor = None
    while True:
        page = await web.conversations_replies(channel="C1", ts=THREAD[0]["ts"], cursor=cursor, **kwargs)
        assert len(page["messages"]) <= 2
        texts += [m["text"] for m in page["messages"]]
        has_more.append(page["has_more"])
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            return texts, has_more


async def test_auth_test_and_token_checks(slack: FakeSlack, web: AsyncWebClient) -> None:
    auth = await web.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("U0BOT", "B0BOT", "T0TEAM")
    assert slack.calls[0].headers["authorization"] == "Bearer xoxb-test"

    with pytest.raises(SlackApiError) as bad:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as wrong_type:
        await web.apps_connections_open(app_token=slack.bot_token)
    assert wrong_type.value.response["error"] == "not_allowed_token_type"
    opened = await web.apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith("ws://127.0.0.1:")


async def test_replies_paginate_and_filter(slack: FakeSlack, web: AsyncWebClient) -> None:
    slack.add_thread("C1", THREAD)
    assert await read_thread(web) == (["parent", "one", "two", "three", "four"], [True, True, False])
    assert slack.calls_to("conversations.replies")[1].params["cursor"]

    latest = THREAD[2]["ts"]
    assert (await read_thread(web, latest=latest, inclusive=True))[0] == ["parent", "one", "two"]
    assert (await read_thread(web, latest=latest))[0] == ["parent", "one"]
    assert (await read_thread(web, oldest=THREAD[3]["ts"], inclusive=True))[0] == ["three", "four"]
    assert slack.calls_to("conversations.replies")[-1].params["inclusive"] == "1"  # bools go as 1/0 in GETs

    reply = await web.conversations_replies(channel="C1", ts=THREAD[1]["ts"])
    assert [m["text"] for m in reply["messages"]] == ["one"]
    with pytest.raises(SlackApiError, match="thread_not_found"):
        await web.conversations_replies(channel="C1", ts="1.000000")
    with pytest.raises(SlackApiError, match="channel_not_found"):
        await web.conversations_replies(channel="C404", ts=THREAD[0]["ts"])


async def test_history_is_newest_first(slack: FakeSlack, web: AsyncWebClient) -> None:
    slack.add_history(
        "C2", [{"user": "U0ALICE", "text": t, "ts": f"17900000{i}0.000000"} for i, t in enumerate("abc")]
    )
    first = await web.conversations_history(channel="C2")
    second = await web.conversations_history(channel="C2", cursor=first["response_metadata"]["next_cursor"])
    assert [m["text"] for m in first["messages"] + second["messages"]] == ["c", "b", "a"]
    assert (first["has_more"], second["has_more"]) == (True, False)


async def test_posted_reply_shows_up_in_thread(slack: FakeSlack, web: AsyncWebClient) -> None:
    slack.add_thread("C1", THREAD[:2])
    posted = await web.chat_postMessage(channel="C1", thread_ts=THREAD[0]["ts"], text="thinking…")
    await web.chat_update(channel="C1", ts=posted["ts"], text="Answer")
    assert slack.calls_to("chat.postMessage")[0].params["thread_ts"] == THREAD[0]["ts"]  # sent as JSON

    replies = await web.conversations_replies(channel="C1", ts=THREAD[0]["ts"], limit=10)
    pages = [replies["messages"]]
    while cursor := replies["response_metadata"]["next_cursor"]:
        replies = await web.conversations_replies(channel="C1", ts=THREAD[0]["ts"], cursor=cursor)
        pages.append(replies["messages"])
    bot = [m for page in pages for m in page][-1]
    assert (bot["text"], bot["bot_id"], bot["user"], bot["thread_ts"]) == (
        "Answer",
        "B0BOT",
        "U0BOT",
        THREAD[0]["ts"],
    )


async def test_users_info(slack: FakeSlack, web: AsyncWebClient) -> None:
    slack.add_user("U0ALICE", display_name="alice", real_name="Alice Liddell")
    user = (await web.users_info(user="U0ALICE"))["user"]
    assert (user["profile"]["display_name"], user["is_bot"], user["is_restricted"]) == ("alice", False, False)
    with pytest.raises(SlackApiError) as missing:
        await web.users_info(user="U0NOBODY")
    assert missing.value.response["error"] == "user_not_found"


async def test_injected_rate_limit(slack: FakeSlack, web: AsyncWebClient) -> None:
    slack.fail("chat.postMessage", status=429, retry_after=1)
    with pytest.raises(SlackApiError) as limited:
        await web.chat_postMessage(channel="C1", text="hi")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "1"
    assert limited.value.response["error"] == "ratelimited"
    assert (await web.chat_postMessage(channel="C1", text="hi"))["ok"]
    assert len(await slack.wait_for("chat.postMessage", count=2)) == 2


async def test_wait_for_times_out_with_a_useful_message(slack: FakeSlack) -> None:
    with pytest.raises(AssertionError, match="chat.update"):
        await slack.wait_for("chat.update", timeout=0.05)


async def test_response_url_records_posts(slack: FakeSlack) -> None:
    response = await AsyncWebhookClient(slack.response_url("r1")).send(
        text="done", response_type="in_channel"
    )
    assert (response.status_code, response.body) == (200, "ok")
    [call] = await slack.wait_for("response_url")
    assert call.params == {"text": "done", "response_type": "in_channel", "_name": "r1"}


async def test_socket_mode_acks_and_reconnects(slack: FakeSlack) -> None:
    client = SocketModeClient(
        slack.app_token, web_client=AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    )
    requests: list[SocketModeRequest] = []

    async def ack(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        requests.append(request)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    client.socket_mode_request_listeners.append(ack)
    try:
        await client.connect()
        await slack.wait_for_socket()
        first = slack.events_api_envelope({"type": "app_mention", "text": "hi", "ts": "1790000000.000100"})
        await slack.send_envelope(first)
        assert await slack.wait_for_ack(first["envelope_id"]) == {"envelope_id": first["envelope_id"]}
        assert (requests[0].retry_attempt, requests[0].payload["event"]["text"]) == (0, "hi")

        await slack.disconnect()
        await slack.wait_for("apps.connections.open", count=2)
        await slack.wait_for_socket(count=2)
        command = slack.slash_command_envelope(text="again")
        await slack.send_envelope(command)
        await slack.wait_for_ack(command["envelope_id"])
        assert requests[1].payload["text"] == "again"
    finally:
        await client.close()
