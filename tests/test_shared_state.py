"""Several replicas sharing ids-only state through a real Redis, in one test process (tests/test_replicas.py
runs real processes): an event delivered to two of them, or redelivered to another, is answered once; the
rate limit counts a person once across replicas; a Stop that reaches another replica ends the answer; the
agent view's channel and the access lookups are known to every replica; an unreachable REDIS_URL stops
the bot at start in one line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from bot.state import RedisState
from tests.bot_process import run_to_exit
from tests.conftest import ALICE, CHANNEL, DM, RunningBot, bot_env, direct_message, mention, running_bot, said
from tests.redis_server import RedisServer, free_port


@asynccontextmanager
async def two_replicas(
    slack, claude, redis_server: RedisServer, overrides: dict[str, str] | None = None
) -> AsyncIterator[tuple[RunningBot, RunningBot]]:
    """Two bots on one Redis, emptied first; Slack's sockets[0] is the first one's connection."""
    await redis_server.flush()
    one, two = RedisState(redis_server.url), RedisState(redis_server.url)
    try:
        async with (
            running_bot(slack, claude, overrides or {}, one) as first,
            running_bot(slack, claude, overrides or {}, two) as second,
        ):
            yield first, second
    finally:
        await one.close()
        await two.close()


async def send_to(slack, index: int, frame: dict) -> None:
    """Deliver an envelope over one replica's connection and wait for its ack."""
    await slack.sockets[index].send_str(json.dumps(frame))
    await slack.wait_for_ack(frame["envelope_id"])


async def test_an_event_delivered_to_two_processes_at_once_is_answered_once(slack, claude, redis_server):
    slack.add_thread(CHANNEL, [said(ALICE, "root", "7.000000"), said(ALICE, "<@U0BOT> hi", "7.000001")])
    async with two_replicas(slack, claude, redis_server) as (first, second):
        frame = slack.events_api_envelope(mention("<@U0BOT> hi", ts="7.000001", thread_ts="7.000000"))
        assert len(slack.sockets) == 2
        await asyncio.gather(*(ws.send_str(json.dumps(frame)) for ws in slack.sockets))
        await slack.wait_for("reactions.remove")
        await asyncio.gather(first.pipeline.wait_idle(), second.pipeline.wait_idle())
        assert len(claude.requests) == 1
        assert first.replies(CHANNEL, "7.000000") == ["Hello from fake Claude."]

        # Slack redelivers it (any retry_attempt) to either connection: still one answer.
        retry = {**frame, "envelope_id": "retry-1", "retry_attempt": 1, "retry_reason": "timeout"}
        await slack.sockets[0].send_str(json.dumps(retry))
        await slack.wait_for_ack("retry-1")
        await asyncio.gather(first.pipeline.wait_idle(), second.pipeline.wait_idle())
        assert len(claude.requests) == 1


async def test_an_unreachable_redis_url_stops_the_bot_at_start_with_one_line(slack, claude, tmp_path):
    env = bot_env(slack, claude, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    code, _, stderr = await run_to_exit(tmp_path, env)
    assert code != 0
    assert stderr.endswith("startup error: REDIS_URL: cannot reach Redis (ConnectionError)\n")
    assert "Traceback" not in stderr


async def test_the_rate_limit_counts_a_person_once_across_replicas(slack, claude, redis_server):
    async with two_replicas(slack, claude, redis_server, {"USER_REQUESTS_PER_MINUTE": "2"}) as bots:
        for n in range(3):
            ts = f"8.00000{n}"
            await send_to(slack, n % 2, slack.events_api_envelope(mention("<@U0BOT> hi", ts=ts)))
            await slack.wait_for("chat.postEphemeral" if n == 2 else "reactions.remove", count=1 + (n == 1))
        await asyncio.gather(*(bot.pipeline.wait_idle() for bot in bots))
        assert len(claude.requests) == 2  # the third, on the first replica again, was over the limit
        [notice] = slack.calls_to("chat.postEphemeral")
        assert "a lot in the last minute" in notice.params["text"]


async def test_a_stop_that_reaches_another_replica_ends_the_answer_and_its_claude_stream(
    slack, claude, redis_server
):
    full = "a long answer nobody will read " * 40
    claude.chunk_chars, claude.chunk_delay = 5, 0.05
    claude.reply(full)
    async with two_replicas(slack, claude, redis_server) as (first, second):
        slack.add_thread(DM, [said(ALICE, "Tell me everything", "9.000001")])
        question = direct_message("Tell me everything", ts="9.000001", thread_ts="9.000001")
        await send_to(slack, 0, slack.events_api_envelope(question))
        await slack.wait_for("chat.appendStream")

        # Slack's own Stop button ends its stream; this Stop names none, so only the bot can end it.
        stop = slack.agent_session_stopped_envelope(
            channel_id=DM, user_id=ALICE, thread_ts="9.000001", streaming_message_ts=[]
        )
        await send_to(slack, 1, stop)

        await claude.wait_for_abandoned()  # the first replica closed the stream: no tokens are generated
        await first.pipeline.wait_idle()
        [answer] = first.replies(DM, "9.000001")
        assert answer.endswith("_(Stopped.)_") and len(answer) < len(full)


async def test_every_replica_knows_the_viewed_channel_and_the_askers_lookup(slack, claude, redis_server):
    slack.add_history(CHANNEL, [said(ALICE, "The launch moved to Friday.", "10.000001")])
    async with two_replicas(slack, claude, redis_server) as (first, second):
        started = slack.assistant_thread_started_envelope(thread_ts="11.000001", context_channel_id=CHANNEL)
        await send_to(slack, 0, started)
        await slack.wait_for("assistant.threads.setSuggestedPrompts")
        question = direct_message("Summarize this channel", ts="11.000002", thread_ts="11.000001")
        await send_to(slack, 1, slack.events_api_envelope(question))
        await claude.wait_for_requests(1)
        await second.pipeline.wait_idle()
        assert "The launch moved to Friday." in claude.requests[0].body["system"]

        raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:  # the asker's access facts, looked up by the second replica, are there for the first
            [person] = [key async for key in raw.scan_iter(match="person:*")]
            assert 0 < await raw.pttl(person) <= 300_000
            assert ALICE not in person and ALICE not in (await raw.get(person) or "")
        finally:
            await raw.aclose()
