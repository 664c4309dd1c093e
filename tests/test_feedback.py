"""Feedback: an answer Claude finished ends with Slack's own thumbs up and down, on the final
chat.stopStream of a streamed answer or on the last message of a posted one (its text then also in
section blocks); a stopped, failed or empty answer has none, and a refusal of the blocks never costs the
answer. A click is acknowledged, thanked privately to the person who clicked, and counted by its value;
nothing else about it is kept or logged. A malformed click is acknowledged and ignored."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.pipeline.reply import FEEDBACK_ACTION, MESSAGE_LIMIT, SECTION_LIMIT, STREAM_LIMIT, feedback_block
from bot.surfaces.feedback import THANKS
from tests.conftest import ALICE, BOB, CHANNEL, DM, direct_message, mention, said
from tests.test_manifest import load_manifest

CANARY = "Wombat-canary-7304"
ANSWER = f"Use a mutex here, {CANARY}: it keeps the two writers apart."


def now_ts() -> str:
    return f"{time.time():.6f}"


def feedback_counts() -> dict[str, float]:
    """This process's feedback counters, as /metrics shows them."""
    text = generate_latest(metrics.REGISTRY).decode()
    return {
        sample.labels["value"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "claude_slack_feedback_total"
    }


def has_buttons(blocks: object) -> bool:
    return isinstance(blocks, list) and any(block.get("type") == "context_actions" for block in blocks)


def sections(blocks: list[dict[str, Any]]) -> list[str]:
    return [block["text"]["text"] for block in blocks if block["type"] == "section"]


def no_buttons_anywhere(bot) -> bool:
    sent = ("chat.postMessage", "chat.update", "chat.stopStream")
    return not any(has_buttons(call.params.get("blocks")) for call in bot.slack.calls if call.method in sent)


# ------------------------------------------------------------------------------------------ the buttons


async def test_a_streamed_thread_answer_ends_with_the_feedback_buttons_on_stop_stream(bot):
    bot.claude.reply(ANSWER)
    await bot.send_event(mention("<@U0BOT> which lock?", ts="1.000001"))

    await bot.finished()
    [stop] = bot.slack.calls_to("chat.stopStream")
    assert stop.params["blocks"] == [feedback_block()]
    [element] = feedback_block()["elements"]
    assert (element["type"], element["action_id"]) == ("feedback_buttons", FEEDBACK_ACTION)
    values = (element["positive_button"]["value"], element["negative_button"]["value"])
    assert values == ("positive", "negative")
    [message] = bot.slack.bot_messages(CHANNEL, "1.000001")
    assert message["text"] == ANSWER and message["blocks"] == [feedback_block()]


async def test_a_long_streamed_answer_has_the_buttons_under_its_last_message_only(bot):
    answer = "\n\n".join(f"Paragraph {n}. " + "lorem ipsum " * 60 for n in range(30))
    assert len(answer) > 2 * STREAM_LIMIT
    bot.claude.chunk_chars = 500
    bot.claude.reply(answer)
    await bot.send_event(mention("<@U0BOT> everything", ts="2.000001"))

    await bot.finished()
    stops = bot.slack.calls_to("chat.stopStream")
    assert len(stops) >= 3
    assert [has_buttons(stop.params.get("blocks")) for stop in stops] == [False] * (len(stops) - 1) + [True]
    messages = bot.slack.bot_messages(CHANNEL, "2.000001")
    assert [has_buttons(m.get("blocks")) for m in messages] == [False] * (len(messages) - 1) + [True]


async def test_a_posted_thread_answer_ends_with_the_buttons_and_its_text_in_section_blocks(bot):
    bot.slack.refuse_streaming()
    bot.claude.reply("**Bold** start, then [the docs](https://example.com) and `a < b`.")
    await bot.send_event(mention("<@U0BOT> go", ts="3.000001"))

    await bot.finished()
    [message] = bot.slack.bot_messages(CHANNEL, "3.000001")
    text = "*Bold* start, then <https://example.com|the docs> and `a &lt; b`."
    assert message["text"] == text  # still there: notifications and clients without blocks show it
    assert message["blocks"][-1] == feedback_block()
    assert sections(message["blocks"]) == [text]  # Slack shows blocks instead of text: the answer is in them
    assert all(b["text"]["verbatim"] for b in message["blocks"] if b["type"] == "section")
    [post] = bot.slack.calls_to("chat.postMessage")
    assert "blocks" not in post.params  # the first words go out without them; the last write adds them


async def test_a_top_level_dm_answer_ends_with_the_buttons_too(bot):
    bot.claude.reply(ANSWER)
    await bot.send_event(direct_message("which lock?", ts=now_ts()))

    await bot.finished()
    [message] = bot.slack.bot_messages(DM)
    assert message["text"] == ANSWER
    assert message["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": ANSWER, "verbatim": True}},
        feedback_block(),
    ]


async def test_a_posted_answer_longer_than_a_section_is_in_several_sections_within_slacks_limits(bot):
    answer = "\n\n".join(f"Paragraph {n}. " + "word " * 60 for n in range(11))
    assert SECTION_LIMIT < len(answer) < MESSAGE_LIMIT
    bot.claude.reply(answer)
    await bot.send_event(direct_message("explain", ts=now_ts()))

    await bot.finished()
    [message] = bot.slack.bot_messages(DM)
    texts = sections(message["blocks"])
    assert len(texts) == 2 and all(len(text) <= SECTION_LIMIT for text in texts)
    assert " ".join(texts).split() == message["text"].split() == answer.split()


async def test_a_long_posted_answer_has_the_buttons_on_its_last_message_only(bot):
    answer = "\n\n".join(f"Paragraph {n}. " + "word " * 60 for n in range(30))
    bot.claude.chunk_chars = 400
    bot.claude.reply(answer)
    await bot.send_event(direct_message("explain everything", ts=now_ts()))

    await bot.finished()
    messages = bot.slack.bot_messages(DM)
    assert len(messages) >= 3
    assert [has_buttons(m.get("blocks")) for m in messages] == [False] * (len(messages) - 1) + [True]
    last = messages[-1]
    assert all(len(text) <= SECTION_LIMIT for text in sections(last["blocks"]))
    assert " ".join(sections(last["blocks"])).split() == last["text"].split()
    assert " ".join(m["text"] for m in messages).split() == answer.split()


# -------------------------------------------------------------------------- answers that end otherwise


async def stop_in_agent_thread(bot, thread_ts: str, *, streamed: bool) -> None:
    full = "a long answer nobody will read " * 40
    if not streamed:
        bot.slack.refuse_streaming()
    bot.claude.chunk_chars = 5
    bot.claude.chunk_delay = 0.05
    bot.claude.reply(full)
    bot.slack.add_thread(DM, [said(ALICE, "Tell me everything", thread_ts)])
    await bot.send_event(direct_message("Tell me everything", ts=thread_ts, thread_ts=thread_ts))
    if streamed:
        [append, *_] = await bot.slack.wait_for("chat.appendStream")
        streaming = [append.params["ts"]]
    else:
        await bot.slack.wait_for("chat.postMessage")
        streaming = []
    stopped = bot.slack.agent_session_stopped_envelope(
        channel_id=DM, user_id=ALICE, thread_ts=thread_ts, streaming_message_ts=streaming
    )
    await bot.slack.send_envelope(stopped)
    await bot.claude.wait_for_abandoned()
    await bot.slack.wait_for("assistant.threads.setStatus", count=2)  # the status is cleared last
    await bot.pipeline.wait_idle()


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "posted"])
async def test_a_stopped_answer_has_no_buttons(bot, streamed):
    await stop_in_agent_thread(bot, "10.000001", streamed=streamed)

    [answer] = bot.slack.bot_messages(DM, "10.000001")
    assert 0 < len(answer["text"]) < len("a long answer nobody will read " * 40)
    assert no_buttons_anywhere(bot)


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "posted"])
async def test_an_answer_cut_off_by_an_error_has_no_buttons(bot, streamed):
    if not streamed:
        bot.slack.refuse_streaming()
    bot.claude.chunk_chars = 10
    bot.claude.reply("The first words arrive, and then Claude fails before the end of it.")
    bot.claude.fail_midstream(after_chunks=2)
    await bot.send_event(mention("<@U0BOT> go", ts="11.000001"))

    await bot.finished()
    [answer] = bot.slack.bot_messages(CHANNEL, "11.000001")
    assert "Cut off" in answer["text"]
    assert no_buttons_anywhere(bot)


async def test_an_empty_answer_has_no_buttons(bot):
    bot.claude.reply("")
    await bot.send_event(mention("<@U0BOT> say nothing", ts="12.000001"))

    await bot.finished()
    [answer] = bot.slack.bot_messages(CHANNEL, "12.000001")
    assert "empty answer" in answer["text"]
    assert no_buttons_anywhere(bot)


async def test_a_stream_whose_buttons_slack_refuses_is_still_stopped(bot):
    bot.slack.fail("chat.stopStream", error="invalid_blocks")
    bot.claude.reply(ANSWER)
    await bot.send_event(mention("<@U0BOT> go", ts="13.000001"))

    await bot.finished()
    refused, stopped = bot.slack.calls_to("chat.stopStream")
    assert has_buttons(refused.params["blocks"]) and "blocks" not in stopped.params
    [message] = bot.slack.bot_messages(CHANNEL, "13.000001")
    assert message["text"] == ANSWER
    assert not bot.slack.message(CHANNEL, message["ts"])["streaming"]  # not left open by the refusal


async def test_a_posted_answer_whose_buttons_slack_refuses_is_still_shown_whole(bot):
    bot.slack.refuse_streaming()
    bot.slack.fail("chat.update", error="invalid_blocks")
    bot.claude.reply(ANSWER)
    await bot.send_event(mention("<@U0BOT> go", ts="14.000001"))

    await bot.finished()
    *_, refused, shown = bot.slack.calls_to("chat.update")
    assert has_buttons(refused.params["blocks"]) and "blocks" not in shown.params
    [message] = bot.slack.bot_messages(CHANNEL, "14.000001")
    assert message["text"] == ANSWER


async def test_a_private_answer_has_no_buttons(bot):
    bot.claude.reply(ANSWER)
    await bot.send_command("which lock?")

    [response] = await bot.slack.wait_for("response_url")  # ephemeral: no buttons to click on it
    await bot.pipeline.wait_idle()
    assert CANARY in response.params["text"] and "blocks" not in response.params
    assert no_buttons_anywhere(bot)


# ---------------------------------------------------------------------------------------------- clicks


async def answer_in_thread(bot, thread_ts: str) -> dict[str, Any]:
    bot.claude.reply(ANSWER)
    await bot.send_event(mention("<@U0BOT> which lock?", ts=thread_ts))
    await bot.finished()
    [message] = bot.slack.bot_messages(CHANNEL, thread_ts)
    return message


def sent(call) -> dict[str, Any]:
    """What a call said, without the team_id Bolt's client adds to every call."""
    return {name: value for name, value in call.params.items() if name != "team_id"}


async def click(bot, envelope: dict[str, Any]) -> dict[str, Any]:
    await bot.slack.send_envelope(envelope)
    return await bot.slack.wait_for_ack(envelope["envelope_id"])


async def test_a_click_is_acknowledged_thanked_privately_to_the_clicker_and_counted(bot, caplog):
    message = await answer_in_thread(bot, "20.000001")
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="bot")
    before = feedback_counts()

    up = bot.slack.feedback_click_envelope(channel_id=CHANNEL, ts=message["ts"], user_id=BOB)
    assert await click(bot, up) == {"envelope_id": up["envelope_id"]}
    [thanks] = await bot.slack.wait_for("chat.postEphemeral")
    down = bot.slack.feedback_click_envelope(channel_id=CHANNEL, ts=message["ts"], positive=False)
    assert await click(bot, down) == {"envelope_id": down["envelope_id"]}
    await bot.slack.wait_for("chat.postEphemeral", count=2)

    assert sent(thanks) == {"channel": CHANNEL, "user": BOB, "thread_ts": "20.000001", "text": THANKS}
    assert bot.slack.calls_to("chat.postEphemeral")[1].params["user"] == ALICE
    after = feedback_counts()
    assert after["positive"] - before.get("positive", 0) == 1
    assert after["negative"] - before.get("negative", 0) == 1
    # Nothing about the clicks is logged but their values: not who, not where, not the answer's text.
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("bot")]
    assert logged == ["feedback positive", "feedback negative"]
    # Nor kept: the answer is as it was, and nothing else was written.
    assert bot.slack.bot_messages(CHANNEL, "20.000001") == [message]
    assert not bot.slack.calls_to("response_url") and not bot.slack.calls_to("views.open")


async def test_a_click_under_a_top_level_dm_answer_is_thanked_in_the_dm(bot):
    bot.claude.reply(ANSWER)
    await bot.send_event(direct_message("which lock?", ts=now_ts()))
    await bot.finished()
    [message] = bot.slack.bot_messages(DM)

    await click(bot, bot.slack.feedback_click_envelope(channel_id=DM, ts=message["ts"]))

    [thanks] = await bot.slack.wait_for("chat.postEphemeral")
    assert sent(thanks) == {"channel": DM, "user": ALICE, "text": THANKS}


def _malformed(envelope: dict[str, Any], name: str) -> dict[str, Any]:
    payload = envelope["payload"]
    action = payload["actions"][0]
    match name:
        case "unknown_value":
            action["value"] = "maybe"
        case "no_value":
            del action["value"]
        case "value_a_list":
            action["value"] = ["positive"]
        case "not_feedback_buttons":
            action["type"] = "button"
        case "two_actions":
            payload["actions"] = [action, dict(action)]
        case "actions_a_dict":
            payload["actions"] = action
        case "no_actions":
            payload["actions"] = []
        case "no_user":
            del payload["user"]
        case "user_without_id":
            payload["user"] = {"name": "someone"}
        case "no_channel":
            del payload["channel"]
            del payload["container"]["channel_id"]
        case "container_a_string":
            payload["container"] = "message"
            del payload["channel"]
    return envelope


MALFORMED = [
    *("unknown_value", "no_value", "value_a_list", "not_feedback_buttons", "two_actions"),
    *("actions_a_dict", "no_actions", "no_user", "user_without_id", "no_channel", "container_a_string"),
]


@pytest.mark.parametrize("name", MALFORMED)
async def test_a_malformed_click_is_acknowledged_and_ignored(bot, name):
    message = await answer_in_thread(bot, "30.000001")
    before = feedback_counts()

    odd = _malformed(bot.slack.feedback_click_envelope(channel_id=CHANNEL, ts=message["ts"]), name)
    assert await click(bot, odd) == {"envelope_id": odd["envelope_id"]}
    # A good click afterwards is taken as usual: the odd one said nothing and counted nothing.
    await click(bot, bot.slack.feedback_click_envelope(channel_id=CHANNEL, ts=message["ts"]))
    await bot.slack.wait_for("chat.postEphemeral")

    after = feedback_counts()
    assert len(bot.slack.calls_to("chat.postEphemeral")) == 1
    assert after["positive"] - before.get("positive", 0) == 1
    assert after.get("negative", 0) == before.get("negative", 0)


def test_the_manifest_turns_interactivity_on_for_the_buttons():
    assert load_manifest()["settings"]["interactivity"]["is_enabled"] is True
