"""Answers stream into Slack as Claude writes them: native streaming where Slack allows it, post and
chat.update where it does not, rolling over long answers without losing text or breaking code; a ping
or a disguised link cut between two pieces is defused as if it came whole."""

from __future__ import annotations

import asyncio
import re

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.defuse import JOINER, defuse_markdown, split_unfinished
from bot.pipeline.mrkdwn import escape_meant_as_text, split_unfinished_word, to_mrkdwn
from bot.pipeline.reply import STREAM_LIMIT, UPDATE_INTERVAL, UpdatedMessages
from bot.pipeline.rollover import roll_over
from tests.conftest import CHANNEL, DM, PLAIN_BROADCAST, direct_message, mention
from tests.fakes.claude_api import text_block

ANSWER = "Streaming keeps people reading while Claude is still writing the rest of the answer."


async def test_first_words_are_sent_as_soon_as_claude_writes_them(bot):
    bot.claude.chunk_chars = 30
    bot.claude.chunk_delay = 0.3  # the rest of the answer is still far away when the first words arrive
    bot.claude.reply(ANSWER)
    await bot.send_event(mention("<@U0BOT> stream please", ts="1.000001"))

    [start] = await bot.slack.wait_for("chat.startStream")
    assert start.params["markdown_text"] == ANSWER[:30]
    assert start.params["thread_ts"] == "1.000001"
    await bot.finished()
    assert bot.replies(CHANNEL, "1.000001") == [ANSWER]
    assert len(bot.slack.calls_to("chat.stopStream")) == 1


async def test_many_small_pieces_do_not_make_one_slack_call_each(bot):
    bot.claude.chunk_chars = 2
    bot.claude.reply("word " * 200)  # 500 pieces, arriving at once
    await bot.send_event(mention("<@U0BOT> go", ts="2.000001"))

    await bot.finished()
    streaming_calls = sum(len(bot.slack.calls_to(m)) for m in ("chat.startStream", "chat.appendStream"))
    assert streaming_calls <= 3
    assert bot.replies(CHANNEL, "2.000001") == ["word " * 200]


async def test_refused_native_streaming_falls_back_to_posting_and_updating(bot):
    bot.slack.refuse_streaming("not_allowed")
    bot.claude.chunk_chars = 10
    bot.claude.reply("**Bold** start, then the rest of a longer answer.")
    await bot.send_event(mention("<@U0BOT> go", ts="3.000001"))

    await bot.finished()
    [post] = bot.slack.calls_to("chat.postMessage")
    assert post.params["thread_ts"] == "3.000001"
    assert bot.slack.calls_to("chat.update")
    assert bot.replies(CHANNEL, "3.000001") == ["*Bold* start, then the rest of a longer answer."]


async def test_stream_that_slack_stops_accepting_carries_on_with_chat_update(bot):
    bot.slack.stream_lifetime = 0.2  # Slack stops taking appends some minutes after the start
    bot.claude.chunk_chars = 20
    bot.claude.chunk_delay = 0.15
    bot.claude.reply(ANSWER)
    await bot.send_event(mention("<@U0BOT> go", ts="4.000001"))

    await bot.finished()
    assert bot.slack.calls_to("chat.update")
    assert bot.replies(CHANNEL, "4.000001") == [to_mrkdwn(ANSWER)]  # one message, whole, not duplicated


async def test_long_streamed_answer_rolls_over_without_losing_or_repeating_text_or_breaking_code(bot):
    prose = [f"Paragraph {n}. " + "lorem ipsum " * 60 for n in range(30)]
    code = "```python\n" + "\n".join(f"value_{n} = {n} * 2" for n in range(600)) + "\n```"
    answer = "\n\n".join(prose[:12] + [code] + prose[12:])
    bot.claude.chunk_chars = 500
    bot.claude.reply(answer)
    await bot.send_event(mention("<@U0BOT> everything", ts="5.000001"))

    await bot.finished()
    texts = bot.replies(CHANNEL, "5.000001")
    assert len(texts) >= 4
    assert all(len(text) <= STREAM_LIMIT for text in texts)
    assert all(text.count("```") % 2 == 0 for text in texts)  # each message opens and closes its code
    joined = "\n".join(texts)
    for n in range(30):
        assert joined.count(f"Paragraph {n}.") == 1
    for n in range(600):
        assert joined.count(f"value_{n} = {n} * 2") == 1
    words = lambda text: text.replace("```python", "").replace("```", "").split()  # noqa: E731
    assert words(joined) == words(answer)


async def test_reader_pressing_stop_ends_the_claude_stream_too(bot):
    full = "a long answer nobody will read " * 40
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.05
    bot.claude.reply(full)
    await bot.send_event(mention("<@U0BOT> go", ts="6.000001"))

    [append, *_] = await bot.slack.wait_for("chat.appendStream")
    bot.slack.stop_by_user(append.params["ts"])

    await bot.claude.wait_for_abandoned()  # the connection was closed: no more tokens are generated
    await bot.finished()
    [text] = bot.replies(CHANNEL, "6.000001")
    assert 0 < len(text) < len(full)
    assert not bot.slack.calls_to("chat.postMessage")  # no error note: the reader chose to stop


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ("@here the deploy is done.", f"@{JOINER}here the deploy is done."),
        ("<!subteam^S0ONCALL> is paged.", f"<{JOINER}!subteam^S0ONCALL> is paged."),
        (
            "[https://good.example](https://evil.example) is the page.",
            "[https://evil.example](https://evil.example) is the page.",
        ),
    ],
)
async def test_a_ping_or_link_cut_between_streamed_pieces_is_defused_whole(bot, answer, shown):
    bot.claude.chunk_chars = 1  # the first piece goes out alone, at once: "@", "<" or "["
    bot.claude.reply(answer)
    await bot.send_event(mention("<@U0BOT> go", ts="7.000001"))

    await bot.finished()
    assert bot.replies(CHANNEL, "7.000001") == [shown]


STREAMED_ANSWERS = [
    "Heads up @here: see [https://good.example/login](https://evil.example/login) and @channel.",
    'Or [**www.good.example**](<https://evil.example/a b> "title") and ![good.example](https://evil.example/i.png)',
    "Nested [[https://good.example]](https://evil.example/(x)) and a reference [https://good.example][1].\n\n"
    "[1]: https://evil.example\n\n"
    "Fine: [the docs](https://x.dev) and [x.dev/a](https://x.dev/a#b), <!everyone>.",
    "Code `xs[0]` and `f(a)[1]`, ops@channel.example, https://social.example/@here and @Everyone!",
]


@pytest.mark.parametrize("answer", STREAMED_ANSWERS)
def test_wherever_a_stream_is_cut_pings_and_disguised_links_are_defused_as_if_it_came_whole(answer):
    whole = defuse_markdown(answer)
    for cut in range(len(answer) + 1):
        ready, held = split_unfinished(answer[:cut])
        streamed = defuse_markdown(ready) + defuse_markdown(held + answer[cut:])
        assert streamed.replace(JOINER, "") == whole.replace(JOINER, ""), (cut, streamed)
        assert not PLAIN_BROADCAST.search(streamed), (cut, streamed)
        assert not re.search(r"<[@!#]", streamed), (cut, streamed)


def test_streamed_markdown_shows_real_targets_and_keeps_honest_labels():
    assert defuse_markdown("Mail [support@good.example](mailto:attacker@evil.example).") == (
        "Mail [mailto:attacker@evil.example](mailto:attacker@evil.example)."
    )
    assert defuse_markdown("Mail [support@good.example](mailto:support@good.example).") == (
        "Mail [support@good.example](mailto:support@good.example)."
    )
    out = defuse_markdown(STREAMED_ANSWERS[2])
    assert "[https://evil.example/(x)](https://evil.example/(x))" in out
    assert f"[{JOINER}https://good.example]{JOINER}[1]" in out
    assert "\n[1]: https://evil.example" in out
    assert "[the docs](https://x.dev) and [x.dev/a](https://x.dev/a#b)" in out
    assert defuse_markdown(STREAMED_ANSWERS[1]) == (
        'Or [https://evil.example/a b](<https://evil.example/a b> "title") and '
        "![https://evil.example/i.png](https://evil.example/i.png)"
    )


ADDRESSES = (
    " See <https://x.dev/pkg/__init__.py>, https://x.dev/a/__main__.py, [it](https://x.dev/scale/2*3)"
    " and www.x.dev/__init__ as they are."
)
MEANT_AS_TEXT = (
    "Define __init__ and __repr__; 2*3*4 is 24 and x*y*z too, but `__init__ 2*3` is code,"
    "\n\n```\n2*3 __init__\n```\n\nand **bold** or __bold__ stay." + ADDRESSES
)
SHOWN_AS_TEXT = (
    r"Define \_\_init\_\_ and \_\_repr\_\_; 2\*3\*4 is 24 and x\*y\*z too, but `__init__ 2*3` is code,"
    "\n\n```\n2*3 __init__\n```\n\nand **bold** or __bold__ stay."
    + ADDRESSES  # a backslash would change where a link goes
)


async def test_streamed_markdown_escapes_what_slack_would_format_that_claude_meant_as_text(bot):
    bot.claude.chunk_chars = 1  # a name or a product cut between pieces is escaped as if it came whole
    bot.claude.reply(MEANT_AS_TEXT)
    await bot.send_event(mention("<@U0BOT> go", ts="8.000001"))

    await bot.finished()
    assert bot.replies(CHANNEL, "8.000001") == [SHOWN_AS_TEXT]


def test_wherever_a_stream_is_cut_special_names_and_products_are_escaped_as_if_it_came_whole():
    for cut in range(len(MEANT_AS_TEXT) + 1):
        ready, held = split_unfinished_word(MEANT_AS_TEXT[:cut])
        streamed = escape_meant_as_text("", ready) + escape_meant_as_text(ready, held + MEANT_AS_TEXT[cut:])
        assert streamed == SHOWN_AS_TEXT, (cut, streamed)


async def test_a_stream_refused_at_a_roll_over_loses_no_paragraph_break(bot):
    """The answer is cut into messages at a paragraph; refused there, the fallback still starts the
    next message where the stream would have, rather than glue the two halves together."""
    bot.slack.refuse_streaming("not_allowed")
    answer = "\n\n".join(f"Paragraph {n}. " + "lorem ipsum " * 60 for n in range(20))
    bot.claude.chunk_chars = len(answer)
    bot.claude.reply(answer)

    await bot.send_event(mention("<@U0BOT> everything", ts="5.000001"))
    await bot.finished()

    assert "\n".join(bot.replies(CHANNEL, "5.000001")).split() == answer.split()


async def test_a_stream_refused_midway_is_not_left_open_after_falling_back_to_chat_update(bot):
    bot.claude.chunk_chars = 10
    bot.claude.chunk_delay = 0.1
    bot.claude.reply("word " * 40)
    bot.slack.fail("chat.appendStream", error="ratelimited", status=429, retry_after=0, times=3)

    await bot.send_event(mention("<@U0BOT> go", ts="8.000001"))
    await bot.finished()

    assert bot.slack.calls_to("chat.update")
    [message] = bot.slack.bot_messages(CHANNEL, "8.000001")
    assert not bot.slack.message(CHANNEL, message["ts"])["streaming"]
    assert bot.replies(CHANNEL, "8.000001") == ["word " * 39 + "word"]


async def test_a_stream_that_falls_back_to_chat_update_edits_no_faster_than_chat_update_allows(bot):
    """chat.update is rate-limited more tightly than appending to a stream: the fallback keeps its pace."""
    bot.slack.refuse_streaming("not_allowed")
    bot.claude.chunk_chars = 10
    bot.claude.chunk_delay = 0.1
    bot.claude.reply("word " * 80)
    started = asyncio.get_running_loop().time()

    await bot.send_event(mention("<@U0BOT> go", ts="7.000001"))
    await bot.finished()

    elapsed = asyncio.get_running_loop().time() - started
    updates = bot.slack.calls_to("chat.update")
    assert len(updates) <= elapsed / UPDATE_INTERVAL + 1, (len(updates), round(elapsed, 2))


@pytest.mark.parametrize("where", ["thread", "direct message"])
async def test_words_written_before_claude_pauses_are_shown_during_the_pause(bot, where):
    """Claude writes a sentence, then searches the web or thinks for a while: the sentence is shown within
    an interval, not held until the next words come."""
    lead = "Let me look that up on the web before I answer this one."
    bot.claude.chunk_chars = 20  # the first piece goes at once, the rest come too soon after it
    bot.claude.lead_with(text_block(lead))
    bot.claude.gate = asyncio.Event()  # the pause: the rest of the answer waits for it
    bot.claude.reply(" Found it.")
    if where == "thread":
        await bot.send_event(mention("<@U0BOT> look it up", ts="8.000001"))
        await bot.slack.wait_for("chat.appendStream")
        shown = bot.replies(CHANNEL, "8.000001")
    else:
        await bot.send_event(direct_message("look it up", ts="8.000002"))
        await bot.slack.wait_for("chat.update")
        shown = bot.slack.top_level_texts(DM)
    assert shown == [lead]

    bot.claude.gate.set()
    await bot.finished()


async def test_an_answer_closed_midway_writes_no_words_left_waiting(slack):
    """Closed (another replica took the answer over): words waiting for their interval stay unwritten."""
    writer = UpdatedMessages(AsyncWebClient(token=slack.bot_token, base_url=slack.api_url), DM, None)
    writer.interval = 0.05
    await writer.append("First words.")
    await writer.append(" More words.")  # too soon after the first: due at the interval's end
    writer.close()

    await asyncio.sleep(writer.interval * 4)  # well past it
    assert slack.top_level_texts(DM) == ["First words."]
    assert not slack.calls_to("chat.update")


@pytest.mark.parametrize("pending", ["x", "more words", "```\ncode"])
def test_a_full_streamed_message_takes_nothing_more(pending):
    sent = "word " * (STREAM_LIMIT // 5)
    assert len(sent) == STREAM_LIMIT

    assert roll_over(sent, pending, STREAM_LIMIT - len(sent)) == ("", pending)


async def test_a_streamed_roll_over_cuts_no_link_in_two(bot):
    """The piece that fills the message starts with a link: it goes whole to the next message."""
    paragraph = "lorem ipsum " * 40
    filler = "\n\n".join([paragraph.strip()] * 20)
    filler += "\n\n" + "x" * (STREAM_LIMIT - 10 - len(filler) - 2)
    link = "[the deployment guide](https://example.com/guide)"
    bot.claude.chunk_chars = len(filler) + 2
    bot.claude.reply(f"{filler}\n\n{link} explains it.")
    await bot.send_event(mention("<@U0BOT> go", ts="9.000001"))

    await bot.finished()
    first, second = bot.replies(CHANNEL, "9.000001")
    assert first.rstrip() == filler and second == f"{link} explains it."
