"""Slack surfaces: each turns its payload into an Ask and hands it to the one pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.pipeline.ask import Ask, BotIdentity, History, Progress, ReplyTarget, SlackMessage

Answer = Callable[[Ask], Awaitable[None]]
ToAsk = Callable[[Mapping[str, Any], BotIdentity], Ask | None]


def answer_event(app: AsyncApp, event_type: str, to_ask: ToAsk, answer: Answer) -> None:
    """Listen for `event_type`; answer the Ask it translates to, if any (Bolt has acked already)."""

    async def on_event(body: dict[str, Any], context: AsyncBoltContext) -> None:
        ask = to_ask(body, BotIdentity(context.bot_user_id, context.bot_id))
        if ask is not None:
            await answer(ask)

    app.event(event_type)(on_event)


def event_ask(
    body: Mapping[str, Any],
    event: Mapping[str, Any],
    channel: str,
    message: SlackMessage,
    *,
    surface: str,
    bot: BotIdentity,
    history: History,
    reply_to: ReplyTarget,
    progress: Progress,
    viewing_channel: str | None = None,
) -> Ask:
    """An Ask from an Events API payload: who asked, from which workspace and org, read alike for
    every event surface; the surface says what to read, where to answer and how to show progress."""
    return Ask(
        request_id=str(body.get("event_id") or message.ts),
        surface=surface,
        team_id=str(body.get("team_id") or event.get("team") or ""),
        user_id=message.user or "",
        message=message,
        history=history,
        reply_to=reply_to,
        bot=bot,
        user_team_id=user_team(body, event),
        enterprise_id=enterprise_of(body),
        channel_id=channel,
        progress=progress,
        viewing_channel=viewing_channel,
    )


def user_team(body: Mapping[str, Any], event: Mapping[str, Any]) -> str:
    """The asker's own workspace: in Slack Connect channels it is not the one that installed the bot."""
    for team in (event.get("user_team"), event.get("team"), body.get("team_id")):
        if isinstance(team, str) and team.startswith("T"):
            return team
    return ""


def enterprise_of(body: Mapping[str, Any]) -> str:
    """The Enterprise Grid org a payload came through, or "" outside Enterprise Grid."""
    enterprise, team = body.get("enterprise"), body.get("team")
    authorizations = body.get("authorizations")
    first = authorizations[0] if isinstance(authorizations, list) and authorizations else None
    for candidate in (
        body.get("enterprise_id"),
        enterprise.get("id") if isinstance(enterprise, Mapping) else None,
        team.get("enterprise_id") if isinstance(team, Mapping) else None,
        first.get("enterprise_id") if isinstance(first, Mapping) else None,
    ):
        if isinstance(candidate, str) and candidate.startswith("E"):
            return candidate
    return ""


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
