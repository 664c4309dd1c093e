"""Huge and hollow inputs, end to end over Socket Mode: a 40,000-character message, a 5,000-message thread,
messages that carry only files or attachments, and an event type nobody knows."""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.pipeline.context import MAX_PAGES
from bot.pipeline.progress import WORKING_REACTION
from bot.pipeline.prompt import EARLIER_UNREAD, SHORTENED
from bot.pipeline.tokens import CHARS_PER_TOKEN, TOKENS_PER_MESSAGE, cut_to, estimate_tokens
from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, DM, bot_said, direct_message, mention, said

ANSWER = "Hello from fake Claude."
OMITTED = re.compile(r"The (\d+) oldest messages of this conversation were left out")


def prompt_chars(request) -> int:
    return sum(len(message["content"]) for message in request.body["messages"])


def errors_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def huge_paste(size: int) -> str:
    """`size` characters of numbered log lines, so any part of it can be recognized."""
    line = "{:05d} GET /api/orders 200 12ms trace=abcdef0123456789\n"
    return "".join(line.format(n) for n in range(size // len(line.format(0)) + 1))[:size]


@pytest.mark.parametrize(
    "bot_overrides",
    [{}, {"CONTEXT_BUDGET_TOKENS": "5000"}],
    ids=["fits-the-default-budget", "over-a-small-budget"],
    indirect=True,
)
async def test_a_40000_character_mention_in_a_thread_is_answered_within_the_budget(bot, caplog):
    budget_chars = bot.settings.context_budget_tokens * CHARS_PER_TOKEN
    question = f"<@{BOT_USER}> what is wrong here?\n"
    text = question + huge_paste(40_000 - len(question))
    assert len(text) == 40_000
    thread = [
        said(BOB, "Orders are slow since the deploy.", "500.000001"),
        bot_said("Which endpoint?", "500.000002"),
        said(BOB, "/api/orders, log below.", "500.000003"),
        said(ALICE, text, "500.000004"),
    ]
    bot.slack.add_thread(CHANNEL, thread)

    await bot.send_event(mention(text, ts="500.000004", thread_ts="500.000001"))

    await bot.finished()
    assert bot.replies(CHANNEL, "500.000001") == ["Which endpoint?", ANSWER]
    assert WORKING_REACTION not in bot.slack.reactions(CHANNEL, "500.000004")
    [request] = bot.claude.requests
    # Within the budget, but for the "[…shortened…]" marker the policy adds after cutting at the budget.
    assert prompt_chars(request) <= budget_chars + len(SHORTENED)
    last = request.body["messages"][-1]["content"]
    body = text.removeprefix(f"<@{BOT_USER}> ").strip()
    if budget_chars > 40_000:  # it fits: all of it and the thread before it went to Claude
        assert last.endswith(f"Alice: {body}")
        assert [m["content"] for m in request.body["messages"][:2]] == [
            "Bob Builder: Orders are slow since the deploy.",
            "Which endpoint?",
        ]
        assert not OMITTED.search(request.body["system"])
    else:  # shortened to the budget: it keeps its start and end and says so; the older messages are left out
        [message] = request.body["messages"]
        assert message["content"].startswith("Alice: what is wrong here?\n00000 GET /api/orders")
        assert message["content"].endswith(body[-1000:])
        assert SHORTENED in message["content"]
        assert body[:1000] in message["content"]
        # Not even read: the mention alone fills the budget (or, when read, said to be left out).
        system = request.body["system"]
        assert EARLIER_UNREAD in system or OMITTED.search(system).group(1) == "3"
    assert not errors_logged(caplog)


@pytest.mark.parametrize("bot_overrides", [{"CONTEXT_BUDGET_TOKENS": "5000"}], indirect=True)
async def test_a_question_after_a_paste_over_the_budget_still_reaches_claude(bot):
    paste = huge_paste(40_000)
    text = f"<@{BOT_USER}> {paste}\nwhy is every request to /api/orders slow?"
    bot.slack.add_thread(CHANNEL, [said(ALICE, text, "500.000001")])

    await bot.send_event(mention(text, ts="500.000001"))

    await bot.finished()
    [request] = bot.claude.requests
    [message] = request.body["messages"]
    # Its start and its end are kept, the middle is left out and Claude is told so.
    assert message["content"].startswith("Alice: 00000 GET /api/orders")
    assert message["content"].endswith(paste[-200:] + "\nwhy is every request to /api/orders slow?")
    assert SHORTENED in message["content"]
    assert prompt_chars(request) <= bot.settings.context_budget_tokens * CHARS_PER_TOKEN + len(SHORTENED)


async def test_a_long_japanese_thread_is_cut_to_the_budget_in_claude_tokens_not_english_ones(bot):
    # Claude spends about a token per kana or kanji, not per four characters: 100 messages of 2,000 such
    # characters are 200,000 tokens, four times the default budget and past Claude's context window.
    line = "本番環境のデプロイ後に注文APIが遅くなりました。ログを確認してください。"
    thread = [
        said(ALICE if n % 2 else BOB, f"{n:03d} " + (line * 60)[:2_000], f"500.{n:06d}")
        for n in range(1, 100)
    ]
    question = f"<@{BOT_USER}> 原因は何ですか？"
    bot.slack.page_size = 15  # Slack's limit for apps outside the Marketplace
    bot.slack.add_thread(CHANNEL, [*thread, said(ALICE, question, "500.000100")])

    await bot.send_event(mention(question, ts="500.000100", thread_ts="500.000001"))

    await bot.finished()
    [request] = bot.claude.requests
    sent = "".join(message["content"] for message in request.body["messages"])
    wide = sum(1 for char in sent if not char.isascii())
    assert wide <= bot.settings.context_budget_tokens
    assert sent.endswith("Alice: 原因は何ですか？")
    assert EARLIER_UNREAD in request.body["system"] or OMITTED.search(request.body["system"])


@given(st.text(max_size=300), st.integers(min_value=0, max_value=100), st.booleans())
def test_a_cut_is_the_longest_start_or_end_within_its_tokens(text, tokens, from_end):
    piece = cut_to(text, tokens, from_end=from_end)
    assert text.endswith(piece) if from_end else text.startswith(piece)
    assert estimate_tokens(piece) <= tokens + TOKENS_PER_MESSAGE
    longer = text[len(text) - len(piece) - 1 :] if from_end else text[: len(piece) + 1]
    assert len(piece) <= tokens * CHARS_PER_TOKEN
    assert (
        len(piece) in (len(text), tokens * CHARS_PER_TOKEN)
        or estimate_tokens(longer) > tokens + TOKENS_PER_MESSAGE
    )


def kept_numbers(request, count: int) -> list[int]:
    """Which of the numbered messages 1..count-1 reached Claude, in the order they appear."""
    conversation = "\n".join(message["content"] for message in request.body["messages"])
    return [n for n in map(int, re.findall(r"message (\d{5}):", conversation)) if 0 < n < count]


def a_numbered_thread(stamps: list[str]) -> tuple[list[dict], str]:
    """Messages numbered from 1 at `stamps`, the last one the mention; returns them and the question."""
    question = f"<@{BOT_USER}> summarize please"
    thread = [
        said(ALICE if n % 2 else BOB, f"message {n:05d}: the build is still red on main, retrying", ts)
        for n, ts in enumerate(stamps[:-1], start=1)
    ]
    return [*thread, said(ALICE, question, stamps[-1])], question


async def test_a_5000_message_thread_is_read_from_its_newest_end_as_far_as_the_budget_goes(bot, caplog):
    bot.slack.page_size = 200
    ts = [f"1700000000.{n:06d}" for n in range(1, 5001)]
    thread, question = a_numbered_thread(ts)
    bot.slack.add_thread(CHANNEL, thread)

    await bot.send_event(mention(question, ts=ts[-1], thread_ts=ts[0]))

    await bot.finished()
    assert bot.replies(CHANNEL, ts[0]) == [ANSWER]
    # Fewer pages than the whole thread, none read twice, and each name looked up once.
    reads = bot.slack.calls_to("conversations.replies")
    assert len(reads) < math.ceil(5000 / 200)
    windows = [(c.params.get("oldest"), c.params.get("latest"), c.params.get("cursor")) for c in reads]
    assert len(set(windows)) == len(windows)
    assert {(call.params["channel"], call.params["ts"]) for call in reads} == {(CHANNEL, ts[0])}
    assert not bot.slack.calls_to("conversations.history")
    lookups = Counter(call.params["user"] for call in bot.slack.calls_to("users.info"))
    assert set(lookups) == {ALICE, BOB} and set(lookups.values()) == {1}
    # Claude gets the newest messages that fit, and is told that older ones were left out.
    [request] = bot.claude.requests
    assert prompt_chars(request) <= bot.settings.context_budget_tokens * CHARS_PER_TOKEN
    kept = kept_numbers(request, 5000)
    assert kept and kept == list(range(kept[0], 5000)) and kept[0] > 1  # the newest, in order, none missing
    assert EARLIER_UNREAD in request.body["system"] and not OMITTED.search(request.body["system"])  # one note
    assert request.body["messages"][-1]["content"].endswith("Alice: summarize please")
    assert not errors_logged(caplog)


def evenly(count: int) -> list[str]:
    """A message a second."""
    return [f"{1_700_000_000 + n}.000100" for n in range(count)]


def quiet_then_a_burst(count: int) -> list[str]:
    """A hundred messages over a year, then the rest within the last hour (an alert storm)."""
    year, hour = 365 * 86400, 3600
    quiet = [f"{1_700_000_000 + n * (year // 100)}.000000" for n in range(100)]
    storm_start = 1_700_000_000 + year
    burst = [f"{storm_start + n * hour // (count - 100)}.{n % 1_000_000:06d}" for n in range(count - 100)]
    return quiet + burst


@pytest.mark.parametrize(
    "bot_overrides",
    [{}, {"CONTEXT_BUDGET_TOKENS": "1000"}, {"CONTEXT_BUDGET_TOKENS": "1000000"}],
    ids=["default-budget", "small-budget", "largest-budget"],
    indirect=True,
)
@pytest.mark.parametrize("stamps", [evenly, quiet_then_a_burst], ids=["evenly", "quiet-then-a-burst"])
async def test_a_50000_reply_thread_costs_a_bounded_number_of_reads_and_keeps_the_newest(bot, caplog, stamps):
    bot.slack.page_size = 200
    ts = stamps(50_001)
    assert ts == sorted(ts, key=Decimal) and len(set(ts)) == len(ts)
    thread, question = a_numbered_thread(ts)
    bot.slack.add_thread(CHANNEL, thread)

    await bot.send_event(mention(question, ts=ts[-1], thread_ts=ts[0]))

    await bot.slack.wait_for("reactions.remove", timeout=30)  # the fake sorts 50,000 messages a page
    assert bot.replies(CHANNEL, ts[0]) == [ANSWER]
    reads = bot.slack.calls_to("conversations.replies")
    budget_tokens = bot.settings.context_budget_tokens
    assert len(reads) <= MAX_PAGES  # reading it whole would take 251
    if budget_tokens <= 1000:
        assert len(reads) <= 4  # the first page, then about one page back from the mention
    [request] = bot.claude.requests
    assert prompt_chars(request) <= budget_tokens * CHARS_PER_TOKEN
    kept = kept_numbers(request, 50_001)
    assert kept and kept == list(range(kept[0], 50_001))
    assert EARLIER_UNREAD in request.body["system"] and not OMITTED.search(request.body["system"])  # one note
    assert not errors_logged(caplog)


@pytest.mark.parametrize("bot_overrides", [{"CONTEXT_BUDGET_TOKENS": "5000"}], indirect=True)
async def test_a_busy_dm_is_read_newest_first_only_until_the_budget_is_full(bot, caplog):
    bot.slack.page_size = 200
    start = time.time() - 3600
    line = "a long note to self about the migration plan, step by step, with the details that matter. "
    history = [said(ALICE, f"note {n:03d}: " + line * 4, f"{start + n:.6f}") for n in range(600)]
    bot.slack.add_history(DM, history)
    question = history[-1]

    await bot.send_event(direct_message(question["text"], ts=question["ts"]))

    await bot.finished()
    assert len(bot.slack.calls_to("conversations.history")) == 1  # one page holds more than the budget
    [request] = bot.claude.requests
    assert prompt_chars(request) <= 5000 * CHARS_PER_TOKEN
    assert EARLIER_UNREAD in request.body["system"] and not OMITTED.search(request.body["system"])  # one note
    assert request.body["messages"][-1]["content"].endswith(line.strip())
    assert not errors_logged(caplog)


A_FILE = {"id": "F0PHOTO", "name": "whiteboard.png", "mimetype": "image/png", "url_private": "https://x/f"}
AN_ATTACHMENT = {"fallback": "Deploy #42 failed", "text": "Deploy #42 failed", "color": "danger"}


def no_text(event: dict, **extra) -> dict:
    return {**{k: v for k, v in event.items() if k != "text"}, **extra}


async def only_the_marker_was_answered(bot, marker: str = "marker question") -> None:
    """Send a plain DM after the events under test; once it is answered, the earlier ones are done."""
    await bot.send_event(direct_message(marker, ts="999.000001"))
    await bot.finished()
    assert [r.body["messages"][-1]["content"] for r in bot.claude.requests] == [f"Alice: {marker}"]
    assert len(bot.slack.calls_to("chat.postMessage")) == 1
    assert not bot.slack.calls_to("chat.startStream")
    assert {call.params["timestamp"] for call in bot.slack.calls_to("reactions.add")} == {"999.000001"}


@pytest.mark.parametrize(
    "event",
    [
        direct_message("", ts="600.000001", subtype="file_share", files=[A_FILE]),
        no_text(direct_message("", ts="600.000002", subtype="file_share", files=[A_FILE])),
        no_text(direct_message("", ts="600.000003"), attachments=[AN_ATTACHMENT]),
        direct_message("  \n ", ts="600.000004", subtype="file_share", files=[A_FILE, A_FILE]),
        mention("", ts="600.000005") | {"files": [A_FILE]},
        no_text(mention("", ts="600.000006"), attachments=[AN_ATTACHMENT]),
        no_text(mention("", ts="600.000007", thread_ts="600.000001"), files=[A_FILE], subtype="file_share"),
    ],
    ids=[
        "dm-file-empty-text",
        "dm-file-no-text",
        "dm-attachment-no-text",
        "dm-files-blank-text",
        "mention-file-empty-text",
        "mention-attachment-no-text",
        "mention-in-thread-file-no-text",
    ],
)
async def test_a_message_with_only_files_or_attachments_is_acknowledged_and_not_sent_to_claude(
    bot, caplog, event
):
    """With no words there is no question: nothing is read, Claude is not asked, nothing is posted."""
    await bot.send_event(event)  # returns once acknowledged
    await only_the_marker_was_answered(bot)
    assert not bot.slack.calls_to("conversations.replies")
    assert not errors_logged(caplog)


async def test_a_bare_mention_with_a_file_asks_about_the_thread_without_the_file(bot, caplog):
    """How Slack sends a mention typed with a photo: the mention is the text, the photo is a file."""
    bot.slack.add_thread(CHANNEL, [said(BOB, "Look at the whiteboard from today.", "700.000001")])
    event = mention(f"<@{BOT_USER}>", ts="700.000002", thread_ts="700.000001")
    await bot.send_event(event | {"files": [A_FILE], "subtype": "file_share"})

    await bot.finished()
    assert bot.replies(CHANNEL, "700.000001") == [ANSWER]
    [request] = bot.claude.requests
    assert request.body["messages"] == [
        {
            "role": "user",
            "content": "Bob Builder: Look at the whiteboard from today.\n\n"
            "Alice: (mentioned you with no further text)",
        }
    ]
    assert "whiteboard.png" not in str(request.body)
    assert not errors_logged(caplog)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "some_future_event", "user": ALICE, "channel": CHANNEL, "event_ts": "800.000001"},
        {"type": "some_future_event", "item": {"deeply": {"nested": [1, 2, {"x": None}]}}},
        {"type": "message_metadata_posted", "channel_id": DM, "metadata": {"event_type": "x"}},
    ],
    ids=["with-user-and-channel", "nested-fields", "a-real-one-we-do-not-subscribe-to"],
)
async def test_an_unknown_event_type_is_acknowledged_and_does_nothing(bot, caplog, event):
    frame = await bot.send_event(event)
    assert bot.slack.acks[frame["envelope_id"]]["envelope_id"] == frame["envelope_id"]
    await only_the_marker_was_answered(bot)
    # Taken by the bot's catch-all listener: Bolt would ack an unmatched event too, but warn about it.
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize("page_size", [15, 200])  # 15: Slack's page for apps not in the Marketplace
@pytest.mark.parametrize("pause", [1, 86_400], ids=["asked-at-once", "asked-a-day-later"])
async def test_a_thread_of_a_few_pages_is_read_whole_however_long_after_it_the_question_comes(
    bot, page_size, pause
):
    bot.slack.page_size = page_size
    count = page_size * 3
    ts = [*evenly(count), f"{1_700_000_000 + count + pause}.000100"]
    thread, question = a_numbered_thread(ts)
    bot.slack.add_thread(CHANNEL, thread)

    await bot.send_event(mention(question, ts=ts[-1], thread_ts=ts[0]))

    await bot.finished()
    [request] = bot.claude.requests
    assert kept_numbers(request, len(ts)) == list(range(1, len(ts)))
    assert EARLIER_UNREAD not in request.body["system"]
    assert len(bot.slack.calls_to("conversations.replies")) <= 12


async def test_a_thread_of_many_pages_is_summarized_from_its_newest_end(bot):
    """A shortcut asks after everything (its Ask's ts is far in the future), not from a message."""
    bot.slack.page_size = 200
    ts = evenly(1_000)
    thread, _ = a_numbered_thread(ts)
    bot.slack.add_thread(CHANNEL, thread)

    envelope = bot.slack.message_shortcut_envelope("summarize_thread", message=thread[0])
    await bot.slack.send_envelope(envelope)
    await bot.slack.wait_for("response_url", count=2)

    [request] = bot.claude.requests
    kept = kept_numbers(request, len(ts))
    assert kept and kept == list(range(kept[0], len(ts)))
    assert len(bot.slack.calls_to("conversations.replies")) <= 12
