"""Progress: a working reaction on the invoking message at once, removed when the answer is complete
(whether Claude answered or failed), and never in the way of the answer itself."""

from __future__ import annotations

import time

from bot.pipeline.progress import quietly
from tests.conftest import CHANNEL, DM, direct_message, mention

WORKING = "hourglass_flowing_sand"


def now_ts() -> str:
    return f"{time.time():.6f}"


def index_of(bot, method: str, *, last: bool = False) -> int:
    indexes = [i for i, call in enumerate(bot.slack.calls) if call.method == method]
    assert indexes, f"no call to {method}"
    return indexes[-1] if last else indexes[0]


async def test_mention_shows_the_working_reaction_until_the_answer_is_complete(bot):
    bot.claude.first_token_delay = 0.5  # the bot cannot finish while we look at the reaction
    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="10.000001"))

    await bot.claude.wait_for_requests()
    assert bot.slack.reactions(CHANNEL, "10.000001") == {WORKING}
    await bot.finished()

    [added] = bot.slack.calls_to("reactions.add")
    assert (added.params["channel"], added.params["timestamp"], added.params["name"]) == (
        CHANNEL,
        "10.000001",
        WORKING,
    )
    assert index_of(bot, "reactions.add") < index_of(bot, "chat.startStream")
    assert index_of(bot, "reactions.remove") > index_of(bot, "chat.stopStream", last=True)
    assert bot.slack.reactions(CHANNEL, "10.000001") == set()
    assert bot.replies(CHANNEL, "10.000001") == ["Hello from fake Claude."]


async def test_working_reaction_is_removed_when_claude_fails(bot):
    bot.claude.fail(500)
    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="20.000001"))

    await bot.finished()

    assert bot.slack.reactions(CHANNEL, "20.000001") == set()
    assert index_of(bot, "reactions.add") < index_of(bot, "chat.postMessage")
    assert index_of(bot, "reactions.remove") > index_of(bot, "chat.postMessage")
    assert bot.replies(CHANNEL, "20.000001") == [
        ":warning: I couldn't reach Claude just now. Please try again in a minute."
    ]


async def test_top_level_dm_shows_the_working_reaction_until_the_answer_is_complete(bot):
    ts = now_ts()
    bot.claude.first_token_delay = 0.5
    await bot.send_event(direct_message("What is a mutex?", ts=ts))

    await bot.claude.wait_for_requests()
    assert bot.slack.reactions(DM, ts) == {WORKING}
    await bot.finished()

    [added] = bot.slack.calls_to("reactions.add")
    assert (added.params["channel"], added.params["timestamp"]) == (DM, ts)
    assert index_of(bot, "reactions.add") < index_of(bot, "chat.postMessage")
    assert index_of(bot, "reactions.remove") > index_of(bot, "chat.postMessage", last=True)
    assert bot.slack.reactions(DM, ts) == set()
    assert bot.slack.top_level_texts(DM) == ["Hello from fake Claude."]


async def test_answer_arrives_when_the_reaction_cannot_be_added(bot):
    bot.slack.fail("reactions.add", error="missing_scope")
    await bot.send_event(mention("<@U0BOT> what is a mutex?", ts="30.000001"))

    await bot.finished()

    assert bot.replies(CHANNEL, "30.000001") == ["Hello from fake Claude."]
    assert bot.slack.reactions(CHANNEL, "30.000001") == set()


async def test_a_courtesy_call_that_fails_in_an_unexpected_way_is_logged_not_raised(caplog):
    async def odd_failure() -> None:
        raise ValueError("not a Slack or network error")

    await quietly(odd_failure())
    assert "courtesy call failed: ValueError" in caplog.text
