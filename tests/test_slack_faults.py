"""Slack misbehaving: 429 with Retry-After, server errors and timeouts, Socket Mode reconnects and
redeliveries. Answers are not lost and never given twice."""

from __future__ import annotations

import pytest

from bot.pipeline.context import ContextUnavailable
from tests.conftest import ALICE, CHANNEL, mention, said


@pytest.mark.parametrize(
    "method", ["conversations.replies", "users.info", "reactions.add", "chat.startStream", "chat.stopStream"]
)
async def test_rate_limited_call_waits_out_retry_after_and_the_answer_arrives(bot, method):
    bot.slack.add_thread(CHANNEL, [said(ALICE, "root", "1.000000"), said(ALICE, "<@U0BOT> hi", "1.000001")])
    bot.slack.fail(method, status=429, error="ratelimited", retry_after=0)

    await bot.send_event(mention("<@U0BOT> hi", ts="1.000001", thread_ts="1.000000"))

    await bot.finished()
    assert len(bot.slack.calls_to(method)) == 2  # refused once, retried once
    assert bot.replies(CHANNEL, "1.000000") == ["Hello from fake Claude."]


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_is_retried(bot, status):
    bot.slack.add_thread(CHANNEL, [said(ALICE, "root", "2.000000"), said(ALICE, "<@U0BOT> hi", "2.000001")])
    bot.slack.fail("conversations.replies", status=status, error="internal_error")

    await bot.send_event(mention("<@U0BOT> hi", ts="2.000001", thread_ts="2.000000"))

    await bot.finished()
    assert bot.replies(CHANNEL, "2.000000") == ["Hello from fake Claude."]


@pytest.mark.parametrize("bot_overrides", [{"SLACK_TIMEOUT_SECONDS": "1"}], indirect=True)
async def test_slack_read_that_times_out_is_explained_in_the_thread(bot):
    """Slack never answers: SLACK_TIMEOUT_SECONDS ends the call (the client's own session, not the
    SDK, must carry it: slack_sdk applies its timeout only to sessions it makes)."""
    bot.slack.add_thread(CHANNEL, [said(ALICE, "root", "3.000000"), said(ALICE, "<@U0BOT> hi", "3.000001")])
    bot.slack.hold("conversations.replies")
    try:
        await bot.send_event(mention("<@U0BOT> hi", ts="3.000001", thread_ts="3.000000"))
        await bot.finished()
    finally:
        bot.slack.let_go("conversations.replies")
    assert bot.replies(CHANNEL, "3.000000") == [f":warning: {ContextUnavailable.sentence}"]
    assert not bot.claude.requests


@pytest.mark.parametrize("reason", ["refresh_requested", "warning"])
async def test_socket_mode_reconnects_and_a_redelivered_event_is_answered_once(bot, reason):
    first = mention("<@U0BOT> before the disconnect", ts="4.000001")
    await bot.send_event(first, event_id="Ev0BEFORE")
    await bot.finished()

    await bot.slack.disconnect(reason)
    await bot.slack.wait_for_socket(count=2)
    # Slack redelivers what it thinks was not acked, on the new connection; then new work arrives.
    await bot.send_event(first, event_id="Ev0BEFORE", retry_attempt=1, retry_reason="timeout")
    await bot.send_event(mention("<@U0BOT> after the reconnect", ts="4.000002"), event_id="Ev0AFTER")

    await bot.finished(count=2)
    assert len(bot.claude.requests) == 2
    assert bot.replies(CHANNEL, "4.000001") == ["Hello from fake Claude."]
    assert bot.replies(CHANNEL, "4.000002") == ["Hello from fake Claude."]


@pytest.mark.parametrize("bot_overrides", [{"SLACK_TIMEOUT_SECONDS": "1"}], indirect=True)
async def test_a_stream_that_cannot_be_stopped_keeps_its_words_and_the_bot_goes_on(bot, caplog):
    """chat.stopStream timing out (also on its one retry) is logged by class; the answer's words stay,
    progress is cleared and the next question is answered."""
    bot.slack.add_thread(CHANNEL, [said(ALICE, "root", "5.000000"), said(ALICE, "<@U0BOT> hi", "5.000001")])
    bot.slack.fail("chat.stopStream", status=200, error="never", delay=1.5, times=2)

    await bot.send_event(mention("<@U0BOT> hi", ts="5.000001", thread_ts="5.000000"))
    await bot.finished()
    await bot.send_event(mention("<@U0BOT> again", ts="5.000002", thread_ts="5.000000"))
    await bot.finished(count=2)

    assert bot.replies(CHANNEL, "5.000000")[0] == "Hello from fake Claude."
    assert len(bot.claude.requests) == 2
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("method", ["users.info", "conversations.replies"])
async def test_a_slack_answer_that_is_not_json_is_explained_not_crashed_on(bot, method):
    """slack_sdk raises it with the raw HTTP response, which has no error code to read: the access check
    raised past the pipeline and the asker heard nothing."""
    bot.slack.add_thread(CHANNEL, [said(ALICE, "root", "4.000000"), said(ALICE, "<@U0BOT> hi", "4.000001")])
    bot.slack.fail(method, status=200, body="<html>Bad gateway</html>")

    await bot.send_event(mention("<@U0BOT> hi", ts="4.000001", thread_ts="4.000000"))

    told = "chat.postEphemeral" if method == "users.info" else "chat.postMessage"  # refused; can't read
    [sentence] = await bot.slack.wait_for(told)
    assert sentence.params["text"] and "<html>" not in sentence.params["text"]
    assert not bot.claude.requests


async def test_a_whole_answer_whose_stop_stream_connection_drops_gets_no_cut_off_note_and_does_not_raise(bot):
    """The words are all shown; only the stream's end failed (Slack ends it in time): nothing is added."""
    bot.slack.add_thread(CHANNEL, [said(ALICE, "root", "9.000000"), said(ALICE, "<@U0BOT> hi", "9.000001")])
    bot.slack.fail("chat.stopStream", error="connection_dropped", times=4)

    await bot.send_event(mention("<@U0BOT> hi", ts="9.000001", thread_ts="9.000000"))
    await bot.finished()
    await bot.pipeline.wait_idle()

    assert bot.replies(CHANNEL, "9.000000") == ["Hello from fake Claude."]
    assert len(bot.slack.calls_to("chat.startStream")) == 1
