"""Shutdown: on SIGTERM take no new work, finish answers in progress up to a grace period, mark the
rest as interrupted in Slack, and exit 0."""

from __future__ import annotations

import asyncio

import pytest

from bot.pipeline.said import RESTARTING
from bot.state import MemoryState
from tests.bot_process import BotProcess
from tests.conftest import ALICE, CHANNEL, DM, bot_env, direct_message, mention, running_bot, said

RESTARTING_NOTE = f"_(Cut off: {RESTARTING.sentence})_"


async def test_drain_lets_an_answer_finish_within_the_grace_period(bot):
    bot.claude.first_token_delay = 0.3
    await bot.send_event(mention("<@U0BOT> quick", ts="1.000001"))
    await bot.claude.wait_for_requests(1)

    assert await bot.pipeline.drain(grace_seconds=5) == 0
    assert bot.replies(CHANNEL, "1.000001") == ["Hello from fake Claude."]


async def ask_for_a_slow_answer(bot, ts: str) -> None:
    """A question whose answer streams for seconds; returns once its first words show."""
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.2
    bot.claude.reply("an answer much too slow to finish before the bot stops")
    await bot.send_event(mention("<@U0BOT> slow", ts=ts))
    await bot.slack.wait_for("chat.startStream")


async def test_drain_interrupts_what_outlives_the_grace_period_and_says_so(bot):
    await ask_for_a_slow_answer(bot, "2.000001")

    assert await bot.pipeline.drain(grace_seconds=0.2) == 1
    [text] = bot.replies(CHANNEL, "2.000001")
    assert text.startswith("an an") and text.endswith(RESTARTING_NOTE)
    assert bot.slack.reactions(CHANNEL, "2.000001") == set()  # progress cleared too


async def test_what_is_still_arriving_is_awaited_within_the_grace_period_too(bot):
    await ask_for_a_slow_answer(bot, "4.000001")

    never = asyncio.Event()  # an event acked whose dispatch never comes to an end
    async with asyncio.timeout(10):
        assert await bot.pipeline.drain(grace_seconds=0.2, arriving=never.wait) == 1
    [text] = bot.replies(CHANNEL, "4.000001")
    assert text.endswith(RESTARTING_NOTE)


class SlowToRecall(MemoryState):
    """A store whose every read takes a while, as a Redis round trip can."""

    async def get(self, key: str) -> str | None:
        await asyncio.sleep(0.05)
        return await super().get(key)


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(mention("<@U0BOT> hi", ts="6.000001"), id="mention"),
        pytest.param(direct_message("hi", ts="6.000002", thread_ts="6.000001"), id="agent-thread"),
        pytest.param(direct_message("hi", ts="6.000001"), id="direct-message"),
    ],
)
async def test_a_question_acked_just_before_the_drain_is_answered_within_the_grace_period(
    slack, claude, event
):
    """The drain waits for what was acked to reach the pipeline, however a surface gets there."""
    if "thread_ts" in event:
        slack.add_thread(DM, [said(ALICE, "root", event["thread_ts"]), said(ALICE, "hi", event["ts"])])
    async with running_bot(slack, claude, {}, SlowToRecall()) as bot:
        await bot.send_event(event)

        assert await bot.pipeline.drain(grace_seconds=5, arriving=bot.arrivals.settled) == 0
        if event["type"] == "app_mention":
            shown = bot.replies(CHANNEL, event["ts"])
        elif "thread_ts" in event:
            shown = bot.replies(DM, event["thread_ts"])
        else:
            shown = bot.slack.top_level_texts(DM)
        assert shown == ["Hello from fake Claude."]


async def test_after_drain_new_asks_are_told_to_come_back(bot):
    await bot.pipeline.drain(grace_seconds=1)
    await bot.send_event(mention("<@U0BOT> anyone?", ts="3.000001"))

    await bot.slack.wait_for("chat.postMessage")
    assert bot.replies(CHANNEL, "3.000001") == [f":warning: {RESTARTING.sentence}"]
    assert not bot.claude.requests


@pytest.mark.parametrize(
    ("grace", "finished_text"),
    [("10", "Hello from fake Claude."), ("0", None)],
    ids=["finishes_in_grace", "interrupted"],
)
async def test_sigterm_with_an_answer_in_flight_exits_0(slack, claude, tmp_path, grace, finished_text):
    claude.first_token_delay = 1.0
    bot = BotProcess(tmp_path, bot_env(slack, claude, SHUTDOWN_GRACE_SECONDS=grace))
    await bot.start()
    await slack.wait_for_socket(timeout=30)
    await slack.send_envelope(slack.events_api_envelope(mention("<@U0BOT> in flight", ts="4.000001")))
    await claude.wait_for_requests(1, timeout=30)

    output = await bot.stop()  # SIGTERM

    assert bot.process.returncode == 0, output
    [text] = slack.thread_texts(CHANNEL, "4.000001")
    assert text == (finished_text or f":warning: {RESTARTING.sentence}")
    assert "answers interrupted" in output


async def test_sigterm_while_the_socket_cannot_connect_stops_the_bot(slack, claude, tmp_path):
    """Slack hands out a connection URL that never connects: the SDK retries it for ever, and a stop
    asked for meanwhile must still be heard."""
    slack._handlers["apps.connections.open"] = lambda _: {"ok": True, "url": "ws://127.0.0.1:1/socket-mode"}
    bot = BotProcess(tmp_path, bot_env(slack, claude))
    await bot.start()
    try:
        await slack.wait_for("apps.connections.open")
        output = await bot.stop()
    finally:
        if bot.process.returncode is None:
            bot.process.kill()
            await bot.process.wait()
    assert bot.process.returncode == 0
    assert "Traceback" not in output
