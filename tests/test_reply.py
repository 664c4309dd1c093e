"""Answers arrive readable in Slack: mrkdwn when posted, Markdown when streamed, long ones split without
losing text or breaking code, nothing Claude repeats or writes pings anyone, and no link hides its target."""

from __future__ import annotations

import re
import time

import pytest

from bot.pipeline.defuse import JOINER
from bot.pipeline.reply import MESSAGE_LIMIT
from tests.conftest import CHANNEL, DM, PLAIN_BROADCAST, direct_message, mention

EXPECTED_MRKDWN = "*Steps*\n\n1. Run *make*\n2. Read <https://example.com|the docs>\n\nUse `a &lt; b`."
MARKDOWN = "## Steps\n\n1. Run **make**\n2. Read [the docs](https://example.com)\n\nUse `a < b`."


def now_ts() -> str:
    return f"{time.time():.6f}"


async def test_posted_answer_is_mrkdwn(bot):
    bot.claude.reply(MARKDOWN)
    await bot.send_event(direct_message("how?", ts=now_ts()))

    await bot.finished()
    assert bot.slack.top_level_texts(DM) == [EXPECTED_MRKDWN]
    assert {call.params["unfurl_links"] for call in bot.slack.calls_to("chat.postMessage")} == {False}


async def test_streamed_answer_is_markdown_for_slack_to_render(bot):
    bot.claude.reply(MARKDOWN)
    await bot.send_event(mention("<@U0BOT> how?", ts="1.000001"))

    await bot.finished()
    assert bot.replies(CHANNEL, "1.000001") == [MARKDOWN]


async def test_long_posted_answer_is_split_in_order_without_losing_text_or_breaking_code(bot):
    paragraphs = [f"Paragraph {n}: " + "word " * 150 for n in range(12)]
    code = "```python\n" + "\n".join(f"print({n})  # line {n}" for n in range(300)) + "\n```"
    bot.claude.chunk_chars = 400
    bot.claude.reply("\n\n".join(paragraphs[:6] + [code] + paragraphs[6:]))
    await bot.send_event(direct_message("long please", ts=now_ts()))

    await bot.finished()
    texts = bot.slack.top_level_texts(DM)
    assert len(texts) >= 3
    assert all(len(text) <= MESSAGE_LIMIT for text in texts)
    assert all(text.count("```") % 2 == 0 for text in texts)  # every piece opens and closes its code
    joined = "\n".join(texts)
    for n in range(12):
        assert joined.count(f"Paragraph {n}:") == 1
    for n in range(300):
        assert joined.count(f"print({n})  # line {n}") == 1
    assert joined.index("Paragraph 5:") < joined.index("print(0)") < joined.index("Paragraph 6:")


@pytest.mark.parametrize("stop_reason", ["max_tokens", "model_context_window_exceeded"])
async def test_answer_cut_at_a_length_limit_says_so(bot, stop_reason):
    bot.claude.reply("The first half", stop_reason=stop_reason)
    await bot.send_event(mention("<@U0BOT> go on", ts="3.000001"))

    await bot.finished()
    assert bot.replies(CHANNEL, "3.000001") == [
        "The first half\n\n_(The answer was cut off at its length limit.)_"
    ]


async def test_mentions_claude_repeats_do_not_ping_when_posted(bot):
    bot.claude.reply("Ask <@U0BOB> or tell <!channel> in <#C0OTHER>.")
    await bot.send_event(direct_message("who?", ts=now_ts()))

    await bot.finished()
    [text] = bot.slack.top_level_texts(DM)
    assert "<@" not in text and "<!" not in text and "<#" not in text


async def test_mentions_claude_repeats_do_not_ping_when_streamed(bot):
    bot.claude.chunk_chars = 1  # a mention split across pieces must be defused too
    bot.claude.reply("Ask <@U0BOB> or tell <!channel> in <#C0OTHER>.")
    await bot.send_event(mention("<@U0BOT> who?", ts="4.000001"))

    await bot.finished()
    [text] = bot.replies(CHANNEL, "4.000001")
    assert "<@" not in text and "<!" not in text and "<#" not in text
    assert text.replace("\u2060", "") == "Ask <@U0BOB> or tell <!channel> in <#C0OTHER>."


# Plain broadcasts and a user-group ping, as Claude might write them back.
BROADCASTS = "Tell @here, @channel and @Everyone, *@here* or _@channel_, or page <!subteam^S0ONCALL|@oncall>."
DISGUISED = "Sign in at [https://good.example/login](https://evil.example/login) today."


def assert_notifies_no_one(text: str) -> None:
    assert not PLAIN_BROADCAST.search(text), text
    assert not re.search(r"<[@!#]", text), text


async def test_broadcasts_claude_writes_do_not_notify_when_posted(bot):
    bot.claude.reply(BROADCASTS)
    await bot.send_event(direct_message("who?", ts=now_ts()))

    await bot.finished()
    [text] = bot.slack.top_level_texts(DM)
    assert_notifies_no_one(text)
    assert (
        text.replace(JOINER, "") == "Tell @here, @channel and @Everyone, _@here_ or _@channel_, "
        "or page &lt;!subteam^S0ONCALL|@oncall&gt;."
    )


async def test_broadcasts_claude_writes_do_not_notify_when_streamed(bot):
    bot.claude.reply(BROADCASTS)
    await bot.send_event(mention("<@U0BOT> who?", ts="5.000001"))

    await bot.finished()
    [text] = bot.replies(CHANNEL, "5.000001")
    assert_notifies_no_one(text)
    assert text.replace(JOINER, "") == BROADCASTS


async def test_broadcasts_claude_writes_do_not_notify_in_private_answers(bot):
    bot.claude.reply(BROADCASTS)
    await bot.send_command("who should I tell?")

    [response] = await bot.slack.wait_for("response_url")
    assert_notifies_no_one(response.params["text"])
    assert response.params["text"].endswith(
        f"Tell @{JOINER}here, @{JOINER}channel and @{JOINER}Everyone, _@{JOINER}here_ or _@{JOINER}channel_, "
        "or page "
        "&lt;!subteam^S0ONCALL|@oncall&gt;."
    )


async def test_link_disguised_as_another_address_shows_its_real_target_when_posted(bot):
    bot.claude.reply(DISGUISED)
    await bot.send_event(direct_message("where?", ts=now_ts()))

    await bot.finished()
    assert bot.slack.top_level_texts(DM) == ["Sign in at <https://evil.example/login> today."]


async def test_link_disguised_as_another_address_shows_its_real_target_when_streamed(bot):
    bot.claude.reply(DISGUISED)
    await bot.send_event(mention("<@U0BOT> where?", ts="6.000001"))

    await bot.finished()
    assert bot.replies(CHANNEL, "6.000001") == [
        "Sign in at [https://evil.example/login](https://evil.example/login) today."
    ]


async def test_link_disguised_as_another_address_shows_its_real_target_in_private_answers(bot):
    bot.claude.reply(DISGUISED)
    await bot.send_command("where do I sign in?")

    [response] = await bot.slack.wait_for("response_url")
    assert response.params["text"].endswith("Sign in at <https://evil.example/login> today.")


@pytest.mark.parametrize("where", ["dm", "thread"])
async def test_an_answer_of_white_space_alone_is_said_to_be_empty(bot, where):
    """Not a message of nothing (a DM left unanswered, or a blank one with feedback buttons)."""
    bot.claude.reply("  \n\n  ")
    if where == "dm":
        await bot.send_event(direct_message("hi", ts="5.000001"))
    else:
        await bot.send_event(mention("<@U0BOT> hi", ts="5.000001"))
    await bot.finished()
    await bot.pipeline.wait_idle()

    shown = bot.slack.top_level_texts(DM) if where == "dm" else bot.replies(CHANNEL, "5.000001")
    assert [text.strip() for text in shown] == ["_(Claude returned an empty answer.)_"]
    assert "feedback_buttons" not in str([call.params.get("blocks") for call in bot.slack.calls])


async def test_a_long_table_posted_over_several_messages_is_a_table_in_each(bot):
    rows = "\n".join(f"| row {n} | value {n} with some words |" for n in range(200))
    bot.claude.reply("Here:\n\n| Name | Value |\n| --- | --- |\n" + rows + "\n\nDone.")
    await bot.send_event(direct_message("table please", ts=now_ts()))

    await bot.finished()
    texts = bot.slack.top_level_texts(DM)
    assert len(texts) >= 2
    for text in texts:
        assert "| row" not in re.sub(r"```.*?```", "", text, flags=re.DOTALL), text[:200]  # no raw rows
    joined = "\n".join(texts)
    assert all(joined.count(f"row {n} ") == 1 for n in range(200))


async def test_a_numbered_list_continued_in_the_next_message_keeps_counting(bot):
    items = "\n".join(f"1. Step {n}: " + "do the thing carefully " * 4 for n in range(1, 61))  # all "1."
    bot.claude.reply(items)
    await bot.send_event(direct_message("steps?", ts=now_ts()))

    await bot.finished()
    texts = bot.slack.top_level_texts(DM)
    assert len(texts) >= 2
    numbers = [int(n) for text in texts for n in re.findall(r"(?m)^(\d+)\. Step", text)]
    assert numbers == list(range(1, 61))
