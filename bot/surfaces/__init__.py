"""Slack surfaces: each turns its payload into an Ask and hands it to the one pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.pipeline.ask import Ask, BotIdentity, History, Origin, Progress, ReplyTarget, SlackMessage
from bot.pipeline.context import file_refs

Answer = Callable[[Ask], Awaitable[None]]
ToAsk = Callable[[Mapping[str, Any], BotIdentity], Ask | None]


def answer_event(app: AsyncApp, event_type: str, to_ask: ToAsk, answer: Answer) -> None:
    """Listen for `event_type`; answer the Ask it translates to, if any (Bolt has acked already)."""

    async def on_event(body: dict[str, Any], context: AsyncBoltContext) -> None:
        ask = to_ask(body, BotIdentity(context.bot_user_id, context.bot_id))
        if ask is not None:
            await answer(ask)

    app.event(event_type)(on_event)


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A person's message from an Events API payload, read alike for every event surface: who asked
    where, and what they wrote; `event` keeps what only one surface reads (thread_ts, channel_type)."""

    event: Mapping[str, Any]
    request_id: str
    origin: Origin
    channel: str
    message: SlackMessage

    def ask(
        self,
        surface: str,
        bot: BotIdentity,
        *,
        history: History,
        reply_to: ReplyTarget,
        progress: Progress,
        agent_thread: bool = False,
    ) -> Ask:
        """The Ask, once the surface has said what to read, where to answer and how to show progress."""
        return Ask(
            request_id=self.request_id,
            surface=surface,
            origin=self.origin,
            message=self.message,
            history=history,
            reply_to=reply_to,
            bot=bot,
            progress=progress,
            agent_thread=agent_thread,
        )


def message_event(body: Mapping[str, Any], *, with_files: bool = False) -> MessageEvent | None:
    """The event's message, when its user, channel, ts and text are present strings and text is not blank."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return None
    user, channel, ts, text = event.get("user"), event.get("channel"), event.get("ts"), event.get("text")
    if not (_filled(user) and _filled(channel) and _filled(ts) and _filled(text) and text.strip()):
        return None
    origin = Origin(
        user_id=user,
        team_id=present(body.get("team_id") or event.get("team")),
        user_team_id=user_team(body, event),
        enterprise_id=enterprise_of(body),
        channel_id=channel,
    )
    files = file_refs(event.get("files")) if with_files else ()
    message = SlackMessage(ts=ts, text=text, user=user, files=files)
    return MessageEvent(event, str(body.get("event_id") or ts), origin, channel, message)


def _filled(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def present(value: object) -> str | None:
    """A payload's id as text, or None when it is missing or empty."""
    return str(value) if value else None


def user_team(body: Mapping[str, Any], event: Mapping[str, Any]) -> str | None:
    """The asker's own workspace: in Slack Connect channels it is not the one that installed the bot."""
    for team in (event.get("user_team"), event.get("team"), body.get("team_id")):
        if isinstance(team, str) and team.startswith("T"):
            return team
    return None


def enterprise_of(body: Mapping[str, Any]) -> str | None:
    """The Enterprise Grid org a payload came through, or None outside Enterprise Grid."""
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
    return None
