"""Slash command: `/claude <question>` becomes an Ask answered privately; alone or `help`, the usage."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.pipeline.ask import Ask, BotIdentity, Origin, Privately, SlackMessage
from bot.surfaces import Answer, enterprise_of, present

HELP_WORDS = frozenset({"", "help", "?", "-h", "--help"})
POLICY_WORDS = frozenset({"policy", "privacy"})
WORKING = "Asking Claude… the answer will appear here, visible only to you."


def usage(command: str) -> str:
    return (
        f"*{command} <question>* asks Claude and shows the answer only to you. "
        "It sees only your question, not the channel.\n"
        "To ask about a thread, mention me in it; to chat, send me a direct message.\n"
        f"I keep nothing: conversations live only in Slack. *{command} policy* says what I send and to whom."
    )


def to_ask(command: Mapping[str, Any], bot: BotIdentity) -> Ask | None:
    text, user, response_url = command.get("text"), command.get("user_id"), command.get("response_url")
    if not (isinstance(text, str) and isinstance(user, str) and isinstance(response_url, str)):
        return None
    question = text.strip()
    if question.lower() in HELP_WORDS | POLICY_WORDS:
        return None
    trigger_id = command.get("trigger_id")
    team, channel = present(command.get("team_id")), present(command.get("channel_id"))
    return Ask(
        request_id=trigger_id if isinstance(trigger_id, str) else "slash_command",
        surface="slash_command",
        origin=Origin(user, team, enterprise_id=enterprise_of(command), channel_id=channel),
        message=SlackMessage(ts="0", text=question, user=user),
        history=None,  # slash commands have no thread; the question is the whole conversation
        reply_to=Privately(response_url),
        bot=bot,
    )


def register(app: AsyncApp, answer: Answer, command_name: str, policy: Callable[[str | None], str]) -> None:
    """`policy(channel_id)` is what `<command> policy` shows there: what is sent, kept and to whom."""

    @app.command(command_name)
    async def on_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
        if str(command.get("text") or "").strip().lower() in POLICY_WORDS:
            channel = command.get("channel_id")
            # Anyone may read it: nothing is read or sent.
            await ack(text=policy(channel if isinstance(channel, str) else None))
            return
        ask = to_ask(command, BotIdentity(context.bot_user_id, context.bot_id))
        if ask is None:
            await ack(text=usage(command_name))
            return
        await ack(text=WORKING)
        await answer(ask)
