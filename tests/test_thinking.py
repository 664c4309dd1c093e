"""Models that think before they answer (Claude 5): thinking blocks come first in the stream and are never
shown, the progress stays up while Claude thinks, content blocks are read by type, not position; and no
sampling parameter or manual thinking budget is ever sent (Sonnet 5 and later answer 400 to them)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from tests.conftest import ALICE, CHANNEL, DM, direct_message, mention, said
from tests.fakes.claude_api import redacted_thinking, text_block, thinking_block
from tests.test_backends import BEDROCK, VERTEX, cloud_credentials  # noqa: F401 (the fixture is autouse)

WORKING = "hourglass_flowing_sand"
THOUGHT = "CANARY-THOUGHT the user wants a mutex explained; start with the lock analogy"
SAMPLING = ("temperature", "top_p", "top_k")


def now_ts() -> str:
    return f"{time.time():.6f}"


def everything_sent_to_slack(bot) -> str:
    return json.dumps([call.params for call in bot.slack.calls])


@pytest.mark.parametrize(
    "bot_overrides",
    [
        {"CLAUDE_MODEL": "claude-opus-5-5"},
        {**BEDROCK, "CLAUDE_MODEL": "claude-sonnet-5-5"},
        {**VERTEX, "CLAUDE_MODEL": "claude-haiku-5-5"},
    ],
    indirect=True,
    ids=["anthropic", "bedrock", "vertex"],
)
async def test_no_sampling_parameter_or_thinking_budget_is_ever_sent(bot):
    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="10.000001"))
    await bot.finished()

    [request] = bot.claude.requests
    assert not set(SAMPLING) & set(request.body)
    thinking = request.body.get("thinking")
    assert thinking is None or (thinking.get("type") != "enabled" and "budget_tokens" not in thinking)
    assert bot.replies(CHANNEL, "10.000001") == ["Hello from fake Claude."]


@pytest.mark.parametrize("redacted", [False, True], ids=["thinking", "redacted_thinking"])
async def test_thinking_is_never_shown_in_a_thread(bot, redacted, caplog):
    caplog.set_level(logging.DEBUG)
    bot.claude.chunk_chars = 7  # several thinking deltas
    bot.claude.think(THOUGHT, redacted=redacted)
    bot.claude.reply("A mutex lets one task at a time hold a lock.")

    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="20.000001"))
    await bot.finished()

    assert bot.replies(CHANNEL, "20.000001") == ["A mutex lets one task at a time hold a lock."]
    assert "CANARY" not in everything_sent_to_slack(bot)
    assert "CANARY" not in caplog.text


async def test_thinking_is_never_shown_in_a_top_level_dm_written_by_updates(bot):
    bot.claude.chunk_chars = 7
    bot.claude.think(THOUGHT)
    bot.claude.reply("A mutex lets one task at a time hold a lock.")

    await bot.send_event(direct_message("What is a mutex?", ts=now_ts()))
    await bot.finished()

    assert bot.slack.top_level_texts(DM) == ["A mutex lets one task at a time hold a lock."]
    assert bot.slack.calls_to("chat.postMessage")
    assert "CANARY" not in everything_sent_to_slack(bot)


async def test_the_reaction_stays_while_claude_thinks_and_goes_only_after_the_answer(bot):
    bot.claude.chunk_chars = 7
    bot.claude.thinking_gate = asyncio.Event()
    bot.claude.think(THOUGHT)
    bot.claude.reply("A mutex lets one task at a time hold a lock.")

    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="30.000001"))
    await bot.claude.wait_for_thinking()
    await bot.slack.wait_for("reactions.add")

    assert bot.slack.reactions(CHANNEL, "30.000001") == {WORKING}
    assert not bot.slack.calls_to("reactions.remove")
    assert not [call for call in bot.slack.calls if call.method.startswith("chat.")]  # nothing to show yet
    bot.claude.thinking_gate.set()
    await bot.finished()

    methods = [call.method for call in bot.slack.calls]
    assert methods.index("reactions.remove") > max(i for i, m in enumerate(methods) if m == "chat.stopStream")
    assert bot.slack.reactions(CHANNEL, "30.000001") == set()
    assert bot.replies(CHANNEL, "30.000001") == ["A mutex lets one task at a time hold a lock."]


async def test_the_assistant_status_stays_while_claude_thinks_and_is_cleared_only_after_the_answer(bot):
    bot.claude.chunk_chars = 7
    bot.claude.thinking_gate = asyncio.Event()
    bot.claude.think(THOUGHT)
    bot.claude.reply("A mutex lets one task at a time hold a lock.")
    bot.slack.add_thread(DM, [said(ALICE, "What is a mutex?", "40.000001")])

    await bot.send_event(direct_message("What is a mutex?", ts="40.000001", thread_ts="40.000001"))
    await bot.claude.wait_for_thinking()
    [shown] = await bot.slack.wait_for("assistant.threads.setStatus")

    assert shown.params["status"] == "is thinking…"
    assert not [call for call in bot.slack.calls if call.method.startswith("chat.")]
    bot.claude.thinking_gate.set()
    await bot.slack.wait_for("assistant.threads.setStatus", count=2)

    calls = bot.slack.calls
    statuses = [call for call in calls if call.method == "assistant.threads.setStatus"]
    assert [status.params["status"] for status in statuses] == ["is thinking…", ""]
    assert calls.index(statuses[1]) > max(i for i, c in enumerate(calls) if c.method == "chat.stopStream")
    assert bot.replies(DM, "40.000001") == ["A mutex lets one task at a time hold a lock."]
    assert "CANARY" not in everything_sent_to_slack(bot)


async def test_stop_while_claude_thinks_ends_the_answer_and_closes_the_claude_stream(bot):
    bot.claude.thinking_gate = asyncio.Event()  # never set: Claude is still thinking when Stop comes
    bot.claude.think(THOUGHT)
    bot.slack.add_thread(DM, [said(ALICE, "Think hard", "50.000001")])
    await bot.send_event(direct_message("Think hard", ts="50.000001", thread_ts="50.000001"))
    await bot.claude.wait_for_thinking()

    stop = bot.slack.agent_session_stopped_envelope(
        channel_id=DM, user_id=ALICE, thread_ts="50.000001", streaming_message_ts=[]
    )
    await bot.slack.send_envelope(stop)

    await bot.claude.wait_for_abandoned()  # no more thinking tokens are generated
    await bot.slack.wait_for("assistant.threads.setStatus", count=2)
    assert bot.slack.calls_to("assistant.threads.setStatus")[-1].params["status"] == ""
    assert "CANARY" not in everything_sent_to_slack(bot)


async def test_text_after_thinking_at_index_1_is_shown(bot):
    """Content blocks are read by type: the answer's text block is at index 1, after thinking at 0."""
    bot.claude.think(THOUGHT)
    bot.claude.reply("The answer.")

    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="60.000001"))
    await bot.finished()

    assert bot.replies(CHANNEL, "60.000001") == ["The answer."]


async def test_several_text_blocks_are_joined_as_the_api_means_them(bot):
    """Text blocks are one answer in pieces (the SDK's get_final_text joins them with nothing between),
    also when thinking comes between them; no thinking shows at their joins."""
    bot.claude.chunk_chars = 4
    bot.claude.lead_with(
        thinking_block(THOUGHT),
        text_block("A mutex is a lock. "),
        redacted_thinking(),
        text_block("One task holds it "),
        thinking_block("CANARY-SECOND thought"),
    )
    bot.claude.reply("at a time.")

    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="70.000001"))
    await bot.finished()

    assert bot.replies(CHANNEL, "70.000001") == ["A mutex is a lock. One task holds it at a time."]
    assert "CANARY" not in everything_sent_to_slack(bot)


@pytest.mark.parametrize("bot_overrides", [BEDROCK, VERTEX], indirect=True, ids=["bedrock", "vertex"])
async def test_thinking_first_on_the_cloud_platforms_is_read_by_type_too(bot):
    """Bedrock's event-stream goes through the SDK's typed events; Vertex AI streams SSE as the API does."""
    bot.claude.chunk_chars = 5
    bot.claude.think(THOUGHT)
    bot.claude.reply("A mutex lets one task at a time hold a lock.")

    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="80.000001"))
    await bot.finished()

    assert bot.replies(CHANNEL, "80.000001") == ["A mutex lets one task at a time hold a lock."]
    assert "CANARY" not in everything_sent_to_slack(bot)
