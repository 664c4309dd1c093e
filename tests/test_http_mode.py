"""HTTP mode: signatures verified, url_verification answered, ack first and the answer after."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

from bot.app import build_app, build_claude_client, build_slack_client
from bot.config import Settings
from bot.guards import SIGNATURE_WINDOW_SECONDS, recent_interaction_ids
from bot.http_intake import EVENTS_PATH, start_http
from bot.pipeline.answer import Pipeline
from bot.state import MemoryState, StateKeys
from tests.bot_process import run_to_exit
from tests.conftest import CHANNEL, bot_env, mention
from tests.test_every_envelope_acked import ODD_EVENTS, error_records

SECRET = "test-signing-secret"


class HttpBot:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def post(
        self,
        body: str,
        *,
        content_type: str,
        secret: str = SECRET,
        age: float = 0,
        timestamp: str | None = None,
        **headers: str,
    ):
        timestamp = timestamp or str(int(time.time() - age))
        signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
            **headers,
        }
        async with self.session.post(self.url, data=body, headers=headers) as response:
            return response.status, await response.text()

    async def post_raw(self, body: bytes, *, content_type: str, headers: dict[str, str]) -> int:
        """POST raw bytes; "<now>", "<stale>" and "<signed>" in `headers` become a current or a 10-minute-old
        timestamp and a true signature of the body at that timestamp."""
        now, stale = str(int(time.time())), str(int(time.time() - 600))
        headers = {
            name: {"<now>": now, "<stale>": stale}.get(value, value) for name, value in headers.items()
        }
        if headers.get("X-Slack-Signature") == "<signed>":
            headers.setdefault("X-Slack-Request-Timestamp", now)
            signed = b"v0:%s:%s" % (headers["X-Slack-Request-Timestamp"].encode(), body)
            headers["X-Slack-Signature"] = (
                "v0=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
            )
        async with self.session.post(
            self.url, data=body, headers={"Content-Type": content_type, **headers}
        ) as response:
            return response.status

    async def post_event(self, payload: dict, **kwargs):
        return await self.post(json.dumps(payload), content_type="application/json", **kwargs)


@pytest.fixture
async def http_bot(slack, claude) -> AsyncIterator[HttpBot]:
    env = bot_env(slack, claude, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET)
    settings = Settings.from_env(env)
    claude_client, slack_client = build_claude_client(settings), build_slack_client(settings)
    app = build_app(settings, slack_client, claude_client)
    runner = await start_http(app, SECRET, host="127.0.0.1", port=0)  # as `serve` does, at a free port
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield HttpBot(f"http://127.0.0.1:{port}{EVENTS_PATH}", session)
    await runner.cleanup()
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


class HeldDedupe(MemoryState):
    """Holds every event's dedupe claim until released: the Redis round trip Bolt's dispatch awaits."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def claim(self, key: str, ttl: float, owner: str = "1") -> bool:
        if key.startswith("dedupe:event:"):
            await self.release.wait()
        return await super().claim(key, ttl, owner)


async def test_an_event_is_acked_before_bolt_dispatches_it(slack, claude):
    """A burst's events each waited for Bolt's dispatch of it (its middleware, our dedupe in Redis among
    them) and of the events before it: 60 at once were acked after 12-19 ms, 1-2 ms over Socket Mode."""
    settings = Settings.from_env(bot_env(slack, claude, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET))
    claude_client, slack_client = build_claude_client(settings), build_slack_client(settings)
    held = HeldDedupe()
    app = build_app(
        settings, slack_client, claude_client, Pipeline(settings, slack_client, claude_client, held)
    )
    runner = await start_http(app, SECRET, host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{EVENTS_PATH}"
    payload = slack.events_api_envelope(mention("<@U0BOT> acked first", ts="2.500001"))["payload"]
    try:
        async with aiohttp.ClientSession() as session:
            status, _ = await asyncio.wait_for(HttpBot(url, session).post_event(payload), 2)
            held.release.set()
            await slack.wait_for("reactions.remove")  # and then answered
    finally:
        held.release.set()  # failing, too: the held request must not hold up the server's shutdown
        await runner.cleanup()
        await claude_client.close()
        await slack_client.session.close()
    assert status == 200 and len(claude.requests) == 1


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


# --- refused before anything is parsed -----------------------------------------------------------------

MALFORMED_BODIES = {
    "broken_json": (b'{"type": "event_callback", "event": {', "application/json"),
    "json_array": (b"[1, 2, 3]", "application/json"),
    "json_null": (b"null", "application/json"),
    "form_with_broken_payload": (b"payload=%7Bnot-json", "application/x-www-form-urlencoded"),
    "not_utf8": (b"\xff\xfe{\x00", "application/json"),
}


def above_debug(caplog) -> list[str]:
    return [f"{r.levelname} {r.name}" for r in caplog.records if r.levelno > logging.DEBUG]


@pytest.mark.parametrize("name", list(MALFORMED_BODIES))
@pytest.mark.parametrize(
    "signed",
    [
        {},
        {"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": "<now>"},
        {"X-Slack-Signature": "<signed>", "X-Slack-Request-Timestamp": "<stale>"},
        {"X-Slack-Signature": "v0=abc", "X-Slack-Request-Timestamp": "not-a-number"},
        {"X-Slack-Signature": "v0=abc"},
        {"X-Slack-Signature": "v0=" + "\u00e9" * 64, "X-Slack-Request-Timestamp": "<now>"},
    ],
    ids=["unsigned", "bad_signature", "stale", "garbled_timestamp", "no_timestamp", "non_ascii_signature"],
)
async def test_a_request_not_signed_by_slack_is_refused_with_401_and_no_log_above_debug(
    http_bot, slack, claude, caplog, name, signed
):
    caplog.set_level(logging.DEBUG)
    body, content_type = MALFORMED_BODIES[name]
    status = await http_bot.post_raw(body, content_type=content_type, headers=signed)
    assert status == 401
    assert above_debug(caplog) == []
    assert not claude.requests
    assert not [call for call in slack.calls if call.method != "auth.test"]


@pytest.mark.parametrize("name", [name for name in MALFORMED_BODIES if name != "not_utf8"])
async def test_a_signed_but_malformed_body_is_acknowledged_and_ignored(http_bot, claude, caplog, name):
    caplog.set_level(logging.DEBUG)
    body, content_type = MALFORMED_BODIES[name]
    status = await http_bot.post_raw(
        body, content_type=content_type, headers={"X-Slack-Signature": "<signed>"}
    )
    assert status == 200
    assert above_debug(caplog) == []
    assert not claude.requests


async def test_a_body_that_is_not_utf8_cannot_be_verified_and_is_refused(http_bot, claude, caplog):
    caplog.set_level(logging.DEBUG)
    body, content_type = MALFORMED_BODIES["not_utf8"]
    # Slack's bodies are UTF-8; slack_sdk's verifier reads the body as text, so this one is not Slack's.
    status = await http_bot.post_raw(
        body, content_type=content_type, headers={"X-Slack-Signature": "<signed>"}
    )
    assert status == 401
    assert above_debug(caplog) == []
    assert not claude.requests


async def test_a_signed_interaction_no_listener_takes_gets_200_so_slack_does_not_retry(http_bot, claude):
    block_actions = {
        "type": "block_actions",
        "user": {"id": "U0ALICE", "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM"},
        "trigger_id": "1.2.block-actions",
        "actions": [{"type": "button", "action_id": "not_ours", "block_id": "b", "action_ts": "1.1"}],
    }
    status, _ = await http_bot.post(
        urlencode({"payload": json.dumps(block_actions)}), content_type="application/x-www-form-urlencoded"
    )
    assert status == 200
    form = {"command": "/weather", "text": "x", "user_id": "U0ALICE", "team_id": "T0TEAM"}
    status, _ = await http_bot.post(urlencode(form), content_type="application/x-www-form-urlencoded")
    assert status == 200
    assert not claude.requests


# --- replays -------------------------------------------------------------------------------------------


def command_form(slack, text: str, trigger_id: str, name: str) -> str:
    form = {
        "command": "/claude",
        "text": text,
        "user_id": "U0ALICE",
        "team_id": "T0TEAM",
        "channel_id": CHANNEL,
        "response_url": slack.response_url(name),
        "trigger_id": trigger_id,
    }
    return urlencode(form)


async def test_a_replayed_slash_command_is_answered_once(http_bot, slack, claude):
    form = "application/x-www-form-urlencoded"
    once = command_form(slack, "what is a mutex?", "11.22.once", "first")
    timestamp = str(int(time.time()))

    assert (await http_bot.post(once, content_type=form, timestamp=timestamp))[0] == 200
    await slack.wait_for("response_url")
    replay = await http_bot.post(once, content_type=form, timestamp=timestamp)  # the very same request
    assert replay[0] == 200
    marker = command_form(slack, "and a semaphore?", "11.22.marker", "marker")
    assert (await http_bot.post(marker, content_type=form))[0] == 200

    calls = await slack.wait_for("response_url", count=2)
    assert [call.params["_name"] for call in calls] == ["first", "marker"]
    assert len(claude.requests) == 2


async def test_a_replayed_shortcut_is_answered_once(http_bot, slack, claude):
    message = {"type": "message", "user": "U0ALICE", "text": "Deploy at 3?", "ts": "5.000001"}
    slack.add_thread(CHANNEL, [message])
    form = "application/x-www-form-urlencoded"

    def shortcut(name: str) -> str:
        frame = slack.message_shortcut_envelope(
            "summarize_thread", message=message, response_url=slack.response_url(name)
        )
        return urlencode({"payload": json.dumps(frame["payload"])})

    first, timestamp = shortcut("first"), str(int(time.time()))
    assert (await http_bot.post(first, content_type=form, timestamp=timestamp))[0] == 200
    assert (await http_bot.post(first, content_type=form, timestamp=timestamp))[0] == 200
    assert (await http_bot.post(shortcut("marker"), content_type=form))[0] == 200

    # Each answered shortcut posts a working note, then the answer, to its response_url.
    calls = await slack.wait_for("response_url", count=4)
    assert sorted(call.params["_name"] for call in calls) == ["first", "first", "marker", "marker"]
    assert len(claude.requests) == 2


async def test_interaction_ids_outlive_every_replay_a_signature_allows_and_are_kept_hashed():
    state = MemoryState()
    recent = recent_interaction_ids(state, StateKeys("secret"))
    trigger_id = "13345224609.738474920.8088930838d88f008e0"
    assert await recent.first_time(trigger_id)
    assert not await recent.first_time(trigger_id)
    # Signed at T, a request is accepted from T-300 to T+300 of our clock: up to 600 s after we first see it.
    [(key, (expires, _))] = state._items.items()
    assert expires - time.monotonic() > 2 * SIGNATURE_WINDOW_SECONDS
    assert trigger_id not in key  # a keyed hash only


async def test_a_port_another_program_holds_stops_the_bot_with_one_line_naming_port(slack, claude, tmp_path):
    with socket.socket() as taken:  # another program holds PORT
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = bot_env(slack, claude, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET, PORT=str(port))

        code, _, stderr = await run_to_exit(tmp_path, env)

    assert code == 1, stderr
    assert stderr.splitlines()[-1].startswith("startup error: PORT: "), stderr
    assert "uncaught" not in stderr


@pytest.mark.parametrize("name", list(ODD_EVENTS))
async def test_a_signed_event_of_an_odd_shape_is_acknowledged_and_logs_no_error(
    http_bot, slack, claude, caplog, name
):
    caplog.set_level(logging.DEBUG)
    assert (await http_bot.post_event(ODD_EVENTS[name]))[0] == 200
    marker = slack.events_api_envelope(mention("<@U0BOT> marker", ts="9.000001"))["payload"]
    assert (await http_bot.post_event(marker))[0] == 200
    await slack.wait_for("reactions.remove")  # dispatched in arrival order: the odd one went first
    assert error_records(caplog) == []
    assert len(claude.requests) == 1
    assert {call.params.get("team_id") for call in slack.calls_to("auth.test")} <= {None, "T0TEAM"}
