"""Prompt caching (issue 12, section 1): the request asks for it (automatic caching on the Anthropic API,
a breakpoint on the last block on Bedrock and Vertex AI, for CLAUDE_CACHE_TTL), a follow-up in a thread
repeats the earlier prompt byte for byte and reads it from the cache, and a thread past the budget keeps
its window's start for several questions. Fake Claude reports usage as the API does for cached prefixes."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import anthropic
import pytest

from bot.pipeline.ask import BotIdentity, SlackMessage
from bot.pipeline.context import DM_WINDOW_STEPS, MICROS, dm_window_start
from bot.pipeline.prompt import build_prompt
from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, mention, said
from tests.fakes.claude_api import ClaudeRequest, FakeClaude, _estimate_tokens
from tests.test_backends import BEDROCK, VERTEX, cloud_credentials  # noqa: F401 (an autouse fixture)
from tests.test_files import PNG, files_on, with_files
from tests.test_redaction_end_to_end import SLACK_TOKEN

THREAD = "1700000000.000100"
ANSWERED = re.compile(r"answered .*input_tokens=(\d+) output_tokens=\d+ cache_read_tokens=(\d+) "
                      r"cache_write_tokens=(\d+)")  # fmt: skip
LONG = "the rollout plan for the billing service, with the checks that matter before each step. " * 5


def usage_logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int, int]]:
    """(input, cache read, cache write) tokens of each answer's log line, in order."""
    found = [ANSWERED.search(record.getMessage()) for record in caplog.records]
    return [(int(m[1]), int(m[2]), int(m[3])) for m in found if m]


def prefix_blocks(body: dict[str, Any]) -> list[str]:
    """The prompt as the cache compares it: the system prompt, then every message's blocks (a string is
    one text block), `cache_control` aside; each as canonical JSON with its role."""
    system = body["system"]
    blocks = [
        ("system", b) for b in ([{"type": "text", "text": system}] if isinstance(system, str) else system)
    ]
    for message in body["messages"]:
        content = message["content"]
        content = [{"type": "text", "text": content}] if isinstance(content, str) else content
        blocks += [(message["role"], b) for b in content]
    return [
        json.dumps([role, {k: v for k, v in block.items() if k != "cache_control"}], sort_keys=True)
        for role, block in blocks
    ]


def old_messages(count: int, start: int = 0) -> list[dict]:
    """Long messages by Alice and Bob, a minute apart, from the thread's start."""
    return [
        said(ALICE if n % 2 else BOB, f"note {n:03d}: {LONG}", f"{1700000000 + 60 * n}.000100")
        for n in range(start, start + count)
    ]


async def ask(bot, thread: list[dict], text: str, *, user: str = ALICE) -> ClaudeRequest:
    """Alice asks in the thread, after everything in it (the bot's answers included); Claude's request."""
    bot.slack.page_size = 200  # as Slack's: the thread is read whole, or from its newest end back
    ts = bot.slack._new_ts()  # after the bot's answers, before its next one, as Slack stamps them
    thread.append(said(user, text, ts) | {"thread_ts": THREAD})
    done = len(bot.claude.requests)
    await bot.send_event(mention(text, ts=ts, thread_ts=THREAD, user=user))
    await bot.finished(count=done + 1)
    return bot.claude.requests[done]


# --- what the request asks for ---


async def test_the_request_asks_for_automatic_caching_for_five_minutes(bot):
    bot.slack.add_thread(CHANNEL, [said(ALICE, "<@U0BOT> hi", "50.000001")])
    await bot.send_event(mention("<@U0BOT> hi", ts="50.000001"))
    await bot.finished()

    [request] = bot.claude.requests
    assert request.body["cache_control"] == {"type": "ephemeral"}  # no ttl: 5 minutes, the default
    assert request.body["messages"] == [{"role": "user", "content": "Alice: hi"}]  # otherwise unchanged
    assert isinstance(request.body["system"], str)


@pytest.mark.parametrize("bot_overrides", [{"CLAUDE_CACHE_TTL": "1h"}], indirect=True)
async def test_claude_cache_ttl_1h_asks_for_an_hour(bot):
    bot.slack.add_thread(CHANNEL, [said(ALICE, "<@U0BOT> hi", "50.000001")])
    await bot.send_event(mention("<@U0BOT> hi", ts="50.000001"))
    await bot.finished()

    [request] = bot.claude.requests
    assert request.body["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


# --- a follow-up repeats the prompt and reads it from the cache ---


@files_on(CONTEXT_BUDGET_TOKENS="3000")
async def test_a_follow_up_repeats_the_earlier_prompt_byte_for_byte_and_reads_it_from_the_cache(bot, caplog):
    """Names, a mention, a placeholder, the note on left-out messages and the one on files, a photo, and
    the first question a bare mention: the second request starts with all of the first."""
    caplog.set_level(logging.INFO, logger="bot")
    archive = bot.slack.add_file(b"PK\x03\x04" + bytes(100), "application/zip", "salaries.zip", user=BOB)
    photo = bot.slack.add_file(PNG, "image/png", "whiteboard.png", user=BOB)
    earlier = [
        said(BOB, "Thread about the billing rollout.", THREAD),
        *old_messages(12, start=1),  # more than the budget holds: the oldest are left out
        with_files(said(BOB, "The plan and the old archive.", "1700001000.000100"), archive, photo),
        said(BOB, f"<@{ALICE}> the deploy token is {SLACK_TOKEN}", "1700001060.000100"),
        *old_messages(8, start=20),
    ]
    thread = bot.slack.add_thread(CHANNEL, earlier)

    first = await ask(bot, thread, f"<@{BOT_USER}>")  # a bare mention: asks about the thread
    second = await ask(bot, thread, f"<@{BOT_USER}> and is that token still live?")

    assert "Alice: (mentioned you with no further text)" in json.dumps(first.body["messages"][-1])
    sent = json.dumps(first.body)
    assert "[slack token 1]" in sent and SLACK_TOKEN not in sent and "@Alice the deploy token" in sent
    assert "oldest messages of this conversation were left out" in first.body["system"]
    assert "(one of an unsupported type)" in first.body["system"]
    assert '"type": "image"' in json.dumps(first.body["messages"])
    before, after = prefix_blocks(first.body), prefix_blocks(second.body)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 2  # the answer and the new question
    # The first wrote its whole prompt to the cache; the second read all of it and wrote the new part.
    total = _estimate_tokens(first.body)
    assert total >= bot.claude.cache_min_tokens
    assert usage_logged(caplog) == [(0, 0, total), (0, total, _estimate_tokens(second.body) - total)]


async def test_a_prompt_under_the_minimum_is_not_cached(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    thread = bot.slack.add_thread(CHANNEL, [said(BOB, "Short thread.", THREAD)])
    first = await ask(bot, thread, "<@U0BOT> short?")
    await ask(bot, thread, "<@U0BOT> still short?")

    assert _estimate_tokens(first.body) < bot.claude.cache_min_tokens
    assert [(read, write) for _, read, write in usage_logged(caplog)] == [(0, 0), (0, 0)]
    assert bot.claude.cached_prefixes() == []


@pytest.mark.parametrize(
    ("bot_overrides", "still_cached"),
    [({}, False), ({"CLAUDE_CACHE_TTL": "1h"}, True)],
    ids=["5m", "1h"],
    indirect=["bot_overrides"],
)
async def test_after_six_minutes_only_the_hour_long_cache_is_read(bot, caplog, still_cached):
    caplog.set_level(logging.INFO, logger="bot")
    thread = bot.slack.add_thread(CHANNEL, [said(BOB, "Thread.", THREAD), *old_messages(20, start=1)])
    first = await ask(bot, thread, "<@U0BOT> what is the plan?")
    bot.claude.pass_time(360)
    await ask(bot, thread, "<@U0BOT> and then?")

    total = _estimate_tokens(first.body)
    [_, (_, read, _)] = usage_logged(caplog)
    assert read == (total if still_cached else 0)
    ttl = bot.settings.claude_cache_ttl
    assert all(entry_ttl == ttl for _, entry_ttl in bot.claude.cached_prefixes())


# --- a thread past the budget ---


@pytest.mark.parametrize("bot_overrides", [{"CONTEXT_BUDGET_TOKENS": "3000"}], indirect=True)
async def test_a_thread_past_the_budget_keeps_its_windows_start_for_several_questions(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    bot.claude.responder = lambda _body: "An answer of some length, as answers are. " * 10
    thread = bot.slack.add_thread(CHANNEL, [said(BOB, "Thread.", THREAD), *old_messages(60, start=1)])

    requests = [
        await ask(bot, thread, f"<@{BOT_USER}> question {n}: " + "and what then? " * 20) for n in range(8)
    ]

    # Each follow-up adds about 250 tokens (question and answer); the window moves in steps of up to a
    # quarter of the budget, not by a message or two every time.
    starts = [str(request.body["messages"][0]["content"])[:30] for request in requests]
    runs = [len(list(group)) for group in _runs(starts)]
    assert len(runs) <= 4 and max(runs) >= 3, starts
    reads = [read for _, read, _ in usage_logged(caplog)]
    for n in range(1, len(requests)):
        if starts[n] == starts[n - 1]:  # the same start: all of the previous prompt is read
            assert reads[n] == _estimate_tokens(requests[n - 1].body)
    assert sum(read > 0 for read in reads) >= len(requests) - len(runs)
    for request in requests:
        assert sum(len(str(m["content"])) for m in request.body["messages"]) <= 3000 * 4 + 100


def _runs(values: list[str]) -> list[list[str]]:
    runs: list[list[str]] = []
    for value in values:
        if runs and runs[-1][0] == value:
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs


def test_the_windows_start_moves_in_steps_as_a_thread_grows():
    """Pure: a thread growing a message at a time past the budget changes its prompt's first turn a few
    times, where keeping the newest that fit changed it with every message."""
    bot = BotIdentity(BOT_USER, "B0BOT")
    thread = [
        SlackMessage(ts=f"{1700000000 + 60 * n}.000100", text=f"note {n:03d}: {LONG}", user="U1")
        for n in range(200)
    ]
    firsts = []
    for end in range(60, 200):
        prompt = build_prompt(thread[:end], bot=bot, names={}, system="S", budget_tokens=5000)
        firsts.append(prompt.omitted)
        assert sum(len(m["content"]) for m in prompt.messages) <= 5000 * 4 + 100
    changes = sum(a != b for a, b in zip(firsts, firsts[1:], strict=False))
    assert changes <= 140 // 5, firsts  # a start lasts five messages or more on average
    assert firsts == sorted(firsts)  # and only moves forward


def test_a_dms_window_starts_on_a_grid_and_never_further_back_than_the_window():
    window = 24 * 3600.0
    step = window / DM_WINDOW_STEPS
    now = 1_790_000_000.5
    starts = {dm_window_start(now + seconds, window) for seconds in range(0, int(step) - 1, 60)}
    assert len(starts) <= 2  # one grid line or the next, over a step's time
    for seconds in range(0, 3 * int(step), 977):
        start = dm_window_start(now + seconds, window)
        assert (now + seconds - window) * MICROS <= start <= (now + seconds - window + step) * MICROS


# --- Bedrock and Vertex AI: a breakpoint on the last block ---


@pytest.mark.parametrize(
    "bot_overrides", [{**BEDROCK, "CLAUDE_CACHE_TTL": "1h"}, VERTEX], ids=["bedrock", "vertex"], indirect=True
)
async def test_on_bedrock_and_vertex_the_last_block_carries_the_breakpoint(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    thread = bot.slack.add_thread(CHANNEL, [said(BOB, "Thread.", THREAD), *old_messages(20, start=1)])
    first = await ask(bot, thread, "<@U0BOT> what is the plan?")
    second = await ask(bot, thread, "<@U0BOT> and then?")

    control = {"type": "ephemeral", **({"ttl": "1h"} if bot.settings.claude_cache_ttl == "1h" else {})}
    for request in (first, second):
        assert "cache_control" not in request.body  # automatic caching is the Anthropic API's
        assert request.body["messages"][-1]["content"][-1] == {
            "type": "text",
            "text": request.body["messages"][-1]["content"][-1]["text"],
            "cache_control": control,
        }
        assert sum("cache_control" in json.dumps(m) for m in request.body["messages"]) == 1
    assert prefix_blocks(second.body)[: len(prefix_blocks(first.body))] == prefix_blocks(first.body)
    total = _estimate_tokens(first.body)
    assert usage_logged(caplog) == [(0, 0, total), (0, total, _estimate_tokens(second.body) - total)]


# --- the fake's rules ---


async def test_the_fake_refuses_breakpoints_the_api_refuses(claude: FakeClaude):
    client = anthropic.AsyncAnthropic(api_key="k", base_url=claude.base_url, max_retries=0)
    block = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    cases = [
        [dict(block) for _ in range(5)],  # five breakpoints
        [{**block, "cache_control": {"type": "ephemeral", "ttl": "1h"}}, block],  # fine: 1h then 5m
        [block, {**block, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],  # 1h after 5m
        [{**block, "cache_control": {"type": "persistent"}}],
    ]
    outcomes = []
    for content in cases:
        try:
            await client.messages.create(
                model="claude-sonnet-5-5", max_tokens=10, messages=[{"role": "user", "content": content}]
            )
            outcomes.append("ok")
        except anthropic.BadRequestError:
            outcomes.append("400")
    await client.close()
    assert outcomes == ["400", "ok", "400", "400"]
