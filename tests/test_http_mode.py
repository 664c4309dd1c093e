"""HTTP mode: signatures verified, url_verification answered, ack first and the answer after."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from slack_sdk.signature import SignatureVerifier

from bot.app import EVENTS_PATH, build_app, build_claude_client, build_slack_client
from bot.config import Settings
from tests.conftest import CHANNEL, bot_env, mention

SECRET = "test-signing-secret"


class HttpBot:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    async def post(
        self, body: str, *, content_type: str, secret: str = SECRET, age: float = 0, **headers: str
    ):
        timestamp = str(int(time.time() - age))
        signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
            **headers,
        }
        async with self.session.post(
            self.server.make_url(EVENTS_PATH), data=body, headers=headers
        ) as response:
            return response.status, await response.text()

    async def post_event(self, payload: dict, **kwargs):
        return await self.post(json.dumps(payload), content_type="application/json", **kwargs)


@pytest.fixture
async def http_bot(slack, claude) -> AsyncIterator[HttpBot]:
    env = bot_env(slack, claude, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET)
    settings = Settings.from_env(env)
    claude_client, slack_client = build_claude_client(settings), build_slack_client(settings)
    app = build_app(settings, slack_client, claude_client)
    async with TestServer(app.web_app(path=EVENTS_PATH)) as server, aiohttp.ClientSession() as session:
        yield HttpBot(server, session)
    await claude_client.close()
    await slack_client.session.close()


async def test_url_verification_is_answered_with_the_challenge(http_bot):
    status, body = await http_bot.post_event({"type": "url_verification", "token": "t", "challenge": "c-123"})
    assert status == 200
    assert json.loads(body) == {"challenge": "c-123"}


@pytest.mark.parametrize(
    "tamper", [{"secret": "wrong-secret"}, {"age": 10 * 60}], ids=["bad_signature", "stale_timestamp"]
)
async def test_bad_or_stale_signature_is_refused_and_nothing_is_read(http_bot, slack, claude, tamper):
    payload = slack.events_api_envelope(mention("<@U0BOT> hi", ts="1.000001"))["payload"]
    status, _ = await http_bot.post_event(payload, **tamper)
    assert status == 401
    assert not claude.requests
    assert not [call for call in slack.calls if call.method != "auth.test"]


async def test_event_is_acked_before_claude_answers_and_answered_after(http_bot, slack, claude):
    claude.first_token_delay = 1.0
    payload = slack.events_api_envelope(mention("<@U0BOT> slow one", ts="2.000001", channel=CHANNEL))[
        "payload"
    ]

    status, _ = await http_bot.post_event(payload)

    assert status == 200
    assert not slack.calls_to("chat.startStream")  # the ack did not wait for Claude
    await slack.wait_for("reactions.remove")  # the answer is complete
    assert slack.thread_texts(CHANNEL, "2.000001") == ["Hello from fake Claude."]


async def test_retried_delivery_is_acked_and_not_answered_again(http_bot, slack, claude):
    payload = slack.events_api_envelope(mention("<@U0BOT> once", ts="3.000001"), event_id="Ev0HTTP")[
        "payload"
    ]
    assert (await http_bot.post_event(payload))[0] == 200
    await slack.wait_for("reactions.remove")
    retry = await http_bot.post_event(
        payload, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert retry[0] == 200
    marker = slack.events_api_envelope(mention("<@U0BOT> marker", ts="3.000002"))["payload"]
    await http_bot.post_event(marker)
    await slack.wait_for("reactions.remove", count=2)
    assert len(claude.requests) == 2


async def test_slash_command_over_http_acks_and_answers_privately(http_bot, slack, claude):
    form = {
        "command": "/claude",
        "text": "what is a mutex?",
        "user_id": "U0ALICE",
        "team_id": "T0TEAM",
        "channel_id": CHANNEL,
        "response_url": slack.response_url("http-1"),
        "trigger_id": "1.2.3",
    }
    status, body = await http_bot.post(urlencode(form), content_type="application/x-www-form-urlencoded")

    assert status == 200
    assert "Asking Claude" in body
    [response] = await slack.wait_for("response_url")
    assert response.params["response_type"] == "ephemeral"
    assert len(claude.requests) == 1
