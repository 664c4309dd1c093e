"""Under load: a bounded number of Claude calls at once (the rest wait, visibly), a per-user rate
limit with a polite answer, and a deadline so that no request hangs forever."""

from __future__ import annotations

import asyncio

import pytest

from bot.pipeline.access import GuestAccount
from bot.pipeline.progress import WAITING_STATUS
from bot.pipeline.said import TOO_MANY_REQUESTS, TOOK_TOO_LONG
from tests.conftest import ALICE, BOB, CHANNEL, DM, direct_message, mention, said

GUEST = "U0GUEST"


@pytest.mark.parametrize("bot_overrides", [{"MAX_CONCURRENT_ANSWERS": "2"}], indirect=True)
async def test_claude_calls_beyond_the_limit_wait_and_are_all_answered(bot):
    bot.claude.first_token_delay = 0.3
    for n in range(5):
        await bot.send_event(
            mention(f"<@U0BOT> question {n}", ts=f"1.00000{n}", user=ALICE if n % 2 else BOB)
        )

    await bot.claude.wait_for_requests(2)
    await asyncio.sleep(0.1)  # give a third request the chance to (wrongly) start while two are running
    assert len(bot.claude.requests) == 2
    await bot.finished(count=5)
    assert len(bot.claude.requests) == 5
    assert all(bot.replies(CHANNEL, f"1.00000{n}") == ["Hello from fake Claude."] for n in range(5))


@pytest.mark.parametrize("bot_overrides", [{"MAX_CONCURRENT_ANSWERS": "1"}], indirect=True)
async def test_waiting_is_shown_in_an_assistant_thread(bot):
    bot.claude.first_token_delay = 0.3
    await bot.send_event(mention("<@U0BOT> first", ts="2.000001"))
    await bot.claude.wait_for_requests(1)
    bot.slack.add_thread(DM, [said(ALICE, "hello", "2.000002"), said(ALICE, "second", "2.000003")])
    await bot.send_event(direct_message("second", ts="2.000003", thread_ts="2.000002"))

    statuses = await bot.slack.wait_for("assistant.threads.setStatus", count=2)
    assert statuses[1].params["status"] == WAITING_STATUS
    await bot.slack.wait_for("assistant.threads.setStatus", count=4)  # its turn: thinking, then cleared
    assert bot.replies(DM, "2.000002") == ["Hello from fake Claude."]


@pytest.mark.parametrize("bot_overrides", [{"USER_REQUESTS_PER_MINUTE": "2"}], indirect=True)
async def test_a_person_over_the_rate_limit_is_told_privately_and_nothing_is_read(bot):
    bot.slack.add_thread(CHANNEL, [said(ALICE, f"<@U0BOT> again {n}", f"3.00000{n}") for n in range(3)])
    for n in range(3):
        await bot.send_event(mention(f"<@U0BOT> again {n}", ts=f"3.00000{n}", thread_ts="3.000000"))
    await bot.send_event(mention("<@U0BOT> someone else", ts="3.000009", user=BOB))

    await bot.finished(count=3)  # two of Alice's and Bob's; the refused one showed no progress
    [notice] = await bot.slack.wait_for("chat.postEphemeral")
    assert notice.params["text"] == TOO_MANY_REQUESTS.sentence
    assert (notice.params["user"], notice.params["channel"]) == (ALICE, CHANNEL)
    assert notice.params["thread_ts"] == "3.000000"
    assert len(bot.claude.requests) == 3
    # Nothing public about it: the thread holds only the two answers to Alice.
    assert bot.replies(CHANNEL, "3.000000") == ["Hello from fake Claude."] * 2
    assert not [c for c in bot.slack.calls_to("chat.postMessage") if "asked me a lot" in c.params["text"]]
    # The refused one (whichever of Alice's came last to the count) showed no progress and read nothing.
    alices = {f"3.00000{n}" for n in range(3)}
    [refused] = alices - {call.params["timestamp"] for call in bot.slack.calls_to("reactions.add")}
    assert refused not in {call.params["latest"] for call in bot.slack.calls_to("conversations.replies")}


@pytest.mark.parametrize("bot_overrides", [{"USER_REQUESTS_PER_MINUTE": "1"}], indirect=True)
async def test_the_rate_limit_is_counted_after_the_access_check(bot):
    """A guest is refused as a guest every time, never told to slow down; refusals use up no requests."""
    bot.slack.add_user(GUEST, display_name="Gus", is_restricted=True)
    bot.slack.add_thread(CHANNEL, [said(GUEST, f"<@U0BOT> try {n}", f"6.00000{n}") for n in range(2)])
    for n in range(2):
        await bot.send_event(mention(f"<@U0BOT> try {n}", ts=f"6.00000{n}", thread_ts="6.000000", user=GUEST))

    notices = await bot.slack.wait_for("chat.postEphemeral", count=2)
    assert [call.params["text"] for call in notices] == [GuestAccount.sentence] * 2
    assert not bot.slack.calls_to("chat.postMessage")
    assert not bot.slack.calls_to("conversations.replies")


@pytest.mark.parametrize("bot_overrides", [{"USER_REQUESTS_PER_MINUTE": "1"}], indirect=True)
async def test_over_the_rate_limit_in_a_dm_or_a_command_the_notice_is_private(bot):
    await bot.send_event(direct_message("first", ts="7.000001"))
    await bot.finished()
    await bot.send_event(direct_message("second", ts="7.000002"))
    [notice] = await bot.slack.wait_for("chat.postEphemeral")
    assert (notice.params["channel"], notice.params["user"]) == (DM, ALICE)
    assert notice.params["text"] == TOO_MANY_REQUESTS.sentence

    await bot.send_command("and a third")
    [response] = await bot.slack.wait_for("response_url")
    assert response.params["text"] == TOO_MANY_REQUESTS.sentence
    assert response.params.get("response_type") == "ephemeral"
    assert bot.slack.top_level_texts(DM) == ["Hello from fake Claude."]
    assert len(bot.claude.requests) == 1


@pytest.mark.parametrize(
    "bot_overrides", [{"REQUEST_DEADLINE_SECONDS": "1", "CLAUDE_TIMEOUT_SECONDS": "60"}], indirect=True
)
async def test_an_answer_past_its_deadline_is_ended_with_a_short_note(bot):
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.4
    bot.claude.reply("slow words that take far longer than the deadline allows")
    await bot.send_event(mention("<@U0BOT> slow", ts="4.000001"))

    await bot.finished()
    [text] = bot.replies(CHANNEL, "4.000001")
    assert text.startswith("slow")
    assert text.endswith(f"_(Cut off: {TOOK_TOO_LONG.sentence})_")
    await bot.claude.wait_for_abandoned()


async def test_acks_never_wait_on_slack_or_claude(bot):
    bot.slack.latency = 0.6  # every Web API call, auth.test included, is slow
    bot.claude.first_token_delay = 0.6
    frame = bot.slack.events_api_envelope(mention("<@U0BOT> slow everything", ts="5.000001"))

    await bot.slack.send_envelope(frame)
    await bot.slack.wait_for_ack(frame["envelope_id"], timeout=0.5)  # well before any call could answer

    await bot.pipeline.wait_idle()
    assert bot.replies(CHANNEL, "5.000001") == ["Hello from fake Claude."]
