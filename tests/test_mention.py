"""Mentions in channels and threads, end to end over Socket Mode."""

from __future__ import annotations

from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, bot_said, mention, said


async def test_mention_in_thread_answers_in_that_thread_with_the_thread_as_context(bot):
    bot.slack.add_thread(
        CHANNEL,
        [
            said(BOB, "Checkout latency spiked at 14:02.", "100.000001"),
            bot_said("A cache node restarted.", "100.000002"),
            said(ALICE, "Was it the same node as last week?", "100.000003"),
            said(BOB, "Yes, node 7.", "100.000004"),
            said(ALICE, f"<@{BOT_USER}> what should we do about node 7?", "100.000005"),
        ],
    )
    bot.claude.reply("Replace node 7.")

    await bot.send_event(
        mention(f"<@{BOT_USER}> what should we do about node 7?", ts="100.000005", thread_ts="100.000001")
    )

    await bot.finished()
    assert bot.replies(CHANNEL, "100.000001")[-1] == "Replace node 7."
    [stream] = bot.slack.calls_to("chat.startStream")
    assert stream.params["recipient_user_id"] == ALICE
    assert stream.params["recipient_team_id"] == "T0TEAM"
    [request] = bot.claude.requests
    assert request.body["messages"] == [
        {"role": "user", "content": "Bob Builder: Checkout latency spiked at 14:02."},
        {"role": "assistant", "content": "A cache node restarted."},
        {
            "role": "user",
            "content": "Alice: Was it the same node as last week?\n\n"
            "Bob Builder: Yes, node 7.\n\n"
            "Alice: what should we do about node 7?",
        },
    ]


async def test_thread_is_read_across_every_page(bot):
    bot.slack.page_size = 2
    bot.slack.add_thread(CHANNEL, [said(BOB, f"message {n}", f"200.00000{n}") for n in range(1, 8)])
    await bot.send_event(mention("<@U0BOT> sum up", ts="200.000008", thread_ts="200.000001"))

    await bot.finished()
    assert len(bot.slack.calls_to("conversations.replies")) >= 4
    last_turn = bot.claude.requests[0].body["messages"][-1]["content"]
    for n in range(1, 8):
        assert f"message {n}" in last_turn


async def test_thread_context_stops_at_the_mention(bot):
    bot.slack.add_thread(
        CHANNEL,
        [
            said(BOB, "before", "300.000001"),
            said(ALICE, "<@U0BOT> question", "300.000002"),
            said(BOB, "after the mention", "300.000003"),
        ],
    )
    await bot.send_event(mention("<@U0BOT> question", ts="300.000002", thread_ts="300.000001"))

    await bot.finished()
    [request] = bot.claude.requests
    assert "after the mention" not in str(request.body["messages"])
    assert request.body["messages"][-1]["content"].endswith("Alice: question")


async def test_top_level_mention_answers_in_a_new_thread_without_reading_history(bot):
    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="400.000001"))

    await bot.finished()
    assert bot.replies(CHANNEL, "400.000001") == ["Hello from fake Claude."]
    assert not bot.slack.calls_to("conversations.replies")
    assert not bot.slack.calls_to("conversations.history")
    assert bot.claude.requests[0].body["messages"] == [{"role": "user", "content": "Alice: what is a mutex?"}]


async def test_bare_mention_in_a_thread_asks_about_the_thread(bot):
    bot.slack.add_thread(
        CHANNEL, [said(BOB, "Is the deploy blocked?", "500.000001"), said(ALICE, "<@U0BOT>", "500.000002")]
    )
    await bot.send_event(mention("<@U0BOT>", ts="500.000002", thread_ts="500.000001"))

    await bot.finished()
    [message] = bot.claude.requests[0].body["messages"]
    assert message["content"].startswith("Bob Builder: Is the deploy blocked?")
    assert message["content"].endswith("Alice: (mentioned you with no further text)")


async def test_mentioned_people_are_named_for_claude(bot):
    await bot.send_event(mention(f"<@{BOT_USER}> what did <@{BOB}> decide?", ts="600.000001"))

    await bot.finished()
    assert bot.claude.requests[0].body["messages"][0]["content"] == "Alice: what did @Bob Builder decide?"


async def test_unknown_user_in_the_thread_keeps_their_id_and_the_answer_still_arrives(bot):
    bot.slack.add_thread(
        CHANNEL, [said("U0GHOST", "hello", "700.000000"), said(ALICE, "<@U0BOT> who?", "700.000001")]
    )
    await bot.send_event(mention("<@U0BOT> who?", ts="700.000001", thread_ts="700.000000"))

    await bot.finished()
    assert bot.claude.requests[0].body["messages"][0]["content"] == "U0GHOST: hello\n\nAlice: who?"


async def test_a_mention_also_sent_to_the_channel_is_answered_in_its_thread(bot):
    """A reply posted with "Also send to channel" comes as an app_mention with subtype thread_broadcast
    (and the thread's root beside it): a person asked, so it is answered like any mention in a thread."""
    root = said(BOB, "Checkout latency spiked at 14:02.", "110.000001")
    question = f"<@{BOT_USER}> what should we do?"
    bot.slack.add_thread(CHANNEL, [root, said(ALICE, question, "110.000002")])
    event = mention(question, ts="110.000002", thread_ts="110.000001")

    await bot.send_event({**event, "subtype": "thread_broadcast", "root": root})

    await bot.finished()
    assert bot.replies(CHANNEL, "110.000001") == ["Hello from fake Claude."]
    assert bot.claude.requests[0].body["messages"][-1]["content"].endswith("Alice: what should we do?")
