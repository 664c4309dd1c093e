"""The one path every Ask takes: show progress, read the conversation, apply the policy, stream
Claude's answer into Slack, forget."""

from __future__ import annotations

import asyncio
import logging
import time

from anthropic import AsyncAnthropic
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.logs import describe_exception
from bot.pipeline.ask import Ask, InConversation, Privately, SlackMessage
from bot.pipeline.claude import ClaudeError, ask_claude
from bot.pipeline.context import ContextUnavailable, look_up_names, read_channel, read_conversation
from bot.pipeline.progress import clear_progress, name_thread, show_progress
from bot.pipeline.reply import ReplyFailed, StoppedByReader, open_writer, stop_note
from bot.pipeline.retention import asks_about_channel, build_prompt, opaque_user_id, people_to_name

log = logging.getLogger(__name__)

EMPTY_ANSWER = "_(Claude returned an empty answer.)_"


class Answerer:
    """`await answerer(ask)` answers one Ask; it never raises and keeps nothing afterwards.

    While an answer is being written in a thread, its task is known by (channel, thread) so that the
    reader's Stop can cancel it: ids only, forgotten when the answer ends.
    """

    def __init__(self, settings: Settings, slack: AsyncWebClient, claude: AsyncAnthropic) -> None:
        self._settings = settings
        self._slack = slack
        self._claude = claude
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}

    def stop(self, channel: str, thread_ts: str) -> bool:
        """Cancel the answer being written in that thread, if there is one."""
        task = self._running.get((channel, thread_ts))
        if task is None:
            return False
        task.cancel()
        return True

    async def __call__(self, ask: Ask) -> None:
        key = _thread_key(ask)
        task = asyncio.current_task()
        if key is not None and task is not None:
            self._running[key] = task
        try:
            await self._answer(ask)
        finally:
            if key is not None and self._running.get(key) is task:
                del self._running[key]

    async def _answer(self, ask: Ask) -> None:
        settings, slack = self._settings, self._slack
        started = time.perf_counter()
        preface = _quote(ask.message.text) + "\n\n" if isinstance(ask.reply_to, Privately) else ""
        writer = open_writer(slack, ask, preface)
        stage = "read"
        try:
            conversation, viewed, _ = await asyncio.gather(
                read_conversation(slack, ask, dm_window_seconds=settings.dm_context_hours * 3600),
                self._read_viewed_channel(ask),
                show_progress(slack, ask.progress),
            )
            names = await look_up_names(slack, people_to_name([*conversation, *viewed], ask.bot))
            prompt = build_prompt(
                conversation,
                bot=ask.bot,
                names=names,
                system=settings.system_prompt,
                budget_tokens=settings.context_budget_tokens,
                viewed=viewed,
            )
            if (
                sum(not ask.bot.wrote(message) for message in conversation) == 1
            ):  # the thread's first question
                await name_thread(slack, ask.progress, ask.message.text)
            del conversation, viewed, names  # only the prompt is needed from here on
            stage, read_at = "claude", time.perf_counter()
            answer = await ask_claude(
                self._claude,
                prompt,
                model=settings.claude_model,
                max_tokens=settings.claude_max_tokens,
                user_hash=opaque_user_id(ask.team_id, ask.user_id),
                on_text=writer.append,
            )
            stage = "reply"
            await writer.finish(stop_note(answer.stop_reason) or (None if writer.chars else EMPTY_ANSWER))
            log.info(
                "request=%s surface=%s answered messages=%d omitted=%d turns=%d input_tokens=%d "
                "output_tokens=%d answer_chars=%d posts=%d stop=%s read_ms=%.0f total_ms=%.0f",
                ask.request_id,
                ask.surface,
                prompt.kept,
                prompt.omitted,
                len(prompt.messages),
                answer.input_tokens,
                answer.output_tokens,
                writer.chars,
                writer.posted(),
                answer.stop_reason,
                (read_at - started) * 1000,
                (time.perf_counter() - started) * 1000,
            )
        except StoppedByReader:
            log.info("request=%s surface=%s stopped by the reader at %s", ask.request_id, ask.surface, stage)
        except asyncio.CancelledError:
            log.info("request=%s surface=%s cancelled at %s", ask.request_id, ask.surface, stage)
            await writer.interrupt(None)
            raise
        except (ContextUnavailable, ClaudeError, ReplyFailed) as exc:
            log.warning("request=%s surface=%s failed at %s: %s", ask.request_id, ask.surface, stage, exc)
            await writer.interrupt(exc)
        except Exception as exc:  # never a traceback in Slack; only the class and frames in the log
            log.error(
                "request=%s surface=%s failed: %s", ask.request_id, ask.surface, describe_exception(exc)
            )
            await writer.interrupt(exc)
        finally:
            await clear_progress(slack, ask.progress)

    async def _read_viewed_channel(self, ask: Ask) -> list[SlackMessage]:
        """The channel the user is viewing is read only when the question is about it."""
        if ask.viewing_channel is None or not asks_about_channel(ask.message.text, ask.viewing_channel):
            return []
        return await read_channel(self._slack, ask.viewing_channel)


def _thread_key(ask: Ask) -> tuple[str, str] | None:
    match ask.reply_to:
        case InConversation(channel, thread_ts) if thread_ts is not None:
            return channel, thread_ts
    return None


def _quote(text: str, limit: int = 300) -> str:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return "\n".join(f"> {line}" for line in shown.splitlines() or [""])
