"""Redaction end to end: what a thread says reaches fake Claude with secrets, and chosen personal data,
replaced by placeholders; the log says how many were replaced, never what."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, mention, said

# Token-shaped and plainly fake.
SLACK_TOKEN = "xoxb-" + "1" * 12 + "-" + "2" * 13 + "-" + "FAKEfake" * 3
EMAIL = "bob.builder@example.com"
QUESTION = f"<@{BOT_USER}> did Bob just paste a secret?"


def settings(**overrides: str):
    """Run the test with these settings for the `bot` fixture."""
    return pytest.mark.parametrize("bot_overrides", [overrides], indirect=True)


async def ask_about_the_paste(bot) -> str:
    """Bob pastes a token and his address in a thread, Alice asks the bot; what Claude was sent."""
    bot.slack.add_thread(
        CHANNEL,
        [
            said(
                BOB, f"Try with SLACK_BOT_TOKEN={SLACK_TOKEN} and tell <mailto:{EMAIL}|{EMAIL}>", "900.000001"
            ),
            said(ALICE, QUESTION, "900.000002"),
        ],
    )
    await bot.send_event(mention(QUESTION, ts="900.000002", thread_ts="900.000001"))
    await bot.finished()
    [request] = bot.claude.requests
    return str(request.body["messages"])  # not the system prompt: it names "[slack token 1]" as an example


async def test_a_slack_token_in_the_thread_reaches_claude_as_a_placeholder(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")

    sent = await ask_about_the_paste(bot)

    assert SLACK_TOKEN not in sent
    assert "SLACK_BOT_TOKEN=[slack token 1]" in sent
    assert (
        f"<mailto:{EMAIL}|{EMAIL}>" in sent
    )  # personal data is sent unless REDACT_PERSONAL_DATA says otherwise
    assert "{'slack token': 1}" in caplog.text
    assert SLACK_TOKEN not in caplog.text


@settings(REDACT_PERSONAL_DATA="email")
async def test_an_email_address_is_replaced_too_when_personal_data_redaction_names_it(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot")

    sent = await ask_about_the_paste(bot)

    assert SLACK_TOKEN not in sent and EMAIL not in sent
    assert "SLACK_BOT_TOKEN=[slack token 1] and tell <mailto:[email 1]|[email 1]>" in sent
    assert "{'slack token': 1, 'email': 1}" in caplog.text
    assert EMAIL not in caplog.text


@settings(REDACT_SECRETS="off")
async def test_with_redaction_off_the_thread_reaches_claude_as_written(bot):
    sent = await ask_about_the_paste(bot)

    assert f"SLACK_BOT_TOKEN={SLACK_TOKEN}" in sent
    assert "[slack token" not in sent
    assert "placeholders" not in bot.claude.requests[0].body["system"]


async def test_the_next_question_in_a_thread_sends_claude_the_earlier_turns_unchanged(bot):
    """Placeholders are numbered oldest first, so a new secret in a later message renumbers nothing."""
    older, newer = SLACK_TOKEN, SLACK_TOKEN.replace("FAKEfake", "fakeFAKE")
    question = f"<@{BOT_USER}> which token is live?"
    thread = bot.slack.add_thread(
        CHANNEL,
        [
            said(BOB, f"old one: {SLACK_TOKEN}", "900.000001"),
            said(ALICE, question, "900.000002"),
        ],
    )
    await bot.send_event(mention(question, ts="900.000002", thread_ts="900.000001"))
    await bot.finished()
    follow_up = f"<@{BOT_USER}> and this new one? {newer} (not {older})"
    answered_ts = thread[-1]["ts"]  # the bot's answer, posted into the thread
    later = f"{float(answered_ts) + 1:.6f}"
    thread.append(said(ALICE, follow_up, later) | {"thread_ts": "900.000001"})
    await bot.send_event(mention(follow_up, ts=later, thread_ts="900.000001"))
    await bot.finished(count=2)

    first, second = (request.body["messages"] for request in bot.claude.requests)
    assert second[: len(first)] == first
    assert first[0]["content"].startswith("Bob Builder: old one: [slack token 1]")
    assert second[-1]["content"].endswith("and this new one? [slack token 2] (not [slack token 1])")
