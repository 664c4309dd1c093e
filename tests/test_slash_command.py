"""The slash command, end to end over Socket Mode."""

from __future__ import annotations

import pytest

from bot.surfaces.slash_command import WORKING


async def test_command_acks_at_once_and_answers_privately_through_response_url(bot):
    bot.claude.reply("Here is a **polite** decline.")

    ack = await bot.send_command("draft a polite reply declining the meeting")

    assert ack["payload"]["text"] == WORKING
    [response] = await bot.slack.wait_for("response_url")
    assert response.params["response_type"] == "ephemeral"
    assert response.params["text"].startswith("> draft a polite reply declining the meeting")
    assert response.params["text"].endswith("Here is a *polite* decline.")
    assert bot.claude.requests[0].body["messages"] == [
        {"role": "user", "content": "Alice: draft a polite reply declining the meeting"}
    ]
    assert not bot.slack.calls_to("conversations.history")
    assert not bot.slack.calls_to("conversations.replies")
    assert not bot.slack.calls_to("chat.postMessage")


@pytest.mark.parametrize("text", ["", "  ", "help", "HELP"])
async def test_command_alone_or_help_shows_usage_without_calling_claude(bot, text):
    ack = await bot.send_command(text)

    assert "/claude <question>" in ack["payload"]["text"]
    await bot.send_command("now a real question")
    await bot.slack.wait_for("response_url")
    assert len(bot.claude.requests) == 1


@pytest.mark.parametrize("bot_overrides", [{"SLASH_COMMAND": "/ask"}], indirect=True)
async def test_configured_command_name_is_the_one_answered(bot):
    ack = await bot.send_command("help")
    assert "/ask <question>" in ack["payload"]["text"]
    assert bot.settings.slash_command == "/ask"


async def test_a_private_answer_that_fails_halfway_does_not_repeat_what_was_already_posted(bot):
    bot.claude.reply("\n\n".join(f"Paragraph {n}. " + "lorem ipsum " * 80 for n in range(8)))  # two posts
    url = bot.slack.response_url("cmd")
    bot.slack.fail("response_url", status=200, body='"ok"')  # the first piece goes through
    bot.slack.fail("response_url", status=500, error="internal_error")  # the second fails
    await bot.send_command("write a lot", response_url=url)
    await bot.slack.wait_for("response_url", count=2)
    await bot.pipeline.wait_idle()

    texts = [c.params["text"] for c in bot.slack.calls_to("response_url")]
    assert sum("Paragraph 0." in text for text in texts) == 1, texts
