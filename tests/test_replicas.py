"""Real `python -m bot` replicas on one Redis and one fake Slack that spreads events over their Socket
Mode connections at random and redelivers each to another: one answer per question; a rolling deploy
(SIGTERM) and a replica killed outright (SIGKILL) lose no question; Redis lost while running costs no
answer and no traceback."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.signature import SignatureVerifier

from bot.http_intake import EVENTS_PATH
from bot.pipeline.said import HANDED_OVER
from bot.surfaces.resumed import CUT_OFF
from tests.bot_process import BotProcess
from tests.conftest import ALICE, CHANNEL, DM, bot_env, direct_message, mention, said
from tests.redis_server import RedisServer, free_port

LEASE = "3"  # ANSWER_LEASE_SECONDS: short, so that a takeover comes within seconds
SECRET = "replicas-signing-secret"
ANSWER = "words " * 60  # 360 characters, streamed over about three seconds below


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    await redis_server.flush()
    return redis_server.url


@pytest.fixture
def slow_claude(claude):
    claude.responder = lambda _body: ANSWER
    claude.chunk_chars, claude.chunk_delay = 12, 0.1
    return claude


@asynccontextmanager
async def replicas(
    tmp_path: Path,
    slack,
    claude,
    redis_url: str,
    count: int = 2,
    http_ports: tuple[int, ...] = (),
    **overrides: str,
) -> AsyncIterator[list[BotProcess]]:
    """`count` replicas, started one after another, so that slack.sockets[i] is replica i's; with
    `http_ports`, in HTTP mode instead, replica i listening on http_ports[i]."""
    env = bot_env(slack, claude, REDIS_URL=redis_url, ANSWER_LEASE_SECONDS=LEASE, **overrides)
    bots = []
    try:
        for n in range(count):
            (tmp_path / f"replica{n}").mkdir()
            listening = (
                {"SLACK_APP_TOKEN": "", "SLACK_SIGNING_SECRET": SECRET, "PORT": str(http_ports[n])}
                if http_ports
                else {}
            )
            bot = BotProcess(tmp_path / f"replica{n}", {**env, **listening})
            bots.append(bot)
            await bot.start()
            await bot.wait_listening()
            if not http_ports:
                await slack.wait_for_socket(count=n + 1)
        yield bots
    finally:
        for bot in bots:
            if bot.process.returncode is None:
                await bot.stop()


async def send_to(slack, index: int, frame: dict) -> None:
    await slack.sockets[index].send_str(json.dumps(frame))
    await slack.wait_for_ack(frame["envelope_id"])


async def post_to(port: int, frame: dict) -> None:
    """The frame's event as Slack POSTs it in HTTP mode, signed; returns once it is acked."""
    body = json.dumps(frame["payload"])
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{EVENTS_PATH}", data=body, headers=headers) as response,
    ):
        assert response.status == 200


def question(slack, n: int) -> tuple[str, dict]:
    """A mention, in Slack's history too (a replica that takes it over reads it from there)."""
    ts, text = f"{30 + n}.000001", f"<@U0BOT> question {n}"
    slack.add_history(CHANNEL, [said(ALICE, text, ts)])
    return ts, mention(text, ts=ts)


def assert_clean(output: str) -> None:
    assert "Traceback" not in output
    assert "question" not in output  # no message text in any log line


async def claim_shows_the_stream(redis_url: str) -> None:
    """Once the answer's claim in Redis names its stream (renewed every third of a lease), so that a
    replica that takes it over ends that stream."""
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with asyncio.timeout(10):
            while True:
                values = [await raw.get(key) async for key in raw.scan_iter(match="answer:*")]
                if any(value and '"stream"' in value for value in values):
                    return
                await asyncio.sleep(0.05)
    finally:
        await raw.aclose()


async def test_spread_and_redelivered_to_another_replica_each_question_is_answered_once(
    tmp_path, slack, claude, redis_url
):
    slack.spread = random.Random(7)
    async with replicas(tmp_path, slack, claude, redis_url) as bots:
        asked = []
        for n in range(8):
            ts, event = question(slack, n)
            frame = slack.events_api_envelope(event)
            await slack.send_envelope(frame)
            await slack.redeliver(frame)  # Slack's retry, to the other connection
            asked.append(ts)
        await slack.wait_for("reactions.remove", count=len(asked), timeout=30)
        outputs = [await bot.stop() for bot in bots]  # each drains first: a second answer would show

    assert len(claude.requests) == len(asked)
    assert all(len(slack.thread_texts(CHANNEL, ts)) == 1 for ts in asked)
    assert sum(output.count(" answered ") for output in outputs) == len(asked)
    for output in outputs:
        assert_clean(output)


async def test_a_rolling_deploy_hands_cut_answers_to_the_other_replica_and_loses_none(
    tmp_path, slack, slow_claude, redis_url
):
    async with replicas(tmp_path, slack, slow_claude, redis_url, SHUTDOWN_GRACE_SECONDS="0.5") as bots:
        first, second = bots
        cut = []
        for n in range(3):
            ts, event = question(slack, n)
            await send_to(slack, 0, slack.events_api_envelope(event))
            cut.append(ts)
        await slack.wait_for("chat.appendStream", count=3, timeout=10)

        first.process.send_signal(signal.SIGTERM)  # it closes its connection, then drains
        meanwhile = []
        await slack.wait_for_live_sockets(1)
        for n in range(3, 5):
            ts, event = question(slack, n)
            await slack.send_envelope(slack.events_api_envelope(event))  # the live connection: the second's
            meanwhile.append(ts)
        first_output = await first.stop(signal_first=False)
        assert first_output.count("3 answers interrupted") == 1
        assert first.process.returncode == 0

        # The second answers the new questions, and the cut ones again, each once.
        await second.wait_for_output("taking over", count=3, timeout=30)
        await slack.wait_for("reactions.remove", count=3 + 3 + 2, timeout=30)  # the cut ones' first
        output = await second.stop()

    assert len(slow_claude.requests) == 3 + 3 + 2
    for ts in cut:
        cut_answer, answer = slack.thread_texts(CHANNEL, ts)
        assert HANDED_OVER.sentence in cut_answer
        assert answer.strip() == ANSWER.strip()
    for ts in meanwhile:
        [answer] = slack.thread_texts(CHANNEL, ts)
        assert answer.strip() == ANSWER.strip()
    assert_clean(output)


@pytest.mark.parametrize("over", ["socket_mode", "http"])
async def test_an_event_acked_but_not_yet_dispatched_as_a_replica_stops_is_handed_over(
    tmp_path, slack, claude, redis_url, over
):
    """Acked on arrival, then SIGTERM while the event still waits for its dedupe claim: the stopping
    replica must not exit with it (Slack never sends an acked event again), but hand it over."""
    raw = aioredis.Redis.from_url(redis_url)
    ports = (free_port(), free_port()) if over == "http" else ()
    async with replicas(tmp_path, slack, claude, redis_url, http_ports=ports) as (first, second):
        ts, event = question(slack, 0)
        frame = slack.events_api_envelope(event)
        # Writes wait in Redis for 1.5 s (less than the bot's Redis timeout): the event's claim too.
        await raw.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        await (post_to(ports[0], frame) if ports else send_to(slack, 0, frame))
        first.process.send_signal(signal.SIGTERM)
        first_output = await first.stop(signal_first=False)

        await second.wait_for_output("taking over", timeout=30)
        await slack.wait_for("reactions.remove", timeout=30)
        output = await second.stop()
    await raw.aclose()

    assert first.process.returncode == 0
    assert len(claude.requests) == 1
    [answer] = slack.thread_texts(CHANNEL, ts)
    assert answer.strip() == claude.responder({}).strip()
    for text in (first_output, output):
        assert_clean(text)


async def test_a_replica_killed_mid_answer_is_taken_over_within_the_lease(
    tmp_path, slack, slow_claude, redis_url
):
    async with replicas(tmp_path, slack, slow_claude, redis_url) as (first, second):
        ts, event = question(slack, 0)
        await send_to(slack, 0, slack.events_api_envelope(event))
        await slack.wait_for("chat.appendStream", timeout=10)
        await claim_shows_the_stream(redis_url)
        first.process.kill()  # SIGKILL: no drain, no goodbye; its lease runs out
        await first.stop(signal_first=False)

        await second.wait_for_output("taking over", timeout=30)
        await slack.wait_for("reactions.remove", timeout=30)
        output = await second.stop()

    assert len(slow_claude.requests) == 2
    cut_answer, answer = slack.thread_texts(CHANNEL, ts)
    assert cut_answer.endswith(CUT_OFF.strip()) and len(cut_answer) < len(ANSWER) + len(CUT_OFF)
    assert answer.strip() == ANSWER.strip()
    assert any(call.params.get("markdown_text") == CUT_OFF for call in slack.calls_to("chat.stopStream"))
    assert_clean(output)


async def test_a_replica_killed_before_its_answer_began_leaves_the_question_to_another(
    tmp_path, slack, claude, redis_url
):
    """Killed while the question is still in the access check: it was claimed on arrival, so another
    replica takes it over as it would a cut answer, checks the asker afresh and answers."""
    async with replicas(tmp_path, slack, claude, redis_url) as (first, second):
        ts, event = question(slack, 0)
        slack.hold("users.info")  # the access check's lookup of the asker
        await send_to(slack, 0, slack.events_api_envelope(event))
        await slack.wait_for("users.info", timeout=10)
        first.process.kill()
        await first.stop(signal_first=False)
        slack.let_go("users.info")

        await second.wait_for_output("taking over", timeout=30)
        await slack.wait_for("reactions.remove", timeout=30)
        output = await second.stop()

    assert len(claude.requests) == 1
    assert [text.strip() for text in slack.thread_texts(CHANNEL, ts)] == [claude.responder({}).strip()]
    assert_clean(output)


@pytest.mark.parametrize("how", ["killed", "stopped"])
async def test_a_replica_that_takes_over_and_goes_too_leaves_the_question_to_a_third(
    tmp_path, slack, slow_claude, redis_url, how
):
    """The first replica dies mid-answer; the one that takes it over is killed (or SIGTERMed) before it
    has answered again, while it marks the cut answer: the question is still answered, by the third."""
    async with replicas(tmp_path, slack, slow_claude, redis_url, count=3) as (first, *others):
        ts, event = question(slack, 0)
        await send_to(slack, 0, slack.events_api_envelope(event))
        await slack.wait_for("chat.appendStream", timeout=10)
        await claim_shows_the_stream(redis_url)
        slack.hold("chat.stopStream")  # where a takeover marks the cut answer
        first.process.kill()
        await first.stop(signal_first=False)

        taking_over = {asyncio.ensure_future(bot.wait_for_output("taking over")): bot for bot in others}
        done, waiting = await asyncio.wait(taking_over, return_when=asyncio.FIRST_COMPLETED)
        for wait in waiting:
            wait.cancel()
        taker = taking_over[done.pop()]
        [third] = [bot for bot in others if bot is not taker]
        await slack.wait_for("chat.stopStream", timeout=30)
        if how == "killed":
            taker.process.kill()
        else:
            taker.process.send_signal(signal.SIGTERM)
        await taker.stop(signal_first=False)
        slack.let_go("chat.stopStream")

        await third.wait_for_output("taking over", timeout=30)
        await slack.wait_for("reactions.remove", timeout=30)
        output = await third.stop()

    assert len(slow_claude.requests) == 2  # the first's, and the third's
    assert slack.thread_texts(CHANNEL, ts)[-1].strip() == ANSWER.strip()
    assert_clean(output)


async def test_redis_lost_while_running_keeps_answering_warns_once_and_recovers(tmp_path, slack, claude):
    server = RedisServer(tmp_path)
    server.start()
    try:
        async with replicas(tmp_path, slack, claude, server.url) as bots:
            server.stop()
            slack.spread = random.Random(3)
            for n in range(4):
                _, event = question(slack, n)
                await slack.send_envelope(slack.events_api_envelope(event))
            await slack.wait_for("reactions.remove", count=4, timeout=30)
            for bot in bots:
                await bot.wait_for_output("Redis unreachable", timeout=10)

            server.start()
            for bot in bots:
                await bot.wait_for_output("Redis reachable again", timeout=15)
            outputs = [await bot.stop() for bot in bots]
    finally:
        server.stop()

    assert len(claude.requests) == 4
    for output in outputs:
        assert output.count("Redis unreachable") == 1  # once per outage
        assert_clean(output)


async def test_a_stop_delivered_to_the_other_replica_ends_the_answer(tmp_path, slack, slow_claude, redis_url):
    async with replicas(tmp_path, slack, slow_claude, redis_url) as (first, second):
        slack.add_thread(DM, [said(ALICE, "Tell me everything", "60.000001")])
        asked = direct_message("Tell me everything", ts="60.000001", thread_ts="60.000001")
        await send_to(slack, 0, slack.events_api_envelope(asked))
        await slack.wait_for("chat.appendStream", timeout=10)

        # No stream named: Slack has stopped nothing, so only the replica writing the answer can.
        stop = slack.agent_session_stopped_envelope(
            channel_id=DM, user_id=ALICE, thread_ts="60.000001", streaming_message_ts=[]
        )
        await send_to(slack, 1, stop)

        await slow_claude.wait_for_abandoned(timeout=10)
        await first.wait_for_output("cancelled", timeout=10)
        outputs = [await bot.stop() for bot in (first, second)]

    [answer] = slack.thread_texts(DM, "60.000001")
    assert answer.endswith("_(Stopped.)_") and len(answer) < len(ANSWER)
    assert "passed on to every replica" in outputs[1]
    for output in outputs:
        assert_clean(output)


async def test_the_rate_limit_counts_a_person_once_across_replicas(tmp_path, slack, claude, redis_url):
    async with replicas(tmp_path, slack, claude, redis_url, USER_REQUESTS_PER_MINUTE="2") as bots:
        for n in range(3):
            _, event = question(slack, n)
            await send_to(slack, n % 2, slack.events_api_envelope(event))
            await slack.wait_for("chat.postEphemeral" if n == 2 else "reactions.remove", count=1 + (n == 1))
        for bot in bots:
            await bot.stop()

    assert len(claude.requests) == 2  # the third, on the first replica again, was over the limit
    [notice] = slack.calls_to("chat.postEphemeral")
    assert "a lot in the last minute" in notice.params["text"]
