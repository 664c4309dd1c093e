"""Every Socket Mode envelope is acknowledged, whatever its type and whether or not a listener takes it:
an unacked slash command or interaction shows the person a timeout, an unacked event is redelivered."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from bot.surfaces import shortcuts
from tests.conftest import ALICE, CHANNEL, mention


def envelope(kind: str, payload: Any, *, accepts_response_payload: bool = True) -> dict[str, Any]:
    return {
        "envelope_id": str(uuid.uuid4()),
        "type": kind,
        "accepts_response_payload": accepts_response_payload,
        "payload": payload,
    }


def actor() -> dict[str, Any]:
    return {
        "team": {"id": "T0TEAM", "domain": "fakeco"},
        "user": {"id": ALICE, "username": "alice", "name": "alice", "team_id": "T0TEAM"},
        "api_app_id": "A0FAKEAPP",
        "token": "fake-verification-token",
        "is_enterprise_install": False,
        "enterprise": None,
    }


def block_actions() -> dict[str, Any]:
    """A button click on a message, as in Slack's interaction payload reference."""
    return {
        "type": "block_actions",
        **actor(),
        "container": {
            "type": "message",
            "message_ts": "1600857119.015400",
            "channel_id": CHANNEL,
            "is_ephemeral": False,
        },
        "trigger_id": "1388105719492.1379717998065.9bc163894734c1f415a2c504e81dec91",
        "channel": {"id": CHANNEL, "name": "general"},
        "message": {"type": "message", "text": "Pick one", "user": "U0OTHER", "ts": "1600857119.015400"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/abc",
        "actions": [
            {
                "type": "button",
                "action_id": "time_off_balance",
                "block_id": "request_timeoff",
                "text": {"type": "plain_text", "text": "Check balance", "emoji": True},
                "value": "balance",
                "action_ts": "1600857124.540371",
            }
        ],
        "state": {"values": {}},
    }


def interactive(kind: str, **fields: Any) -> dict[str, Any]:
    return envelope("interactive", {"type": kind, **actor(), **fields})


def slash_command(slack, *, without: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    frame = slack.slash_command_envelope("/claude", "what is a mutex?")
    frame["payload"].update(fields)
    for name in without:
        del frame["payload"][name]
    return frame


def unhandled_envelopes(slack) -> dict[str, dict[str, Any]]:
    """Envelopes no listener of ours takes, one of each kind Slack can send."""
    view = {"id": "V0FAKE", "type": "modal", "callback_id": "someone_elses_modal", "state": {"values": {}}}
    return {
        "command_not_ours": slash_command(slack, command="/weather"),
        "command_missing": slash_command(slack, without=("command",)),
        "command_a_number": slash_command(slack, command=42),
        "command_a_list": slash_command(slack, command=["/claude"]),
        "command_null": slash_command(slack, command=None),
        "command_empty_payload": envelope("slash_commands", {}),
        "block_actions": envelope("interactive", block_actions()),
        "global_shortcut": interactive("shortcut", callback_id="not_ours", trigger_id="1.2.global"),
        # Bolt's own listener matching fails on this one (KeyError), and answers 500
        "shortcut_without_callback_id": interactive("message_action", trigger_id="1.2.broken"),
        "message_shortcut_not_ours": interactive(
            "message_action",
            callback_id="not_ours",
            trigger_id="1.2.message",
            channel={"id": CHANNEL, "name": "general"},
            message={"type": "message", "text": "hi", "user": ALICE, "ts": "1.000001"},
            response_url="https://hooks.slack.com/app/T0TEAM/1/abc",
        ),
        "view_submission_not_ours": interactive("view_submission", trigger_id="1.2.view", view=view),
        "view_closed": interactive("view_closed", view={**view, "callback_id": shortcuts.ASK_ABOUT_THREAD}),
        "block_suggestion": interactive(
            "block_suggestion", action_id="pick", block_id="b", value="ab", container={"type": "view"}
        ),
        "interactive_message": interactive(
            "interactive_message",
            callback_id="legacy_buttons",
            actions=[{"name": "go", "type": "button", "value": "go"}],
            channel={"id": CHANNEL, "name": "general"},
            trigger_id="1.2.legacy",
        ),
        "dialog_submission": interactive("dialog_submission", callback_id="old_dialog", submission={}),
        "interactive_unknown_type": interactive("something_new"),
        "interactive_without_type": envelope("interactive", {"user": {"id": ALICE}}),
        "events_api_unknown_event": slack.events_api_envelope({"type": "reaction_added", "user": ALICE}),
        "unknown_envelope_type": envelope("something_new", {"type": "something_new"}),
    }


UNHANDLED = [
    *("command_not_ours", "command_missing", "command_a_number", "command_a_list", "command_null"),
    *("command_empty_payload", "block_actions", "global_shortcut", "shortcut_without_callback_id"),
    "message_shortcut_not_ours",
    *("view_submission_not_ours", "view_closed", "block_suggestion", "interactive_message"),
    *("dialog_submission", "interactive_unknown_type", "interactive_without_type"),
    *("events_api_unknown_event", "unknown_envelope_type"),
]


def test_every_kind_of_unhandled_envelope_is_tried(slack):
    assert sorted(unhandled_envelopes(slack)) == sorted(UNHANDLED)


@pytest.mark.parametrize("name", UNHANDLED)
async def test_an_envelope_no_listener_takes_is_acknowledged_and_nothing_is_read(bot, name):
    frame = unhandled_envelopes(bot.slack)[name]
    await bot.slack.send_envelope(frame)

    ack = await bot.slack.wait_for_ack(frame["envelope_id"])

    assert ack == {"envelope_id": frame["envelope_id"]}  # nothing shown: not ours to answer
    # A question afterwards is answered as usual, and nothing was said or opened for the envelope.
    await bot.send_event(mention("<@U0BOT> marker", ts="9.000001"))
    await bot.finished()
    assert len(bot.claude.requests) == 1
    assert not bot.slack.calls_to("response_url")
    assert not bot.slack.calls_to("views.open")


async def test_our_command_interactions_keep_their_answers_in_the_ack(bot):
    help_ack = await bot.send_command("help")
    assert "asks Claude" in help_ack["payload"]["text"]
    working = await bot.send_command("what is a mutex?")
    assert working["payload"]["text"].startswith("Asking Claude")
    await bot.slack.wait_for("response_url")


def without_payload(kind: str) -> dict[str, Any]:
    frame = envelope(kind, None)
    del frame["payload"]
    return frame


@pytest.mark.parametrize(
    "frame",
    [
        envelope("slash_commands", None),
        envelope("slash_commands", 42),
        envelope("interactive", [1, 2]),
        without_payload("slash_commands"),
        without_payload("interactive"),
    ],
    ids=["command_null", "command_a_number", "interactive_a_list", "command_none", "interactive_none"],
)
async def test_an_envelope_whose_payload_is_not_an_object_is_still_acknowledged(bot, frame):
    [ws] = [ws for ws in bot.slack.sockets if not ws.closed]
    await ws.send_str(json.dumps(frame))  # as is: the fake's send_envelope reads the payload itself

    ack = await bot.slack.wait_for_ack(frame["envelope_id"])

    assert ack == {"envelope_id": frame["envelope_id"]}
    await bot.send_event(mention("<@U0BOT> marker", ts="9.000001"))
    await bot.finished()


# Signed by Slack, yet of a shape Bolt's own middleware (before ours) fails on.
ODD_EVENTS = {
    "event_a_string": {"type": "event_callback", "event_id": "Ev0ODD1", "event": "x"},
    "event_a_list": {"type": "event_callback", "event_id": "Ev0ODD2", "event": [1]},
    "event_null": {"type": "event_callback", "event_id": "Ev0ODD3", "event": None},
    "team_id_an_object": {
        "type": "event_callback",
        "event_id": "Ev0ODD4",
        "team_id": {"id": "T0TEAM"},
        "event": {"type": "reaction_added", "user": "U0ALICE"},
    },
    "shared_channel_event_a_string": {
        "type": "event_callback",
        "event_id": "Ev0ODD5",
        "is_ext_shared_channel": True,
        "event": "x",
    },
}


def error_records(caplog) -> list[str]:
    return [f"{r.levelname} {r.name}" for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("name", list(ODD_EVENTS))
async def test_an_event_of_an_odd_shape_is_acknowledged_and_logs_no_error(bot, caplog, name):
    caplog.set_level(logging.DEBUG)
    frame = envelope("events_api", ODD_EVENTS[name])
    [ws] = [ws for ws in bot.slack.sockets if not ws.closed]
    await ws.send_str(json.dumps(frame))

    assert await bot.slack.wait_for_ack(frame["envelope_id"]) == {"envelope_id": frame["envelope_id"]}
    await bot.send_event(mention("<@U0BOT> marker", ts="9.000001"))
    await bot.finished()  # dispatched in arrival order: the odd one went first
    assert error_records(caplog) == []
    assert len(bot.claude.requests) == 1
