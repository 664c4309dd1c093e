"""Message shortcuts, end to end over Socket Mode: "Summarize thread" and "Ask Claude about this thread"
(a question in a modal), each answered privately through the response_url with the thread as context."""

from __future__ import annotations

import json

import pytest

from bot.pipeline.access import NotAMember
from tests.conftest import ALICE, BOB, CHANNEL, bot_said, said

SUMMARY_REQUEST = "Summarize this thread: the main points, the decisions made, and the open questions."
WORKING_NOTE = ":hourglass_flowing_sand: Reading the thread and asking Claude…"
CANT_READ = "I couldn't read this conversation from Slack. If it's a private channel, invite me first."
ROOT, REPLY = "100.000001", "100.000003"
THREAD = [
    said(BOB, "Checkout latency spiked at 14:02.", ROOT),
    bot_said("A cache node restarted.", "100.000002"),
    said(ALICE, "We should pin the cache version.", REPLY),
]


def question(value: str) -> dict:
    return {"question": {"text": {"type": "plain_text_input", "value": value}}}


async def deliver(bot, envelope: dict) -> dict:
    """Send an interactive envelope; returns the bot's ack frame."""
    await bot.slack.send_envelope(envelope)
    return await bot.slack.wait_for_ack(envelope["envelope_id"])


async def private_posts(bot, count: int) -> list:
    """The first `count` posts to any response_url, once they have arrived."""
    return (await bot.slack.wait_for("response_url", count=count))[:count]


def assert_nothing_public(bot) -> None:
    assert not bot.slack.calls_to("chat.postMessage")
    assert not bot.slack.calls_to("chat.startStream")
    assert not bot.slack.calls_to("chat.postEphemeral")


@pytest.mark.parametrize(
    ("message", "thread_ts"),
    [
        pytest.param({**THREAD[2], "thread_ts": ROOT}, ROOT, id="reply-in-a-thread"),
        pytest.param(THREAD[0], ROOT, id="thread-parent"),
    ],
)
async def test_summarize_thread_answers_privately_with_the_thread_as_context(bot, message, thread_ts):
    bot.slack.add_thread(CHANNEL, THREAD)
    bot.claude.reply("Latency spiked; the team will pin the cache version.")
    url = bot.slack.response_url("summary")

    await deliver(
        bot, bot.slack.message_shortcut_envelope("summarize_thread", message=message, response_url=url)
    )

    note, answer = await private_posts(bot, 2)
    assert note.params["_name"] == "summary"
    assert note.params["text"] == WORKING_NOTE
    assert note.params["response_type"] == "ephemeral"
    assert answer.params["_name"] == "summary"
    assert answer.params["response_type"] == "ephemeral"
    assert answer.params["text"].endswith("Latency spiked; the team will pin the cache version.")
    reads = bot.slack.calls_to("conversations.replies")
    assert {(call.params["channel"], call.params["ts"]) for call in reads} == {(CHANNEL, thread_ts)}
    assert bot.claude.requests[0].body["messages"] == [
        {"role": "user", "content": "Bob Builder: Checkout latency spiked at 14:02."},
        {"role": "assistant", "content": "A cache node restarted."},
        {"role": "user", "content": f"Alice: We should pin the cache version.\n\nAlice: {SUMMARY_REQUEST}"},
    ]
    assert_nothing_public(bot)


async def test_summarize_a_message_outside_any_thread_reads_that_message(bot):
    bot.slack.add_history(CHANNEL, [said(BOB, "Standup moves to 10:00 from Monday.", "110.000001")])
    message = said(BOB, "Standup moves to 10:00 from Monday.", "110.000001")

    await deliver(bot, bot.slack.message_shortcut_envelope("summarize_thread", message=message))

    await private_posts(bot, 2)
    reads = bot.slack.calls_to("conversations.replies")
    assert {call.params["ts"] for call in reads} == {"110.000001"}
    assert bot.claude.requests[0].body["messages"] == [
        {
            "role": "user",
            "content": f"Bob Builder: Standup moves to 10:00 from Monday.\n\nAlice: {SUMMARY_REQUEST}",
        }
    ]


async def test_ask_about_thread_opens_a_modal_that_carries_ids_only(bot):
    bot.slack.add_thread(CHANNEL, THREAD)
    url = bot.slack.response_url("ask")
    envelope = bot.slack.message_shortcut_envelope(
        "ask_about_thread", message={**THREAD[2], "thread_ts": ROOT}, response_url=url
    )

    await deliver(bot, envelope)

    [opened] = await bot.slack.wait_for("views.open")
    assert opened.params["trigger_id"] == envelope["payload"]["trigger_id"]
    [view] = bot.slack.views.values()
    assert view["callback_id"] == "ask_about_thread"
    [field] = [block for block in view["blocks"] if block["type"] == "input"]
    assert field["block_id"] == "question"
    assert field["element"]["type"] == "plain_text_input"
    assert field["element"]["action_id"] == "text"
    assert json.loads(view["private_metadata"]) == {
        "team_id": "T0TEAM",
        "user_id": ALICE,
        "channel_id": CHANNEL,
        "thread_ts": ROOT,
        "response_url": url,
    }
    assert "pin the cache" not in json.dumps(view)
    assert not bot.slack.calls_to("conversations.replies")
    assert not bot.claude.requests
    assert not bot.slack.calls_to("response_url")


async def test_question_from_the_modal_is_answered_privately_with_the_thread_as_context(bot):
    bot.slack.add_thread(CHANNEL, THREAD)
    bot.claude.reply("Bob, who reported it.")
    url = bot.slack.response_url("ask")
    shortcut = bot.slack.message_shortcut_envelope(
        "ask_about_thread", message={**THREAD[2], "thread_ts": ROOT}, response_url=url
    )
    await deliver(bot, shortcut)
    await bot.slack.wait_for("views.open")

    ack = await deliver(
        bot, bot.slack.view_submission_envelope("ask_about_thread", values=question("Who owns the fix?"))
    )

    assert "response_action" not in ack.get("payload", {})
    note, answer = await private_posts(bot, 2)
    assert note.params["text"] == WORKING_NOTE
    assert (answer.params["_name"], answer.params["response_type"]) == ("ask", "ephemeral")
    assert answer.params["text"].startswith("> Who owns the fix?")  # the question, quoted
    assert answer.params["text"].endswith("Bob, who reported it.")
    messages = bot.claude.requests[0].body["messages"]
    assert messages[0] == {"role": "user", "content": "Bob Builder: Checkout latency spiked at 14:02."}
    assert messages[-1]["content"].endswith(
        "Alice: We should pin the cache version.\n\nAlice: Who owns the fix?"
    )
    assert_nothing_public(bot)


async def test_empty_question_is_refused_in_the_modal_without_asking_claude(bot):
    bot.slack.add_thread(CHANNEL, THREAD)
    shortcut = bot.slack.message_shortcut_envelope(
        "ask_about_thread", message={**THREAD[2], "thread_ts": ROOT}
    )
    await deliver(bot, shortcut)
    await bot.slack.wait_for("views.open")

    refused = await deliver(
        bot, bot.slack.view_submission_envelope("ask_about_thread", values=question("  "))
    )

    assert refused["payload"]["response_action"] == "errors"
    assert set(refused["payload"]["errors"]) == {"question"}
    # A real question afterwards is the only one Claude sees.
    await deliver(bot, bot.slack.view_submission_envelope("ask_about_thread", values=question("Who?")))
    await private_posts(bot, 2)
    [request] = bot.claude.requests
    assert request.body["messages"][-1]["content"].endswith("Alice: Who?")


async def test_thread_the_bot_cannot_read_gets_the_error_privately(bot):
    bot.slack.add_thread(CHANNEL, THREAD)
    bot.slack.fail("conversations.replies", error="not_in_channel")

    await deliver(
        bot,
        bot.slack.message_shortcut_envelope("summarize_thread", message={**THREAD[2], "thread_ts": ROOT}),
    )

    posts = await private_posts(bot, 2)
    # The failed read may overtake the working note: only what arrives is certain, not its order.
    assert sorted(post.params["text"] for post in posts) == sorted([WORKING_NOTE, f":warning: {CANT_READ}"])
    assert {post.params["response_type"] for post in posts} == {"ephemeral"}
    assert not bot.claude.requests
    assert_nothing_public(bot)


async def test_a_modal_submitted_by_someone_other_than_the_person_it_was_opened_for_is_ignored(bot):
    bot.slack.add_thread(CHANNEL, THREAD)
    url = bot.slack.response_url("alice")
    shortcut = bot.slack.message_shortcut_envelope(
        "ask_about_thread", message={**THREAD[2], "thread_ts": ROOT}, response_url=url
    )
    await deliver(bot, shortcut)
    await bot.slack.wait_for("views.open")

    # Bob submits the view opened for Alice (its private_metadata names Alice and her response_url).
    await deliver(
        bot, bot.slack.view_submission_envelope("ask_about_thread", values=question("Bob's?"), user_id=BOB)
    )
    await deliver(bot, bot.slack.view_submission_envelope("ask_about_thread", values=question("Alice's?")))

    await private_posts(bot, 2)
    await bot.pipeline.wait_idle()
    [request] = bot.claude.requests
    assert request.body["messages"][-1]["content"].endswith("Alice: Alice's?")
    assert len(bot.slack.calls_to("response_url")) == 2  # Alice's working note and answer, nothing else


def long_answer(paragraphs: int) -> str:
    return "\n\n".join(f"Paragraph {n}. " + "lorem ipsum " * 80 for n in range(paragraphs))


async def test_a_long_shortcut_answer_uses_no_more_posts_than_a_response_url_takes(bot):
    """Five posts per response URL, and the working note took one: the answer's end is not lost."""
    bot.slack.add_thread(CHANNEL, THREAD)
    bot.claude.reply(long_answer(17))  # five messages of 3,900 characters
    url = bot.slack.response_url("summary")
    envelope = bot.slack.message_shortcut_envelope("summarize_thread", message=THREAD[0], response_url=url)
    await bot.slack.send_envelope(envelope)
    await bot.slack.wait_for_ack(envelope["envelope_id"])
    await bot.slack.wait_for("response_url", count=2)
    await bot.pipeline.wait_idle()

    posts = [c for c in bot.slack.calls_to("response_url") if c.params["_name"] == "summary"]
    assert len(posts) <= 5, f"{len(posts)} posts to one response_url"
    assert "Paragraph 16." in "\n".join(p.params["text"] for p in posts)


async def test_a_question_sent_after_the_asker_left_the_private_channel_does_not_read_it(bot):
    """The modal stays open, and its response URL works for 30 minutes: the thread is read when the
    question comes, so only while the asker may still read it. Removed from a private channel meanwhile,
    they are told so privately, and nothing said there (before or since) is read or sent to Claude."""
    hush = "C0HUSH"
    bot.slack.add_channel(hush, is_private=True)
    bot.slack.set_members(hush, [BOB, ALICE])
    bot.slack.add_thread(hush, THREAD)
    url = bot.slack.response_url("ask")
    shortcut = bot.slack.message_shortcut_envelope(
        "ask_about_thread", message=THREAD[0], channel_id=hush, response_url=url
    )
    await deliver(bot, shortcut)
    await bot.slack.wait_for("views.open")

    bot.slack.set_members(hush, [BOB])  # Alice is removed, and the thread goes on without her
    bot.slack.add_thread(hush, [*THREAD, said(BOB, "Alice's team is being reorganised.", "100.000004")])
    await deliver(bot, bot.slack.view_submission_envelope("ask_about_thread", values=question("News?")))

    note, told = await private_posts(bot, 2)
    await bot.pipeline.wait_idle()
    assert note.params["text"] == WORKING_NOTE
    assert told.params["text"] == f":warning: {NotAMember.sentence}"
    assert not bot.slack.calls_to("conversations.replies")
    assert not bot.claude.requests
    assert_nothing_public(bot)

    bot.slack.set_members(hush, [BOB, ALICE])  # back in: her next use of a shortcut there is answered
    summarize = bot.slack.message_shortcut_envelope("summarize_thread", message=THREAD[0], channel_id=hush)
    await deliver(bot, summarize)
    await private_posts(bot, 4)
    await bot.pipeline.wait_idle()
    assert "Alice's team is being reorganised." in bot.claude.requests[0].body["messages"][-1]["content"]
