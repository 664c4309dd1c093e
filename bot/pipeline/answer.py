"""The one path every Ask takes: read the conversation, apply the policy, ask Claude, reply, forget."""

from __future__ import annotations

import logging
import time

from anthropic import AsyncAnthropic
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.logs import describe_exception
from bot.pipeline.ask import Ask, Privately
from bot.pipeline.claude import ClaudeError, ask_claude
from bot.pipeline.context import ContextUnavailable, look_up_names, read_conversation
from bot.pipeline.reply import ReplyFailed, finish, post_error, post_reply
from bot.pipeline.retention import build_prompt, opaque_user_id, people_to_name

log = logging.getLogger(__name__)


class Answerer:
    """`await answerer(ask)` answers one Ask; it never raises and keeps nothing afterwards."""

    def __init__(self, settings: Settings, slack: AsyncWebClient, claude: AsyncAnthropic) -> None:
        self._settings = settings
        self._slack = slack
        self._claude = claude

    async def __call__(self, ask: Ask) -> None:
        started = time.perf_counter()
        try:
            await self._answer(ask, started)
        except (ContextUnavailable, ClaudeError, ReplyFailed) as exc:
            log.warning("request=%s surface=%s failed: %s", ask.request_id, ask.surface, exc)
            await post_error(self._slack, ask.reply_to, exc)
        except Exception as exc:  # never a traceback in Slack; only the class and frames in the log
            log.error(
                "request=%s surface=%s failed: %s", ask.request_id, ask.surface, describe_exception(exc)
            )
            await post_error(self._slack, ask.reply_to, exc)

    async def _answer(self, ask: Ask, started: float) -> None:
        settings = self._settings
        conversation = await read_conversation(
            self._slack, ask, dm_window_seconds=settings.dm_context_hours * 3600
        )
        names = await look_up_names(self._slack, people_to_name(conversation, ask.bot))
        prompt = build_prompt(
            conversation,
            bot=ask.bot,
            names=names,
            system=settings.system_prompt,
            budget_tokens=settings.context_budget_tokens,
        )
        del conversation, names  # only the prompt is needed from here on
        read_at = time.perf_counter()
        answer = await ask_claude(
            self._claude,
            prompt,
            model=settings.claude_model,
            max_tokens=settings.claude_max_tokens,
            user_hash=opaque_user_id(ask.team_id, ask.user_id),
        )
        claude_at = time.perf_counter()
        markdown = finish(answer.text, answer.stop_reason)
        if isinstance(ask.reply_to, Privately):  # an ephemeral answer shows its question, for the asker alone
            markdown = f"{_quote(ask.message.text)}\n\n{markdown}"
        pieces = await post_reply(self._slack, ask.reply_to, markdown)
        log.info(
            "request=%s surface=%s answered messages=%d omitted=%d turns=%d input_tokens=%d output_tokens=%d "
            "answer_chars=%d pieces=%d stop=%s read_ms=%.0f claude_ms=%.0f total_ms=%.0f",
            ask.request_id,
            ask.surface,
            prompt.kept,
            prompt.omitted,
            len(prompt.messages),
            answer.input_tokens,
            answer.output_tokens,
            len(answer.text),
            pieces,
            answer.stop_reason,
            (read_at - started) * 1000,
            (claude_at - read_at) * 1000,
            (time.perf_counter() - started) * 1000,
        )


def _quote(text: str, limit: int = 300) -> str:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return "\n".join(f"> {line}" for line in shown.splitlines() or [""])
