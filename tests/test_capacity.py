"""Bursts follow Claude's rate limits: within them they go straight through, beyond them they wait with
their progress showing and are answered, and a 429's retry-after pauses new answers; none fails."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from bot.pipeline.capacity import DEFAULT_CEILING, ClaudeCapacity
from bot.pipeline.progress import WAITING_STATUS
from tests.conftest import ALICE, DM, direct_message, said

ANSWER = "Hello from fake Claude."
MANY = {"USER_REQUESTS_PER_MINUTE": "1000"}  # one person asks them all


def threads(bot, count: int, first: int = 10) -> list[str]:
    """`count` agent threads in Alice's DM, each with a question to ask; returns their roots."""
    roots = [f"{first + n}.000001" for n in range(count)]
    for n, root in enumerate(roots):
        bot.slack.add_thread(DM, [said(ALICE, "hello", root), said(ALICE, f"question {n}", root[:-1] + "2")])
    return roots


async def ask_in(bot, roots: list[str]) -> None:
    for root in roots:
        await bot.send_event(direct_message("question", ts=root[:-1] + "2", thread_ts=root))


def waited(bot) -> set[str]:
    """The threads that were shown waiting for a turn."""
    calls = bot.slack.calls_to("assistant.threads.setStatus")
    return {call.params["thread_ts"] for call in calls if call.params["status"] == WAITING_STATUS}


async def all_answered(bot, roots: list[str], requests: int) -> None:
    await bot.claude.wait_for_requests(requests, timeout=15)
    await bot.pipeline.wait_idle()
    assert [bot.replies(DM, root) for root in roots] == [[ANSWER]] * len(roots)


@pytest.mark.parametrize("bot_overrides", [MANY], indirect=True)
@pytest.mark.parametrize("headers", [True, False], ids=["rate-limit-headers", "no-headers"])
async def test_a_burst_within_claudes_limits_goes_straight_through(bot, headers):
    """60 at once, with the API's limits far off (or, as on Bedrock, not told): all reach Claude together."""
    if not headers:
        bot.claude.set_rate_limits(requests=None)
    bot.claude.gate = asyncio.Event()  # Claude holds every answer until all have arrived
    roots = threads(bot, 60)
    await ask_in(bot, roots)

    await bot.claude.wait_for_requests(60, timeout=10)
    bot.claude.gate.set()
    await all_answered(bot, roots, 60)
    assert not waited(bot)


@pytest.mark.parametrize("bot_overrides", [MANY], indirect=True)
async def test_a_burst_beyond_the_remaining_requests_waits_visibly_and_is_answered(bot):
    bot.claude.set_rate_limits(requests=4, per_seconds=1.0)  # 4 a second, refilled continuously
    [first] = threads(bot, 1)
    await ask_in(bot, [first])
    await all_answered(bot, [first], 1)  # its response told the bot what is left

    roots = threads(bot, 10, first=20)
    await ask_in(bot, roots)
    await all_answered(bot, [first, *roots], 11)
    assert bot.claude.rate_limited == 0  # none was sent too early, so none failed
    assert waited(bot)  # those beyond the limit were shown waiting
    assert waited(bot) <= set(roots)


@pytest.mark.parametrize("bot_overrides", [MANY], indirect=True)
async def test_a_burst_beyond_the_input_tokens_left_waits_though_the_prompts_go_to_the_cache(bot):
    """Each long prompt is written to Claude's prompt cache, which the input-token limit counts too."""
    bot.claude.set_rate_limits(input_tokens=5_000, per_seconds=2.0)
    first, *roots = [f"{10 + n}.000001" for n in range(5)]
    for n, root in enumerate([first, *roots]):  # ~2,000 tokens each, none like another: no cache reads
        log = f"log {n}: " + f"line {n} of the failing build " * 300
        bot.slack.add_thread(DM, [said(ALICE, log, root), said(ALICE, "why?", root[:-1] + "2")])
    await ask_in(bot, [first])
    await all_answered(bot, [first], 1)  # it told the bot what an answer costs, and what is left

    await ask_in(bot, roots)
    await all_answered(bot, [first, *roots], 5)
    assert bot.claude.rate_limited == 0  # none was sent too early, so none failed
    assert waited(bot)


@pytest.mark.parametrize("bot_overrides", [{**MANY, "CLAUDE_MAX_RETRIES": "2"}], indirect=True)
async def test_a_429_with_retry_after_pauses_new_answers_then_all_are_answered(bot):
    bot.claude.fail(429, retry_after=1)
    [first] = threads(bot, 1)
    await ask_in(bot, [first])
    await bot.claude.wait_for_requests(1)  # refused: retry after a second

    roots = threads(bot, 4, first=20)
    await ask_in(bot, roots)
    await all_answered(bot, [first, *roots], 6)
    assert waited(bot) == set(roots)
    # Nothing else went to Claude before the refused request was retried, after its retry-after.
    retries = [request.headers.get("x-stainless-retry-count") for request in bot.claude.requests]
    assert retries == ["0", "1", "0", "0", "0", "0"]


# --- the limiter alone ---


def limit_headers(name: str, remaining: int, limit: int, full_in: float = 60.0) -> dict[str, str]:
    reset = datetime.fromtimestamp(time.time() + full_in, UTC).isoformat().replace("+00:00", "Z")
    prefix = f"anthropic-ratelimit-{name}"
    return {f"{prefix}-remaining": str(remaining), f"{prefix}-limit": str(limit), f"{prefix}-reset": reset}


async def hold(capacity: ClaudeCapacity, count: int) -> tuple[list[asyncio.Task[None]], asyncio.Event]:
    """`count` turns taken and held until the returned event is set."""
    release = asyncio.Event()
    taken = 0

    async def one() -> None:
        nonlocal taken
        async with capacity.turn():
            taken += 1
            await release.wait()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    while taken < count:
        await asyncio.sleep(0)
    return tasks, release


async def test_with_nothing_told_every_turn_up_to_the_ceiling_is_given_at_once():
    capacity = ClaudeCapacity()
    tasks, release = await hold(capacity, DEFAULT_CEILING)
    assert capacity.would_wait()  # the ceiling bounds what waiting answers hold
    release.set()
    await asyncio.gather(*tasks)
    assert not capacity.would_wait()


async def test_a_fixed_ceiling_bounds_turns_whatever_claude_allows():
    capacity = ClaudeCapacity(ceiling=2)
    capacity.observe(200, limit_headers("requests", 1000, 1000))
    tasks, release = await hold(capacity, 2)
    assert capacity.would_wait()
    release.set()
    await asyncio.gather(*tasks)


async def test_turns_follow_the_remaining_requests_less_those_not_yet_answered():
    capacity = ClaudeCapacity()
    capacity.observe(200, limit_headers("requests", 2, 50))
    tasks, release = await hold(capacity, 2)
    assert capacity.would_wait()  # both may spend the last two
    release.set()
    await asyncio.gather(*tasks)
    assert not capacity.would_wait()  # ended without asking: they spent nothing


async def test_turns_follow_the_input_tokens_left_at_what_an_answer_costs():
    capacity = ClaudeCapacity()
    capacity.used(input_tokens=1000, output_tokens=100)
    capacity.observe(200, limit_headers("input-tokens", 2500, 80_000))
    tasks, release = await hold(capacity, 2)
    assert capacity.would_wait()  # 2500 tokens left, 2000 of them for the two running
    release.set()
    await asyncio.gather(*tasks)


async def test_a_waiting_turn_is_given_as_the_bucket_refills():
    capacity = ClaudeCapacity()
    capacity.observe(200, limit_headers("requests", 0, 20, full_in=1.0))  # 20 a second
    assert capacity.would_wait()
    tasks, release = await hold(capacity, 1)
    async with asyncio.timeout(5):
        async with capacity.turn():
            pass
    release.set()
    await asyncio.gather(*tasks)


async def test_a_429_pauses_new_turns_and_narrows_them_until_answers_succeed():
    capacity = ClaudeCapacity()
    tasks, release = await hold(capacity, 8)
    capacity.observe(429, {"retry-after": "1"})
    assert capacity.width == 4
    assert capacity.paused_until - time.monotonic() > 0.5  # for the second it asked
    assert capacity.would_wait()
    await capacity.pause_over()
    assert capacity.would_wait()  # 8 running, 4 at once for now
    for _ in range(5):
        capacity.observe(200, {})
    assert capacity.width == 9
    assert not capacity.would_wait()
    release.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_its_place_to_the_next():
    capacity = ClaudeCapacity(ceiling=1)
    tasks, release = await hold(capacity, 1)

    async def take() -> None:
        async with capacity.turn():
            pass

    cancelled = asyncio.create_task(take())
    await asyncio.sleep(0)  # it waits
    second = asyncio.create_task(take())
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await asyncio.gather(*tasks)
    await asyncio.wait_for(second, 5)
    assert cancelled.cancelled()
    assert not capacity.would_wait()
