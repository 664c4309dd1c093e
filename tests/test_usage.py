"""Usage, cost and budgets (issue 12, section 3): each answer's log line carries the tokens Claude reported
and the estimated cost from bot.pricing (or the environment's prices); USER_TOKENS_PER_DAY stops a person
who used today's tokens before anything is read, across replicas through Redis."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
import redis.asyncio as aioredis

from bot.config import ConfigError, Settings
from bot.pricing import PRICES, Prices, base_model, parse_prices, prices_for
from tests.conftest import ALICE, BOB, CHANNEL, bot_env, mention, running_bot, said
from tests.fakes.claude_api import _estimate_tokens, _tokens
from tests.test_shared_state import send_to, two_replicas

ANSWER = "Hello from fake Claude."
CACHED = {  # as the API reports a prompt whose prefix was cached earlier and whose new part is written now
    "cache_read_input_tokens": 20_000,
    "cache_creation_input_tokens": 3_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 3_000, "ephemeral_1h_input_tokens": 0},
}
ANSWERED = re.compile(
    r"answered .*input_tokens=(\d+) output_tokens=(\d+) cache_read_tokens=(\d+) cache_write_tokens=(\d+) "
    r"cost_usd=(\S+)"
)


def answered_fields(caplog: pytest.LogCaptureFixture) -> list[tuple[str, ...]]:
    return [m.groups() for r in caplog.records if (m := ANSWERED.search(r.getMessage()))]


def ask_in_thread(bot, ts: str, user: str = ALICE) -> dict:
    """A thread with one question, mentioning the bot; returns the mention event."""
    bot.slack.add_thread(CHANNEL, [said(user, f"<@U0BOT> question {ts}", ts)])
    return mention(f"<@U0BOT> question {ts}", ts=ts, thread_ts=ts, user=user)


async def test_an_answers_log_line_carries_its_tokens_and_estimated_cost(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    bot.claude.cache_usage = CACHED
    await bot.send_event(ask_in_thread(bot, "20.000001"))
    await bot.finished()

    [request] = bot.claude.requests
    [fields] = answered_fields(caplog)
    input_tokens, output_tokens = _estimate_tokens(request.body), _tokens(ANSWER)
    assert fields[:4] == (str(input_tokens), str(output_tokens), "20000", "3000")
    # claude-sonnet-5-5: $2 in, $10 out, cache reads $0.20, 5-minute writes $2.50 per million tokens
    cost = (input_tokens * 2 + output_tokens * 10 + 20_000 * 0.2 + 3_000 * 2.5) / 1e6
    assert fields[4] == f"{cost:.6f}"


@pytest.mark.parametrize(
    "bot_overrides",
    [{"CLAUDE_MODEL": "claude-sonnet-4-6", "CLAUDE_PRICES": "input=3, output=15, cache_write_1h=6"}],
    indirect=True,
)
async def test_a_model_priced_in_the_environment_is_costed_at_those_prices(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    bot.claude.cache_usage = {
        "cache_read_input_tokens": 1_000,
        "cache_creation_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 400},
    }
    await bot.send_event(ask_in_thread(bot, "21.000001"))
    await bot.finished()

    [request] = bot.claude.requests
    assert request.body["model"] == "claude-sonnet-4-6"
    [fields] = answered_fields(caplog)
    input_tokens, output_tokens = _estimate_tokens(request.body), _tokens(ANSWER)
    # cache reads 0.1 x input, 5-minute writes 1.25 x; the 1-hour write price as given
    cost = (input_tokens * 3 + output_tokens * 15 + 1_000 * 0.3 + 100 * 3.75 + 400 * 6) / 1e6
    assert fields == (str(input_tokens), str(output_tokens), "1000", "500", f"{cost:.6f}")


@pytest.fixture
def aws_keys(monkeypatch, tmp_path):
    """Static AWS keys for the SDK's Bedrock client; nothing of the developer's is read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("aws_keys")
async def test_on_bedrock_an_inference_profile_is_priced_as_its_model(slack, claude, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    claude.cache_usage = CACHED
    profile = {
        "CLAUDE_BACKEND": "bedrock",
        "AWS_REGION": "eu-west-1",
        "CLAUDE_MODEL": "eu.anthropic.claude-sonnet-5-5-v1:0",
    }
    async with running_bot(slack, claude, profile) as bot:
        await bot.send_event(ask_in_thread(bot, "29.000001"))
        await bot.finished()

    [request] = claude.requests
    assert request.path == "/model/eu.anthropic.claude-sonnet-5-5-v1:0/invoke-with-response-stream"
    [fields] = answered_fields(caplog)
    input_tokens, output_tokens = _estimate_tokens(request.body), _tokens(ANSWER)
    cost = (input_tokens * 2 + output_tokens * 10 + 20_000 * 0.2 + 3_000 * 2.5) / 1e6
    assert fields == (str(input_tokens), str(output_tokens), "20000", "3000", f"{cost:.6f}")


@pytest.mark.parametrize("bot_overrides", [{"CLAUDE_MODEL": "claude-sonnet-4-6"}], indirect=True)
async def test_a_model_without_a_price_is_logged_at_an_unknown_cost_not_zero(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    await bot.send_event(ask_in_thread(bot, "22.000001"))
    await bot.finished()

    [fields] = answered_fields(caplog)
    assert int(fields[0]) > 0 and fields[4] == "unknown"
    [warning] = [r.getMessage() for r in caplog.get_records("setup") if "has no price" in r.getMessage()]
    assert "model claude-sonnet-4-6 has no price" in warning and "CLAUDE_PRICES" in warning


async def test_a_failed_answer_logs_and_counts_the_tokens_claude_reported(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    bot.claude.cache_usage = CACHED
    bot.claude.fail_midstream(after_chunks=1)
    await bot.send_event(ask_in_thread(bot, "23.000001"))
    await bot.finished()

    [request] = bot.claude.requests
    input_tokens = _estimate_tokens(request.body)
    [failed] = [r.getMessage() for r in caplog.records if " failed: " in r.getMessage()]
    # message_start's usage arrived before the overload (with its own output count, as the API's has)
    started = f"input_tokens={input_tokens} output_tokens={_tokens('')} cache_read_tokens=20000"
    assert f"{started} cache_write_tokens=3000" in failed
    assert re.search(r"cost_usd=0\.\d{6}", failed)


@pytest.mark.parametrize("bot_overrides", [{"USER_TOKENS_PER_DAY": "1000"}], indirect=True)
async def test_past_the_daily_token_budget_a_person_is_told_privately_and_nothing_is_read(bot):
    # Each answer costs its prompt, the cached prefix and the answer: 20 000 and more, past 1000.
    bot.claude.cache_usage = CACHED
    await bot.send_event(ask_in_thread(bot, "24.000001"))
    await bot.finished()
    assert bot.replies(CHANNEL, "24.000001") == [ANSWER]  # under the budget: answered
    used = await bot.pipeline.state.get(f"tokens:{bot.pipeline.keys.of(bot.slack.team_id, ALICE)}")
    [request] = bot.claude.requests
    assert used == str(_estimate_tokens(request.body) + _tokens(ANSWER) + 23_000)

    reads = [c for c in bot.slack.calls if c.method.startswith("conversations.")]
    await bot.send_event(ask_in_thread(bot, "25.000001"))
    [notice] = await bot.slack.wait_for("chat.postEphemeral")
    assert notice.params["user"] == ALICE
    assert "used your share of Claude for today" in notice.params["text"]
    await bot.pipeline.wait_idle()
    assert [c for c in bot.slack.calls if c.method.startswith("conversations.")] == reads
    assert len(bot.claude.requests) == 1
    assert bot.replies(CHANNEL, "25.000001") == []

    await bot.send_event(ask_in_thread(bot, "26.000001", user=BOB))  # another person's budget is their own
    await bot.finished(count=2)
    assert bot.replies(CHANNEL, "26.000001") == [ANSWER]


async def test_two_replicas_share_a_persons_token_budget_through_redis(slack, claude, redis_server):
    claude.cache_usage = CACHED
    async with two_replicas(slack, claude, redis_server, {"USER_TOKENS_PER_DAY": "1000"}) as bots:
        slack.add_thread(CHANNEL, [said(ALICE, "<@U0BOT> first", "27.000001")])
        first = mention("<@U0BOT> first", ts="27.000001", thread_ts="27.000001")
        await send_to(slack, 0, slack.events_api_envelope(first))
        await slack.wait_for("reactions.remove")
        await asyncio.gather(*(bot.pipeline.wait_idle() for bot in bots))

        slack.add_thread(CHANNEL, [said(ALICE, "<@U0BOT> second", "28.000001")])
        second = mention("<@U0BOT> second", ts="28.000001", thread_ts="28.000001")
        await send_to(slack, 1, slack.events_api_envelope(second))
        [notice] = await slack.wait_for("chat.postEphemeral")
        assert "used your share of Claude for today" in notice.params["text"]
        await asyncio.gather(*(bot.pipeline.wait_idle() for bot in bots))
        assert len(claude.requests) == 1

        raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:  # one count under a keyed hash, until midnight UTC
            [key] = [key async for key in raw.scan_iter(match="tokens:*")]
            assert ALICE not in key
            assert (
                int(await raw.get(key) or 0)
                == _estimate_tokens(claude.requests[0].body) + _tokens(ANSWER) + 23_000
            )
            assert 0 < await raw.pttl(key) <= (86_400 - time.time() % 86_400) * 1000 + 1000
        finally:
            await raw.aclose()


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("claude-sonnet-5-5", "claude-sonnet-5-5"),
        ("claude-sonnet-5-5-20261001", "claude-sonnet-5-5"),
        ("anthropic.claude-opus-5-5-v1:0", "claude-opus-5-5"),
        ("us.anthropic.claude-haiku-5-5-20261001-v1:0", "claude-haiku-5-5"),
        ("global.anthropic.claude-sonnet-5-5", "claude-sonnet-5-5"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-fable-5-2-v1:0",
            "claude-fable-5-2",
        ),
        ("claude-fable-5-1@20260601", "claude-fable-5-1"),
    ],
)
def test_every_backends_model_id_finds_its_price(model, base):
    assert base_model(model) == base
    assert prices_for(model) is PRICES[base]


def test_an_opaque_model_id_has_no_price():
    assert prices_for("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3") is None
    assert prices_for("claude-sonnet-4-6") is None
    given = Prices.of(3, 15)
    assert prices_for("claude-sonnet-4-6", given) is given


def test_cache_prices_follow_input_unless_given():
    assert parse_prices("input=3,output=15") == Prices.of(3, 15)
    assert parse_prices("input=3,output=15,cache_read=0.5,cache_write=4") == Prices(3, 15, 0.5, 4, 6)
    assert parse_prices("input=2,output=10,cache_write_1h=5") == Prices(2, 10, 0.2, 2.5, 5)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("input=3", "output required"),
        ("input=3,output=lots", "output must be a number"),
        ("input=3,output=15,discount=2", "expected name=price pairs"),
        ("input=-1,output=15", "between 0 and 10000"),
        ("input=nan,output=15", "between 0 and 10000"),
        ("3,15", "expected name=price pairs"),
    ],
)
def test_bad_prices_stop_the_bot_in_one_line_naming_the_variable(slack, claude, raw, says):
    with pytest.raises(ConfigError) as error:
        Settings.from_env(bot_env(slack, claude, CLAUDE_PRICES=raw))
    message = str(error.value)
    assert message.startswith("CLAUDE_PRICES: ") and says in message and "\n" not in message
