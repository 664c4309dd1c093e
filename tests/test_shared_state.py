"""Several processes sharing ids-only state through a real Redis: an event delivered to two of them, or
redelivered to another, is answered once; an unreachable REDIS_URL stops the bot at start in one line."""

from __future__ import annotations

import asyncio
import json
import sys

from bot.state import RedisState
from tests.conftest import ALICE, CHANNEL, bot_env, mention, running_bot, said
from tests.redis_server import free_port


async def test_an_event_delivered_to_two_processes_at_once_is_answered_once(slack, claude, redis_server):
    slack.add_thread(CHANNEL, [said(ALICE, "root", "7.000000"), said(ALICE, "<@U0BOT> hi", "7.000001")])
    one, two = RedisState(redis_server.url), RedisState(redis_server.url)
    try:
        async with (
            running_bot(slack, claude, {}, one) as first,
            running_bot(slack, claude, {}, two) as second,
        ):
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
    finally:
        await one.close()
        await two.close()


async def test_an_unreachable_redis_url_stops_the_bot_at_start_with_one_line(slack, claude, tmp_path):
    env = bot_env(slack, claude, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode != 0
    assert stderr.decode().endswith("startup error: REDIS_URL: cannot reach Redis (ConnectionError)\n")
    assert "Traceback" not in stderr.decode()
