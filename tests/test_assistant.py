"""The agent surface (Slack's "Agents & AI apps"): assistant threads in the bot's Messages tab, their
status line, title and suggested prompts, the channel the user is viewing, and the Stop button."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.pipeline import access as rules
from bot.pipeline.context import asks_about_channel
from bot.surfaces.assistant import SUGGESTED_PROMPTS
from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, DM, bot_said, direct_message, said
from tests.test_manifest import load_manifest

OTHER_CHANNEL = "C0RANDOM"


def now_ts(offset_seconds: float = 0.0) -> str:
    return f"{time.time() + offset_seconds:.6f}"


async def deliver(bot, envelope: dict) -> None:
    await bot.slack.send_envelope(envelope)
    await bot.slack.wait_for_ack(envelope["envelope_id"])


async def start_thread(bot, thread_ts: str, viewing: str | None = CHANNEL) -> None:
    """Open an assistant thread while viewing `viewing`; returns once the bot has greeted it."""
    prompts_before = len(bot.slack.calls_to("assistant.threads.setSuggestedPrompts"))
    envelope = bot.slack.assistant_thread_started_envelope(thread_ts=thread_ts, context_channel_id=viewing)
    await deliver(bot, envelope)
    await bot.slack.wait_for("assistant.threads.setSuggestedPrompts", count=prompts_before + 1)


async def answered(bot, count: int = 1) -> None:
    """Wait until `count` assistant-thread answers are complete: each clears the status line last."""
    await bot.slack.wait_for("assistant.threads.setStatus", count=2 * count)


def methods(bot) -> list[str]:
    return [call.method for call in bot.slack.calls]


async def test_thread_started_greets_and_offers_prompts_without_reading_slack(bot):
    await start_thread(bot, "10.000001")

    [greeting] = bot.slack.calls_to("chat.postMessage")
    assert greeting.params["channel"] == DM
    assert greeting.params["thread_ts"] == "10.000001"
    assert "keep nothing" in greeting.params["text"]
    [prompts] = bot.slack.calls_to("assistant.threads.setSuggestedPrompts")
    assert prompts.params["channel_id"] == DM
    assert prompts.params["thread_ts"] == "10.000001"
    assert prompts.params["title"]
    assert 1 <= len(prompts.params["prompts"]) <= 4
    assert all(prompt["title"] and prompt["message"] for prompt in prompts.params["prompts"])
    assert not [method for method in methods(bot) if method.startswith("conversations.")]
    assert not bot.claude.requests


async def test_message_in_a_dm_thread_is_answered_in_it_with_the_thread_as_context(bot):
    bot.slack.add_thread(
        DM,
        [
            said(ALICE, "Draft a note saying the office is closed on Monday.", "20.000001"),
            bot_said("The office will be closed this Monday. Enjoy the long weekend!", "20.000002"),
            said(ALICE, "Make it more formal.", "20.000003"),
        ],
    )
    bot.claude.reply("Please note that the office will be closed on Monday.")

    await bot.send_event(direct_message("Make it more formal.", ts="20.000003", thread_ts="20.000001"))

    await answered(bot)
    assert bot.replies(DM, "20.000001") == [
        "The office will be closed this Monday. Enjoy the long weekend!",
        "Please note that the office will be closed on Monday.",
    ]
    [stream] = bot.slack.calls_to("chat.startStream")
    assert stream.params["channel"] == DM
    assert stream.params["thread_ts"] == "20.000001"
    assert not bot.slack.calls_to("chat.postMessage")
    reads = bot.slack.calls_to("conversations.replies")
    assert {(call.params["channel"], call.params["ts"]) for call in reads} == {(DM, "20.000001")}
    assert not bot.slack.calls_to("conversations.history")
    assert bot.claude.requests[0].body["messages"] == [
        {"role": "user", "content": "Alice: Draft a note saying the office is closed on Monday."},
        {"role": "assistant", "content": "The office will be closed this Monday. Enjoy the long weekend!"},
        {"role": "user", "content": "Alice: Make it more formal."},
    ]


async def test_status_shows_thinking_before_the_answer_and_is_cleared_after_it(bot):
    bot.slack.add_thread(DM, [said(ALICE, "What is a mutex?", "30.000001")])

    await bot.send_event(direct_message("What is a mutex?", ts="30.000001", thread_ts="30.000001"))

    await answered(bot)
    thinking, cleared = bot.slack.calls_to("assistant.threads.setStatus")
    assert (thinking.params["channel_id"], thinking.params["thread_ts"]) == (DM, "30.000001")
    assert thinking.params["status"] == "is thinking…"
    assert (cleared.params["channel_id"], cleared.params["thread_ts"]) == (DM, "30.000001")
    assert cleared.params["status"] == ""
    calls = bot.slack.calls
    assert calls.index(thinking) < min(i for i, c in enumerate(calls) if c.method == "chat.startStream")
    assert calls.index(cleared) > max(i for i, c in enumerate(calls) if c.method == "chat.stopStream")
    assert bot.replies(DM, "30.000001") == ["Hello from fake Claude."]


async def test_thread_is_titled_after_its_first_question_only(bot):
    bot.slack.add_thread(
        DM,
        [
            bot_said("Hi! Ask me anything.", "40.000001"),
            said(ALICE, "How do I rotate the staging database password?\nWe use Vault.", "40.000002"),
        ],
    )
    first = "How do I rotate the staging database password?\nWe use Vault."
    await bot.send_event(direct_message(first, ts="40.000002", thread_ts="40.000001"))
    await answered(bot)

    [title] = bot.slack.calls_to("assistant.threads.setTitle")
    assert (title.params["channel_id"], title.params["thread_ts"]) == (DM, "40.000001")
    assert title.params["title"] == "How do I rotate the staging database password?"

    # The first answer is in the thread now; the second question comes after it.
    await bot.send_event(direct_message("And for production?", ts=now_ts(1), thread_ts="40.000001"))
    await answered(bot, count=2)

    assert len(bot.slack.calls_to("assistant.threads.setTitle")) == 1
    assert len(bot.claude.requests) == 2
    assert "Alice: How do I rotate" in str(bot.claude.requests[1].body["messages"])


async def test_viewed_channel_is_not_read_for_an_ordinary_question(bot):
    bot.slack.add_history(CHANNEL, [said(BOB, "The launch moved to Friday.", "50.000001")])
    await start_thread(bot, "51.000001", viewing=CHANNEL)

    await bot.send_event(direct_message("What is a mutex?", ts="51.000002", thread_ts="51.000001"))

    await answered(bot)
    assert not bot.slack.calls_to("conversations.history")
    assert "The launch moved to Friday." not in bot.claude.requests[0].body["system"]


async def test_question_about_the_viewed_channel_reads_it_into_the_system_prompt(bot):
    bot.slack.add_history(
        CHANNEL,
        [said(BOB, "The launch moved to Friday.", "60.000001"), said(ALICE, "Who tells sales?", "60.000002")],
    )
    await start_thread(bot, "61.000001", viewing=CHANNEL)

    await bot.send_event(direct_message("Summarize this channel", ts="61.000002", thread_ts="61.000001"))

    await answered(bot)
    [history] = bot.slack.calls_to("conversations.history")
    assert history.params["channel"] == CHANNEL
    request = bot.claude.requests[0].body
    assert "Bob Builder: The launch moved to Friday.\nAlice: Who tells sales?" in request["system"]
    assert request["messages"][-1]["content"].endswith("Alice: Summarize this channel")


async def test_after_the_context_changes_the_new_channel_is_the_one_read(bot):
    bot.slack.add_history(CHANNEL, [said(BOB, "The launch moved to Friday.", "70.000001")])
    bot.slack.add_history(OTHER_CHANNEL, [said(BOB, "Lunch is on the roof today.", "70.000002")])
    await start_thread(bot, "71.000001", viewing=CHANNEL)
    await deliver(
        bot,
        bot.slack.assistant_context_changed_envelope(thread_ts="71.000001", context_channel_id=OTHER_CHANNEL),
    )

    await bot.send_event(
        direct_message("What is going on in this channel?", ts="71.000002", thread_ts="71.000001")
    )

    await answered(bot)
    assert [call.params["channel"] for call in bot.slack.calls_to("conversations.history")] == [OTHER_CHANNEL]
    system = bot.claude.requests[0].body["system"]
    assert "Lunch is on the roof today." in system
    assert "The launch moved to Friday." not in system


async def test_messages_tab_gets_suggested_prompts_and_the_home_tab_gets_nothing(bot):
    await deliver(bot, bot.slack.app_home_opened_envelope(user_id=BOB, channel_id="D0BOB", tab="home"))
    await deliver(bot, bot.slack.app_home_opened_envelope(user_id=ALICE, channel_id=DM, tab="messages"))

    [prompts] = await bot.slack.wait_for("assistant.threads.setSuggestedPrompts")
    assert prompts.params["channel_id"] == DM
    assert "thread_ts" not in prompts.params
    assert 1 <= len(prompts.params["prompts"]) <= 4
    assert prompts.params["title"]
    assert not [m for m in methods(bot) if m.startswith(("chat.", "conversations.", "views."))]


async def test_stop_cancels_the_answer_being_written_and_closes_the_claude_stream(bot):
    full = "a long answer nobody will read " * 40
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.05
    bot.claude.reply(full)
    bot.slack.add_thread(DM, [said(ALICE, "Tell me everything", "80.000001")])
    await bot.send_event(direct_message("Tell me everything", ts="80.000001", thread_ts="80.000001"))
    await bot.slack.wait_for("chat.startStream")
    [append, *_] = await bot.slack.wait_for("chat.appendStream")

    await deliver(
        bot,
        bot.slack.agent_session_stopped_envelope(
            channel_id=DM, user_id=ALICE, thread_ts="80.000001", streaming_message_ts=[append.params["ts"]]
        ),
    )

    await bot.claude.wait_for_abandoned()  # the connection was closed: no more tokens are generated
    await answered(bot)
    assert bot.slack.calls_to("assistant.threads.setStatus")[-1].params["status"] == ""
    [answer] = bot.replies(DM, "80.000001")
    assert 0 < len(answer) < len(full)
    assert full.startswith(answer)


async def test_stop_cancels_an_answer_written_by_message_updates(bot):
    """Without native streaming Slack has no stream of ours to end: only the bot can stop the answer."""
    full = "a long answer nobody will read " * 40
    bot.slack.refuse_streaming()
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.05
    bot.claude.reply(full)
    bot.slack.add_thread(DM, [said(ALICE, "Tell me everything", "85.000001")])
    await bot.send_event(direct_message("Tell me everything", ts="85.000001", thread_ts="85.000001"))
    await bot.slack.wait_for("chat.postMessage")

    await deliver(
        bot,
        bot.slack.agent_session_stopped_envelope(
            channel_id=DM, user_id=ALICE, thread_ts="85.000001", streaming_message_ts=[]
        ),
    )

    await bot.claude.wait_for_abandoned()
    await answered(bot)
    assert bot.slack.calls_to("assistant.threads.setStatus")[-1].params["status"] == ""
    [answer] = bot.replies(DM, "85.000001")
    assert answer.endswith("_(Stopped.)_")
    assert len(answer) < len(full)


async def test_stop_in_a_thread_with_nothing_running_is_harmless(bot):
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.01
    full = "an answer that keeps going " * 8
    bot.claude.reply(full)
    bot.slack.add_thread(DM, [said(ALICE, "Go on", "90.000001")])
    await bot.send_event(direct_message("Go on", ts="90.000001", thread_ts="90.000001"))
    await bot.slack.wait_for("chat.startStream")

    # Stop pressed in another thread, where nothing is being written.
    await deliver(
        bot,
        bot.slack.agent_session_stopped_envelope(
            channel_id=DM, user_id=ALICE, thread_ts="91.000001", streaming_message_ts=[]
        ),
    )

    await answered(bot)
    assert bot.replies(DM, "90.000001") == [full]
    assert bot.claude.abandoned == 0


async def test_stop_pressed_as_the_answer_ends_leaves_nothing_in_flight(bot):
    """A Stop that lands while the answer clears its status must not skip the release of its claim:
    left held, another replica would answer the question again once this one stopped."""
    bot.claude.reply("A short answer.")
    bot.slack.add_thread(DM, [said(ALICE, "Quick one", "92.000001")])
    bot.slack.delay("assistant.threads.setStatus", 0.3)
    await bot.send_event(direct_message("Quick one", ts="92.000001", thread_ts="92.000001"))
    await bot.slack.wait_for("chat.stopStream")
    await answered(bot)  # the status is being cleared, slowly

    await deliver(
        bot,
        bot.slack.agent_session_stopped_envelope(
            channel_id=DM, user_id=ALICE, thread_ts="92.000001", streaming_message_ts=[]
        ),
    )
    await bot.pipeline.wait_idle()

    assert bot.replies(DM, "92.000001") == ["A short answer."]
    assert bot.pipeline.in_flight.running_in(DM, "92.000001") is None


async def test_a_stop_pressed_as_the_stream_ends_posts_no_second_message(bot):
    """The whole answer is shown and its stream is being ended: the Stop has nothing left to stop, and
    must not open a new message to say so."""
    bot.slack.add_thread(DM, [said(ALICE, "Tell me", "81.000001")])
    bot.slack.hold("chat.stopStream")
    try:
        await bot.send_event(direct_message("Tell me", ts="81.000001", thread_ts="81.000001"))
        [stop] = await bot.slack.wait_for("chat.stopStream")
        await deliver(
            bot,
            bot.slack.agent_session_stopped_envelope(
                channel_id=DM, user_id=ALICE, thread_ts="81.000001", streaming_message_ts=[stop.params["ts"]]
            ),
        )
        await bot.arrivals.settled()
    finally:
        bot.slack.let_go("chat.stopStream")
    await bot.pipeline.wait_idle()

    assert len(bot.slack.calls_to("chat.startStream")) == 1
    assert bot.replies(DM, "81.000001") == ["Hello from fake Claude."]
    assert not bot.slack.message(DM, stop.params["ts"])["streaming"]


async def test_bot_messages_and_edits_in_a_dm_thread_are_ignored(bot):
    bot.slack.add_thread(DM, [said(ALICE, "Hello", "95.000001")])
    from_a_bot = direct_message(
        "I am another app", ts="95.000002", thread_ts="95.000001", bot_id="B0OTHER", subtype="bot_message"
    )
    from_itself = direct_message("an answer", ts="95.000003", thread_ts="95.000001", user=BOT_USER)
    edit = direct_message(
        "Hello (edited)",
        ts="95.000004",
        thread_ts="95.000001",
        subtype="message_changed",
        message={"type": "message", "user": ALICE, "text": "Hello (edited)", "ts": "95.000001"},
    )
    for event in (from_a_bot, from_itself, edit):
        await bot.send_event(event)
    await bot.send_event(direct_message("A real question", ts="95.000005", thread_ts="95.000001"))

    await answered(bot)
    [request] = bot.claude.requests
    assert request.body["messages"][-1]["content"].endswith("Alice: A real question")
    assert len(bot.slack.calls_to("chat.startStream")) == 1


# The viewed channel: read only for a question plainly about it, and only when the asker may read it now.

ABOUT_THE_VIEWED_CHANNEL = [
    "Summarize this channel",
    "What is going on in this channel?",
    "what did I miss in <#C0GENERAL>?",
    "catch me up on <#C0GENERAL|general> please",
    "What's being discussed in the channel I'm in?",
    "What are people saying in the channel I’m viewing?",
    "summarize the current channel",
    "TL;DR of this channel",
    "Summarize what's been happening here",
    "Can you recap this conversation?",
    *[prompt["message"] for prompt in SUGGESTED_PROMPTS if "channel" in prompt["title"].lower()],
]
NOT_ABOUT_IT = [
    "Explain the channel concept in Go",
    "how do I mute the channel?",
    "continue the conversation about mutexes",
    "What is a mutex?",
    "How do Go channels work?",
    "Which channel should I post this in?",
    "Is there a channel for incident reviews?",
    "Summarize the thread above",
    "Write a summary of my conversation with the client",
    "Here is my code, what does it do?",
    "Let's continue this conversation tomorrow",
    "What's going on in <#C0RANDOM|random>?",  # a link, but to a channel the asker is not viewing
    "What is the current conversation rate on the landing page?",
]


@pytest.mark.parametrize("question", ABOUT_THE_VIEWED_CHANNEL)
def test_a_question_plainly_about_the_viewed_channel_is_recognised(question):
    assert asks_about_channel(question, CHANNEL)


@pytest.mark.parametrize("question", NOT_ABOUT_IT)
def test_a_question_that_only_mentions_channels_or_conversations_is_not_about_the_viewed_one(question):
    assert not asks_about_channel(question, CHANNEL)


def test_the_manifests_summarize_prompt_reads_the_viewed_channel():
    prompts = load_manifest()["features"]["agent_view"]["suggested_prompts"]
    [summarize] = [prompt["message"] for prompt in prompts if "channel" in prompt["title"].lower()]
    assert asks_about_channel(summarize, CHANNEL)


@pytest.mark.parametrize("question", NOT_ABOUT_IT[:3])
async def test_the_viewed_channel_is_not_touched_for_a_question_not_about_it(bot, question):
    bot.slack.add_history(CHANNEL, [said(BOB, "The launch moved to Friday.", "52.000001")])
    await start_thread(bot, "53.000001", viewing=CHANNEL)

    await bot.send_event(direct_message(question, ts=now_ts(), thread_ts="53.000001"))

    await answered(bot)
    assert not bot.slack.calls_to("conversations.history")
    assert not bot.slack.calls_to("conversations.info")
    assert "The launch moved to Friday." not in bot.claude.requests[0].body["system"]


def viewed_channel_reads(bot, channel: str = CHANNEL) -> int:
    return sum(call.params["channel"] == channel for call in bot.slack.calls_to("conversations.history"))


async def ask_about_the_channel(
    bot, thread_ts: str, *, count: int = 1, user: str = ALICE, dm: str = DM
) -> None:
    """Ask "summarize this channel" in the thread; returns once the `count`-th answer there is complete."""
    await bot.send_event(
        direct_message("Summarize this channel", ts=now_ts(), thread_ts=thread_ts, user=user, channel=dm)
    )
    await answered(bot, count)


async def told_it_was_not_read(bot, thread_ts: str, user: str = ALICE, dm: str = DM) -> None:
    [note] = await bot.slack.wait_for("chat.postEphemeral")
    assert (note.params["channel"], note.params["thread_ts"], note.params["user"]) == (dm, thread_ts, user)
    assert note.params["text"] == rules.VIEWED_CHANNEL_NOT_READ


@pytest.mark.parametrize(
    "bot_overrides", [{"DENIED_CHANNELS": CHANNEL}, {"ALLOWED_CHANNELS": OTHER_CHANNEL}], indirect=True
)
async def test_the_channel_lists_apply_to_the_viewed_channel(bot):
    bot.slack.add_history(CHANNEL, [said(BOB, "The launch moved to Friday.", "54.000001")])
    await start_thread(bot, "55.000001", viewing=CHANNEL)

    await ask_about_the_channel(bot, "55.000001")

    assert viewed_channel_reads(bot) == 0
    assert "The launch moved to Friday." not in bot.claude.requests[0].body["system"]
    assert bot.replies(DM, "55.000001")[-1] == "Hello from fake Claude."  # answered from the thread alone
    await told_it_was_not_read(bot, "55.000001")


@pytest.mark.parametrize(
    ("channel", "fields"),
    [("C0SECRET", {"is_private": True}), ("G0LEGACY", {}), ("G0GROUPDM", {"is_mpim": True})],
)
async def test_a_private_viewed_channel_is_read_only_while_the_asker_is_a_member(bot, channel, fields):
    bot.slack.add_channel(channel, **fields)
    bot.slack.add_history(channel, [said(BOB, "Reorg on Monday.", "56.000001")])
    bot.slack.set_members(channel, [BOB])
    await start_thread(bot, "57.000001", viewing=channel)

    await ask_about_the_channel(bot, "57.000001")
    assert viewed_channel_reads(bot, channel) == 0
    await told_it_was_not_read(bot, "57.000001")

    bot.slack.set_members(channel, [BOB, ALICE])  # she joins: the next question may read it
    await ask_about_the_channel(bot, "57.000001", count=2)
    assert viewed_channel_reads(bot, channel) == 1
    assert "Reorg on Monday." in bot.claude.requests[1].body["system"]

    bot.slack.set_members(channel, [BOB])  # she leaves: membership is checked again, not remembered
    await ask_about_the_channel(bot, "57.000001", count=3)
    assert viewed_channel_reads(bot, channel) == 1
    assert "Reorg on Monday." not in bot.claude.requests[2].body["system"]


async def test_a_direct_message_is_never_read_as_the_viewed_channel(bot):
    bot.slack.add_history("D0BOBCAROL", [said(BOB, "Between us: the offer is 120k.", "58.000001")])
    await start_thread(bot, "59.000001", viewing="D0BOBCAROL")

    await ask_about_the_channel(bot, "59.000001")

    assert not [call for call in bot.slack.calls if call.params.get("channel") == "D0BOBCAROL"]
    assert "offer" not in bot.claude.requests[0].body["system"]
    await told_it_was_not_read(bot, "59.000001")


async def test_a_channel_hosted_by_another_organization_is_not_read(bot):
    bot.slack.add_channel(OTHER_CHANNEL, is_shared=True, is_ext_shared=True, conversation_host_id="T0PARTNER")
    bot.slack.add_history(OTHER_CHANNEL, [said(BOB, "Partner roadmap draft.", "62.000001")])
    await start_thread(bot, "63.000001", viewing=OTHER_CHANNEL)

    await ask_about_the_channel(bot, "63.000001")

    assert viewed_channel_reads(bot, OTHER_CHANNEL) == 0
    await told_it_was_not_read(bot, "63.000001")


async def test_a_shared_channel_this_workspace_hosts_is_read(bot):
    bot.slack.add_channel(OTHER_CHANNEL, is_shared=True, is_ext_shared=True, conversation_host_id="T0TEAM")
    bot.slack.add_history(OTHER_CHANNEL, [said(BOB, "Joint launch checklist.", "64.000001")])
    await start_thread(bot, "65.000001", viewing=OTHER_CHANNEL)

    await ask_about_the_channel(bot, "65.000001")

    assert viewed_channel_reads(bot, OTHER_CHANNEL) == 1
    assert not bot.slack.calls_to("chat.postEphemeral")


@pytest.mark.parametrize("bot_overrides", [{"ALLOW_GUESTS": "on"}], indirect=True)
async def test_a_guest_may_have_a_public_channel_read_only_if_they_are_in_it(bot):
    guest, guest_dm = "U0GUEST", "D0GUEST"
    bot.slack.add_user(guest, display_name="Gus", is_restricted=True)
    bot.slack.add_history(CHANNEL, [said(BOB, "The launch moved to Friday.", "66.000001")])
    bot.slack.set_members(CHANNEL, [BOB])
    await deliver(
        bot,
        bot.slack.assistant_thread_started_envelope(
            user_id=guest, channel_id=guest_dm, thread_ts="67.000001", context_channel_id=CHANNEL
        ),
    )
    await bot.slack.wait_for("assistant.threads.setSuggestedPrompts")

    await ask_about_the_channel(bot, "67.000001", user=guest, dm=guest_dm)

    assert viewed_channel_reads(bot) == 0
    await told_it_was_not_read(bot, "67.000001", user=guest, dm=guest_dm)


async def test_when_slack_says_no_channel_is_viewed_any_more_the_old_one_is_forgotten(bot):
    bot.slack.add_history(CHANNEL, [said(BOB, "The launch moved to Friday.", "68.000001")])
    await start_thread(bot, "69.000001", viewing=CHANNEL)
    await deliver(
        bot, bot.slack.assistant_context_changed_envelope(thread_ts="69.000001", context_channel_id=None)
    )

    await ask_about_the_channel(bot, "69.000001")

    assert viewed_channel_reads(bot) == 0
    assert "The launch moved to Friday." not in bot.claude.requests[0].body["system"]


async def test_a_stop_pressed_twice_still_ends_the_answer_and_clears_its_status(bot, caplog):
    """The second press lands while the first one's ending waits on Slack: it must not cut that short."""
    caplog.set_level(logging.INFO, logger="bot")
    full = "a long answer nobody will read " * 40
    bot.slack.refuse_streaming()
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.05
    bot.claude.reply(full)
    bot.slack.add_thread(DM, [said(ALICE, "Tell me everything", "86.000001")])
    bot.slack.hold("assistant.threads.setStatus")  # "is thinking…", slow to be shown
    await bot.send_event(direct_message("Tell me everything", ts="86.000001", thread_ts="86.000001"))
    await bot.slack.wait_for("chat.update")
    first, second = (
        bot.slack.agent_session_stopped_envelope(
            channel_id=DM, user_id=ALICE, thread_ts="86.000001", streaming_message_ts=[]
        )
        for _ in range(2)
    )

    await deliver(bot, first)
    await bot.claude.wait_for_abandoned()
    await asyncio.wait_for(_logged(caplog, "surface=assistant cancelled", count=1), timeout=10)
    await deliver(bot, second)
    await asyncio.wait_for(_logged(caplog, "stop pressed in", count=2), timeout=10)  # the second press
    bot.slack.let_go("assistant.threads.setStatus")

    await bot.pipeline.wait_idle()
    [answer] = bot.replies(DM, "86.000001")
    assert answer.endswith("_(Stopped.)_")
    assert bot.slack.calls_to("assistant.threads.setStatus")[-1].params["status"] == ""


async def _logged(caplog, text: str, count: int) -> None:
    while sum(text in record.getMessage() for record in caplog.records) < count:
        await asyncio.sleep(0.01)


async def test_a_question_about_the_channel_when_none_is_known_says_so_privately(bot):
    """A thread opened from the DM itself (Slack's context names no channel), or in the agent view, which
    sends no context at all: "Summarize this channel", the bot's own suggested prompt, has no channel to
    read. It is answered from the thread alone, and the asker is told why, as when a channel may not be
    read, rather than left to think the channel was read."""
    await start_thread(bot, "75.000001", viewing=None)

    await ask_about_the_channel(bot, "75.000001")

    assert not bot.slack.calls_to("conversations.history")
    assert not bot.slack.calls_to("conversations.info")
    [note] = bot.slack.calls_to("chat.postEphemeral")
    assert (note.params["channel"], note.params["thread_ts"], note.params["user"]) == (DM, "75.000001", ALICE)
    assert note.params["text"] == rules.NO_VIEWED_CHANNEL
    assert bot.replies(DM, "75.000001")[-1] == "Hello from fake Claude."
