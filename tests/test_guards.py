"""What the bot never answers, and redeliveries answered once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot.guards import RecentIds
from bot.state import MemoryState, StateKeys
from tests.conftest import BOT_USER, CHANNEL, DM, direct_message, mention

PAYLOADS = Path(__file__).parent / "payloads"  # copies of shared/reference/payloads


def payload_event(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())["event"]


async def answered_only(bot, marker: str) -> None:
    """Send a plain DM `marker` after the events under test; once it is answered, earlier ones are done."""
    await bot.send_event(direct_message(marker, ts="999.000001"))
    await bot.finished()
    assert [r.body["messages"][-1]["content"] for r in bot.claude.requests] == [f"Alice: {marker}"]
    assert len(bot.slack.calls_to("chat.postMessage")) == 1


@pytest.mark.parametrize(
    "event",
    [
        payload_event("bot_message.json"),
        payload_event("message_changed.json"),
        direct_message("deleted", ts="1.1", subtype="message_deleted"),
        direct_message("joined", ts="1.2", subtype="channel_join"),
        direct_message("from another app", ts="1.3", bot_id="B0OTHER"),
        direct_message("my own words", ts="1.4", user=BOT_USER),
        mention("<@U0BOT> from a bot", ts="1.5") | {"bot_id": "B0OTHER"},
        {"type": "app_home_opened", "user": "U0ALICE", "channel": DM, "tab": "home"},
        {"type": "reaction_added", "user": "U0ALICE", "reaction": "thumbsup"},
        {"type": "message", "channel": DM},
        {"no_type": True},
    ],
    ids=[
        "bot_message",
        "message_changed",
        "message_deleted",
        "channel_join",
        "bot_id",
        "own_user",
        "mention_by_bot",
        "app_home_opened",
        "unknown_event",
        "message_without_text",
        "malformed",
    ],
)
async def test_ignored_events_are_acknowledged_and_not_answered(bot, event):
    await bot.send_event(event)  # returns only once acked
    await answered_only(bot, "the only question")
    reads = [call for call in bot.slack.calls if call.method.startswith(("conversations.", "users."))]
    assert reads and {call.params.get("channel", DM) for call in reads} == {DM}  # only the marker's DM


@pytest.mark.parametrize(
    "retry", [{"retry_attempt": 1, "retry_reason": "http_timeout"}, {}], ids=["with_retry_fields", "without"]
)
async def test_redelivered_event_is_answered_once(bot, retry):
    event = mention("<@U0BOT> once please", ts="10.000001", channel=CHANNEL)
    await bot.send_event(event, event_id="Ev0SAME")
    await bot.send_event(event, event_id="Ev0SAME", **retry)
    await bot.send_event(direct_message("marker", ts="999.000001"))

    await bot.finished(count=2)
    assert len(bot.claude.requests) == 2
    assert bot.replies(CHANNEL, "10.000001") == ["Hello from fake Claude."]


async def test_event_ids_are_forgotten_after_their_time_limit():
    recent = RecentIds(MemoryState(), StateKeys("secret"), "event", ttl_seconds=0.05)
    assert await recent.first_time("Ev1")
    assert not await recent.first_time("Ev1")
    await asyncio.sleep(0.1)
    assert await recent.first_time("Ev1")


async def test_event_ids_are_bounded_in_number():
    recent = RecentIds(MemoryState(max_keys=2), StateKeys("secret"), "event", ttl_seconds=60)
    for event_id in ("Ev1", "Ev2", "Ev3"):
        assert await recent.first_time(event_id)
    assert await recent.first_time("Ev1")  # the oldest made room
    assert not await recent.first_time("Ev3")
