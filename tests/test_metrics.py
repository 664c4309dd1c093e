"""Metrics and health without content: /metrics in Prometheus's text format with the right counts and no
id or text in any label, /healthz while the process is up, /readyz only when connected to Slack, Redis
reachable and not draining; beside the events path in HTTP mode, on METRICS_PORT in Socket Mode."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.signature import SignatureVerifier

from bot import metrics
from bot.app import build_app, build_claude_client, build_slack_client
from bot.config import Settings
from bot.http_intake import EVENTS_PATH, start_http
from bot.state import RedisState
from tests.bot_process import BotProcess
from tests.conftest import ALICE, BOB, CHANNEL, DM, bot_env, direct_message, mention, said
from tests.redis_server import RedisServer, free_port

CANARY = "Quokka-canary-5501"
SECRET = "test-signing-secret"
# What a label must look like: our names, Slack's codes, bucket bounds ("0.5", "+Inf"), or empty.
LABEL_VALUE = re.compile(r"[A-Za-z0-9_.+]{0,64}")
SLACK_ID = re.compile(r"\b[UCDGTWB]0[A-Z0-9]+")  # the fakes' ids: U0ALICE, C0GENERAL, T0TEAM, D0ALICE

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def base_url(runner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


@dataclass
class Health:
    ready: metrics.Readiness
    draining: asyncio.Event
    url: str


@pytest.fixture
async def health() -> AsyncIterator[Health]:
    """The health routes alone on a free port, with a readiness the test changes: ready at first."""
    draining = asyncio.Event()
    ready = metrics.Readiness(draining.is_set, connected=metrics.always)
    runner = await metrics.start_health(ready.problems, host="127.0.0.1", port=0)
    try:
        yield Health(ready, draining, base_url(runner))
    finally:
        await runner.cleanup()


async def test_healthz_and_readyz_say_up_and_ready(health):
    assert (await get(f"{health.url}/healthz"))[::2] == (200, "ok\n")
    assert (await get(f"{health.url}/readyz"))[::2] == (200, "ready\n")


async def test_readyz_is_503_while_draining_or_not_connected_and_healthz_stays_200(health):
    health.draining.set()
    assert (await get(f"{health.url}/readyz"))[::2] == (503, "not ready: draining\n")
    assert (await get(f"{health.url}/healthz"))[0] == 200

    health.draining.clear()
    health.ready.connected = None  # Socket Mode before its connection is open
    assert (await get(f"{health.url}/readyz"))[::2] == (503, "not ready: not connected to Slack\n")


async def test_readyz_is_503_while_redis_is_unreachable_and_200_once_it_is_back(health, tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    state = RedisState(server.url)
    health.ready.redis = state.ping
    try:
        assert (await get(f"{health.url}/readyz"))[0] == 200
        server.stop()
        assert (await get(f"{health.url}/readyz"))[::2] == (503, "not ready: Redis unreachable\n")
        server.start()
        assert (await get(f"{health.url}/readyz"))[::2] == (200, "ready\n")
    finally:
        server.stop()
        await state.close()


async def test_metrics_are_prometheus_text_with_every_metric_described(health):
    url = health.url
    metrics.slack_failed("chat.postMessage", "channel_not_found")

    status, content_type, text = await get(f"{url}/metrics")

    assert status == 200
    assert content_type.startswith("text/plain; version=")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in ("requests", "tokens", "cost_usd", "slack_errors", "claude_errors", "feedback"):
        assert f"# TYPE claude_slack_{name}_total counter" in text
        assert families[f"claude_slack_{name}"].type == "counter"
    for name in ("ack_seconds", "first_words_seconds", "completion_seconds"):
        assert families[f"claude_slack_{name}"].type == "histogram"
    samples = parse(text)
    key = (
        "claude_slack_slack_errors_total",
        frozenset({"method": "chat.postMessage", "error": "channel_not_found"}.items()),
    )
    assert samples[key] >= 1


@pytest.mark.parametrize(
    ("method", "error", "expected"),
    [
        ("conversations_replies", "thread_not_found", ("conversations_replies", "thread_not_found")),
        ("courtesy call", aiohttp.ServerDisconnectedError(), ("courtesy_call", "ServerDisconnectedError")),
        ("assistant.threads.setStatus", TimeoutError(), ("assistant.threads.setStatus", "TimeoutError")),
        ("chat.update", f"{CANARY} for {ALICE}", ("chat.update", "other")),
        ("chat.update", ALICE, ("chat.update", "other")),
        ("chat.update", "Kestrel", ("chat.update", "other")),  # Slack's codes are lower case
        (f"users.info {ALICE}", "user_not_found", ("other", "user_not_found")),
        ("users.info", type(ALICE, (Exception,), {})(), ("users.info", "other")),  # a class named like an id
    ],
)
def test_slack_errors_are_labelled_by_method_and_code_and_anything_else_is_other(method, error, expected):
    before = parse(generate_latest(metrics.REGISTRY).decode())
    metrics.slack_failed(method, error)
    after = parse(generate_latest(metrics.REGISTRY).decode())
    changed = {key for key in after if key[0].endswith("_total") and after[key] != before.get(key)}
    assert changed == {
        ("claude_slack_slack_errors_total", frozenset(zip(("method", "error"), expected, strict=True)))
    }


def assert_content_free(text: str) -> None:
    for banned in (CANARY, ALICE, BOB, CHANNEL, DM, "T0TEAM", "U0BOT", "xoxb-", "xapp-"):
        assert banned not in text
    assert not SLACK_ID.search(text)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= {
                "surface",
                "outcome",
                "reason",
                "kind",
                "method",
                "error",
                "value",
            } | {
                "transport",
                "le",
            }
            for value in sample.labels.values():
                assert LABEL_VALUE.fullmatch(value), (sample.name, value)


@pytest.mark.parametrize("bot_overrides", [{"DENIED_USERS": BOB}], indirect=True)
async def test_scrape_after_canary_laden_requests_holds_no_id_or_text_and_the_right_counts(
    bot, health, caplog
):
    """Needs the pipeline's calls (bot.pipeline.answer: RequestMeter, used_tokens, claude_failed) and the
    Socket Mode handler's `acked`; without them the counts below the content checks are not there."""
    caplog.set_level(logging.INFO, logger="bot")
    url = health.url
    slack, claude = bot.slack, bot.claude
    before = parse((await get(f"{url}/metrics"))[2])

    claude.reply(f"An answer that repeats {CANARY}.")
    await bot.send_event(mention(f"<@U0BOT> {CANARY} in a channel", ts="60.000001"))
    await bot.send_event(direct_message(f"{CANARY} in a DM", ts=f"{time.time():.6f}"))
    await bot.send_command(f"{CANARY} in a command")
    await bot.finished(count=2)
    await slack.wait_for("response_url")
    await bot.send_event(mention(f"<@U0BOT> {CANARY} from Bob", ts="60.000002", user=BOB))  # refused
    await slack.wait_for("chat.postEphemeral")
    claude.fail(529)
    await bot.send_event(mention(f"<@U0BOT> {CANARY} when Claude is busy", ts="60.000003"))
    await bot.finished(count=3)
    slack.add_thread(CHANNEL, [said(ALICE, f"{CANARY} root", "61.000001")])
    slack.fail("conversations.replies", error=f"{CANARY} {ALICE} {CHANNEL}")  # a code no Slack would send
    await bot.send_event(mention(f"<@U0BOT> {CANARY} in a thread", ts="61.000002", thread_ts="61.000001"))
    await bot.finished(count=4)
    await bot.pipeline.wait_idle()  # every answer's end is counted

    status, _, text = await get(f"{url}/metrics")

    assert status == 200
    assert_content_free(text)
    after = parse(text)
    assert (
        grew(before, after, "claude_slack_slack_errors_total", method="conversations_replies", error="other")
        == 1
    )

    def requests(surface: str, outcome: str, reason: str = "") -> float:
        return grew(
            before, after, "claude_slack_requests_total", surface=surface, outcome=outcome, reason=reason
        )

    assert requests("mention", "answered") == 1
    assert requests("direct_message", "answered") == 1
    assert requests("slash_command", "answered") == 1
    assert requests("mention", "refused", "UserNotEnabled") == 1
    assert requests("mention", "failed", "ClaudeBusy") == 1
    assert requests("mention", "failed", "ContextUnavailable") == 1
    assert grew(before, after, "claude_slack_claude_errors_total", error="ClaudeBusy") == 1
    ends = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.pipeline.answer" and "_tokens=" in r.getMessage()
    ]
    assert len(ends) == 5  # every request let in logs what it used

    def reported(field: str) -> float:
        return sum(float(re.search(rf"(?<![a-z_]){field}=([0-9.]+)", line)[1]) for line in ends)

    for kind in ("input", "output", "cache_read", "cache_write"):
        assert grew(before, after, "claude_slack_tokens_total", kind=kind) == reported(f"{kind}_tokens")
    assert reported("input_tokens") > 0 and reported("output_tokens") > 0
    assert grew(before, after, "claude_slack_cost_usd_total") == pytest.approx(reported("cost_usd"), abs=1e-5)
    for surface in ("mention", "direct_message", "slash_command"):
        assert grew(before, after, "claude_slack_first_words_seconds_count", surface=surface) == 1
        assert grew(before, after, "claude_slack_completion_seconds_count", surface=surface) == 1
    assert grew(before, after, "claude_slack_ack_seconds_count", transport="socket_mode") == 6


@pytest.fixture
async def http_bot(slack, claude) -> AsyncIterator[str]:
    """The bot in HTTP mode, health routes beside the events path as `serve` has them; its base URL."""
    settings = Settings.from_env(bot_env(slack, claude, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET))
    claude_client, slack_client = build_claude_client(settings), build_slack_client(settings)
    app = build_app(settings, slack_client, claude_client)
    ready = metrics.Readiness(lambda: False, connected=metrics.always)
    runner = await start_http(app, SECRET, host="127.0.0.1", port=0, ready=ready.problems)
    try:
        yield base_url(runner)
    finally:
        await runner.cleanup()
        await claude_client.close()
        await slack_client.session.close()


async def test_http_mode_serves_health_and_metrics_unsigned_beside_the_events_path(http_bot, slack):
    before = parse((await get(f"{http_bot}/metrics"))[2])
    payload = slack.events_api_envelope(mention(f"<@U0BOT> {CANARY}", ts="70.000001"))["payload"]
    body = json.dumps(payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body),
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http_bot}{EVENTS_PATH}", data=body, headers=headers) as response:
            assert response.status == 200
        async with session.post(f"{http_bot}{EVENTS_PATH}", data=body) as response:
            assert response.status == 401  # the events path still wants Slack's signature
    await slack.wait_for("reactions.remove")

    assert (await get(f"{http_bot}/healthz"))[::2] == (200, "ok\n")
    assert (await get(f"{http_bot}/readyz"))[::2] == (200, "ready\n")
    status, content_type, text = await get(f"{http_bot}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=")
    assert_content_free(text)
    assert grew(before, parse(text), "claude_slack_ack_seconds_count", transport="http") == 1


async def test_socket_mode_serves_metrics_port_ready_until_redis_goes_or_it_drains(slack, claude, tmp_path):
    port = free_port()
    (tmp_path / "redis").mkdir()
    (tmp_path / "bot").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    env = bot_env(slack, claude, METRICS_PORT=str(port), REDIS_URL=server.url, SHUTDOWN_GRACE_SECONDS="30")
    bot = BotProcess(tmp_path / "bot", env)
    url = f"http://127.0.0.1:{port}"
    await bot.start()
    try:
        await bot.wait_listening()
        assert (await get(f"{url}/healthz"))[::2] == (200, "ok\n")
        assert (await get(f"{url}/readyz"))[::2] == (200, "ready\n")
        assert (await get(f"{url}/metrics"))[0] == 200

        server.stop()
        assert (await get(f"{url}/readyz"))[::2] == (503, "not ready: Redis unreachable\n")
        server.start()
        assert (await get(f"{url}/readyz"))[::2] == (200, "ready\n")

        claude.gate = asyncio.Event()  # the answer waits: the drain has something to wait for
        slack.add_thread(CHANNEL, [said(ALICE, "<@U0BOT> a long one", "80.000001")])
        await slack.send_envelope(slack.events_api_envelope(mention("<@U0BOT> a long one", ts="80.000001")))
        await claude.wait_for_requests(1, timeout=30)
        bot.process.send_signal(signal.SIGTERM)
        await bot.wait_for_output("stopping: finishing answers")
        status, _, body = await get(f"{url}/readyz")
        assert status == 503 and "draining" in body
        assert (await get(f"{url}/healthz"))[0] == 200
        claude.gate.set()
        output = await bot.stop(signal_first=False)
        assert bot.process.returncode == 0, output
        assert slack.thread_texts(CHANNEL, "80.000001") == ["Hello from fake Claude."]
        assert "Traceback" not in output
    finally:
        if bot.process.returncode is None:  # the test failed midway: leave nothing running
            bot.process.kill()
            await bot.process.wait()
        server.stop()
