"""Slack surfaces: each turns its payload into an Ask and hands it to the one pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bot.pipeline.ask import Ask

Answer = Callable[[Ask], Awaitable[None]]


def event_fields(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str, str, str] | None:
    """The event and its user, channel, ts and text, when all are present strings and text is not blank."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return None
    fields = event.get("user"), event.get("channel"), event.get("ts"), event.get("text")
    if not all(isinstance(field, str) and field for field in fields) or not str(fields[3]).strip():
        return None
    user, channel, ts, text = (str(field) for field in fields)
    return event, user, channel, ts, text
