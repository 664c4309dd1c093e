"""Claude's failures reach the user as one short sentence in the thread; the bot keeps serving."""

from __future__ import annotations

import hashlib

import pytest

from bot.pipeline.claude import (
    ClaudeBusy,
    ClaudeMisconfigured,
    ClaudeRejected,
    ClaudeUnavailable,
    opaque_user_id,
)
from bot.pipeline.context import ContextUnavailable
from bot.pipeline.said import FALLBACK_SENTENCE
from tests.conftest import CHANNEL, mention

# As deployed: the SDK retries twice before the bot gives up.
with_sdk_retries = pytest.mark.parametrize("bot_overrides", [{"CLAUDE_MAX_RETRIES": "2"}], indirect=True)


async def ask_and_get_reply(bot, ts: str) -> str:
    """Mention the bot at top level; the whole of what it answered in the new thread."""
    await bot.send_event(mention("<@U0BOT> hello", ts=ts))
    await bot.finished(count=len(bot.slack.calls_to("reactions.remove")) + 1)
    return "\n".join(bot.replies(CHANNEL, ts))


@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        (lambda c: c.fail(529, times=3, retry_after_ms=1), ClaudeBusy),
        (lambda c: c.fail(429, times=3, retry_after_ms=1), ClaudeBusy),
        (lambda c: c.fail(500, times=3, retry_after_ms=1), ClaudeUnavailable),
        (lambda c: c.drop_connection(times=3), ClaudeUnavailable),
        (lambda c: c.fail(400), ClaudeRejected),
        (lambda c: c.fail(401), ClaudeMisconfigured),
        (lambda c: c.fail(404), ClaudeMisconfigured),
    ],
    ids=[
        "overloaded",
        "rate_limited",
        "server_error",
        "dropped_connection",
        "bad_request",
        "bad_key",
        "unknown_model",
    ],
)
@with_sdk_retries
async def test_claude_failure_becomes_one_short_sentence_then_the_next_ask_is_answered(bot, inject, expected):
    inject(bot.claude)

    text = await ask_and_get_reply(bot, "10.000001")
    assert text == f":warning: {expected.sentence}"
    assert "Traceback" not in text and "Error code" not in text

    bot.claude.reply("Back to normal.")
    assert await ask_and_get_reply(bot, "10.000002") == "Back to normal."


@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        (lambda c: c.drop_connection(after_chunks=2), ClaudeUnavailable),
        (lambda c: c.fail_midstream(after_chunks=2), ClaudeBusy),
    ],
    ids=["dropped_mid_stream", "error_mid_stream"],
)
async def test_failure_mid_stream_keeps_the_partial_answer_with_a_note(bot, inject, expected):
    bot.claude.chunk_chars = 5
    bot.claude.reply("First words, then more words that never arrive.")
    inject(bot.claude)

    text = await ask_and_get_reply(bot, "15.000001")
    assert text == f"First word\n\n_(Cut off: {expected.sentence})_"


@with_sdk_retries
async def test_transient_overload_is_retried_by_the_sdk_and_answered(bot):
    bot.claude.fail(529, times=2, retry_after_ms=1)
    bot.claude.reply("Answered after retries.")

    assert await ask_and_get_reply(bot, "20.000001") == "Answered after retries."
    assert len(bot.claude.requests) == 3


@pytest.mark.parametrize("bot_overrides", [{"CLAUDE_TIMEOUT_SECONDS": "1"}], indirect=True)
async def test_claude_that_never_answers_times_out_with_a_short_sentence(bot):
    bot.claude.hang()

    text = await ask_and_get_reply(bot, "30.000001")
    assert text == f":warning: {ClaudeUnavailable.sentence}"


async def test_slack_refusing_the_thread_read_is_explained_in_the_thread(bot):
    bot.slack.fail("conversations.replies", error="channel_not_found")
    await bot.send_event(mention("<@U0BOT> summarise", ts="40.000002", thread_ts="40.000001"))

    await bot.finished()
    [reply] = bot.replies(CHANNEL, "40.000001")
    assert reply == f":warning: {ContextUnavailable.sentence}"
    assert not bot.claude.requests


async def test_request_carries_no_retention_flag_and_an_opaque_user(bot):
    await bot.send_event(mention("<@U0BOT> hi", ts="50.000001", channel=CHANNEL))
    await bot.finished()

    [request] = bot.claude.requests
    assert "data_retention" not in request.body
    allowed = {"model", "max_tokens", "system", "messages", "metadata", "stream", "cache_control"}
    assert set(request.body) <= allowed
    user_hash = request.body["metadata"]["user_id"]
    assert user_hash == opaque_user_id(bot.pipeline.keys, "T0TEAM", "U0ALICE")
    # keyed: not a hash anyone holding the workspace's ids could compute
    assert user_hash != hashlib.sha256(b"slack:T0TEAM:U0ALICE").hexdigest()
    assert request.body["model"] == "claude-sonnet-5-5"
    assert request.body["stream"] is True
    assert FALLBACK_SENTENCE  # the generic sentence exists for unexpected failures
