"""The manifest asks for exactly what the bot uses, and subscribes to no channel-wide message events."""

from __future__ import annotations

from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yml"


def listed_under(heading: str) -> set[str]:
    """The `- item` lines directly under `heading:` (the manifest is plain YAML lists)."""
    lines = MANIFEST.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{heading}:")
    items = set()
    for line in lines[start + 1 :]:
        stripped = line.split("#")[0].strip()
        if not stripped.startswith("- "):
            break
        items.add(stripped[2:].strip())
    return items


def test_events_are_invocations_only_and_no_channel_wide_message_events():
    assert listed_under("bot_events") == {
        "app_mention",
        "message.im",
        "app_home_opened",
        "agent_session_stopped",
    }


def test_scopes_are_exactly_the_ones_used():
    assert listed_under("bot") == {
        "app_mentions:read",
        "channels:history",
        "groups:history",
        "mpim:history",
        "im:history",
        "chat:write",
        "assistant:write",
        "reactions:write",
        "commands",
        "users:read",
        "files:read",
    }


def test_socket_mode_is_on_and_the_command_is_the_default():
    text = MANIFEST.read_text()
    assert "socket_mode_enabled: true" in text
    assert "- command: /claude" in text
    assert "callback_id: ask_about_thread" in text and "callback_id: summarize_thread" in text
    assert "agent_view:" in text
