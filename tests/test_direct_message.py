"""Direct messages, end to end over Socket Mode."""

from __future__ import annotations

import time

from tests.conftest import ALICE, DM, bot_said, direct_message, said


def now_ts(offset_seconds: float = 0.0) -> str:
    return f"{time.time() + offset_seconds:.6f}"


async def test_dm_answers_in_the_dm_with_recent_messages_as_context(bot):
    old, earlier, answer, question = now_ts(-3 * 86400), now_ts(-120), now_ts(-60), now_ts()
    bot.slack.add_history(
        DM,
        [
            said(ALICE, "a message from three days ago", old),
            said(ALICE, "What is our travel policy?", earlier),
            bot_said("Book through the portal.", answer),
            said(ALICE, "And for conferences abroad?", question),
        ],
    )
    bot.claude.reply("Ask your manager first.")

    await bot.send_event(direct_message("And for conferences abroad?", ts=question))

    await bot.finished()
    assert bot.slack.top_level_texts(DM) == ["Book through the portal.", "Ask your manager first."]
    assert {call.params.get("thread_ts") for call in bot.slack.calls_to("chat.postMessage")} == {None}
    history = bot.slack.calls_to("conversations.history")[0]
    assert float(history.params["oldest"]) > time.time() - 24 * 3600 - 60
    assert bot.claude.requests[0].body["messages"] == [
        {"role": "user", "content": "Alice: What is our travel policy?"},
        {"role": "assistant", "content": "Book through the portal."},
        {"role": "user", "content": "Alice: And for conferences abroad?"},
    ]


async def test_dm_in_a_thread_reads_that_thread_and_answers_in_it(bot):
    root, reply = now_ts(-60), now_ts()
    bot.slack.add_thread(
        DM, [said(ALICE, "Draft an announcement", root), said(ALICE, "Shorter please", reply)]
    )

    await bot.send_event(direct_message("Shorter please", ts=reply, thread_ts=root))

    await bot.slack.wait_for("assistant.threads.setStatus", count=2)  # cleared once the answer is done
    assert bot.replies(DM, root) == ["Hello from fake Claude."]
    assert not bot.slack.calls_to("conversations.history")
    assert bot.claude.requests[0].body["messages"] == [
        {"role": "user", "content": "Alice: Draft an announcement\n\nAlice: Shorter please"}
    ]


async def test_dm_with_a_file_and_text_is_answered(bot):
    ts = now_ts()
    event = direct_message("What does this log say?", ts=ts, subtype="file_share", files=[{"id": "F1"}])
    await bot.send_event(event)

    await bot.finished()
    assert bot.claude.requests[0].body["messages"][-1]["content"] == "Alice: What does this log say?"


async def test_message_in_a_channel_is_not_answered(bot):
    event = direct_message("just chatting", ts=now_ts(), channel="C0GENERAL", channel_type="channel")
    await bot.send_event(event)
    await bot.send_event(direct_message("a real DM", ts=now_ts()))

    await bot.finished()
    assert len(bot.claude.requests) == 1
    assert "a real DM" in bot.claude.requests[0].body["messages"][-1]["content"]
