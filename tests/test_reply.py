"""Answers arrive readable in Slack: mrkdwn, and long ones split without losing text or breaking code."""

from __future__ import annotations

from bot.pipeline.mrkdwn import split_message, to_mrkdwn
from bot.pipeline.reply import MESSAGE_LIMIT
from tests.conftest import mention


async def test_markdown_answer_is_posted_as_mrkdwn(bot):
    bot.claude.reply("## Steps\n\n1. Run **make**\n2. Read [the docs](https://example.com)\n\nUse `a < b`.")
    await bot.send_event(mention("<@U0BOT> how?", ts="1.000001"))

    [post] = await bot.slack.wait_for("chat.postMessage")
    assert post.params["text"] == (
        "*Steps*\n\n1. Run *make*\n2. Read <https://example.com|the docs>\n\nUse `a &lt; b`."
    )
    assert post.params["unfurl_links"] in (False, "false", "0", 0)


async def test_long_answer_with_code_is_split_into_messages_in_order_without_losing_text(bot):
    paragraphs = [f"Paragraph {n}: " + "word " * 150 for n in range(12)]
    code = "```python\n" + "\n".join(f"print({n})  # line {n}" for n in range(300)) + "\n```"
    answer = "\n\n".join(paragraphs[:6] + [code] + paragraphs[6:])
    bot.claude.reply(answer)
    await bot.send_event(mention("<@U0BOT> long please", ts="2.000001"))

    pieces = len(split_message(to_mrkdwn(answer), MESSAGE_LIMIT))
    posts = await bot.slack.wait_for("chat.postMessage", count=pieces)
    texts = [p.params["text"] for p in posts]
    assert pieces >= 3 and len(texts) == pieces
    assert {p.params["thread_ts"] for p in posts} == {"2.000001"}
    assert all(len(text) <= 3_900 for text in texts)
    assert all(text.count("```") % 2 == 0 for text in texts)  # every piece opens and closes its code
    joined = "\n".join(texts)
    for n in range(12):
        assert joined.count(f"Paragraph {n}:") == 1
    for n in range(300):
        assert joined.count(f"print({n})  # line {n}") == 1
    assert joined.index("Paragraph 5:") < joined.index("print(0)") < joined.index("Paragraph 6:")


async def test_answer_cut_at_max_tokens_says_so(bot):
    bot.claude.reply("The first half", stop_reason="max_tokens")
    await bot.send_event(mention("<@U0BOT> go on", ts="3.000001"))

    [post] = await bot.slack.wait_for("chat.postMessage")
    assert post.params["text"] == "The first half\n\n_(The answer was cut off at its length limit.)_"


async def test_mentions_claude_repeats_do_not_ping(bot):
    bot.claude.reply("Ask <@U0BOB> or tell <!channel>.")
    await bot.send_event(mention("<@U0BOT> who?", ts="4.000001"))

    [post] = await bot.slack.wait_for("chat.postMessage")
    assert "<@" not in post.params["text"] and "<!" not in post.params["text"]
