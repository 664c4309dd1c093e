"""The order every Ask is answered in (`Pipeline`): check who asks and how often, show progress, wait for a
turn, read the conversation, build the prompt, stream Claude's answer into Slack, forget.

The surfaces hand each Ask to `await pipeline(ask)`; the steps are the modules beside this one, and the
policy they keep is `bot.pipeline`'s docstring."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Literal

from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.backends import ClaudeClient
from bot.channel_config import ChannelInstructions
from bot.config import Settings
from bot.limits import UserRateLimit, UserTokenBudget
from bot.logs import describe_exception
from bot.pipeline.access import NO_VIEWED_CHANNEL, VIEWED_CHANNEL_NOT_READ, AccessCheck, Refused
from bot.pipeline.ask import Ask, InConversation, Privately, SlackMessage, Thread
from bot.pipeline.capacity import ClaudeCapacity
from bot.pipeline.claude import ClaudeError, Source, Usage, ask_claude, opaque_user_id
from bot.pipeline.context import (
    ContextUnavailable,
    NameLookups,
    asks_about_channel,
    look_up_names,
    read_channel,
    read_conversation,
    read_linked_thread,
)
from bot.pipeline.files import fetch_files
from bot.pipeline.inflight import LOST, RESUMABLE, InFlight
from bot.pipeline.lane import ArrivalLane
from bot.pipeline.links import ANSWERED_PRIVATELY, LINK_NOT_READ, Link, find_links
from bot.pipeline.progress import (
    clear_progress,
    clear_searching,
    name_thread,
    show_progress,
    show_searching,
    show_waiting,
    show_waiting_over,
)
from bot.pipeline.prompt import Prompt, build_prompt, people_to_name
from bot.pipeline.redaction import Redactor
from bot.pipeline.reply import (
    EphemeralAnswer,
    ReplyWriter,
    StoppedByReader,
    open_writer,
    say_privately,
    stop_note,
)
from bot.pipeline.said import (
    HANDED_OVER,
    OUT_OF_TOKENS,
    RESTARTING,
    STOPPED,
    TOO_MANY_REQUESTS,
    TOOK_TOO_LONG,
    VisibleError,
)
from bot.pipeline.url_caches import clear_url_caches
from bot.pipeline.viewed import ViewedChannels
from bot.pricing import prices_for
from bot.state import MemoryState, State, StateKeys

log = logging.getLogger(__name__)

EMPTY_ANSWER = "_(Claude returned an empty answer.)_"
REDACTION_NOTE = (
    "\n\nSecrets and some personal data were replaced before you saw them by placeholders such as "
    "[email 1] or [slack token 1]; the same value has the same placeholder. Refer to them as they are."
)
CHANNEL_INSTRUCTIONS = "\n\nInstructions from this workspace's administrators for this conversation:\n"
SHUTDOWN = "shutdown"  # the cancel message that tells a shutdown from the reader's Stop


@dataclass(slots=True)
class _Reply:
    """Where the answer goes: the writer opened for it, or the asker alone once it turns out private
    (and then a failure's note goes there too, after what was written)."""

    writer: ReplyWriter


@dataclass
class _Timings:
    started: float
    turn: float = 0.0  # when its turn came
    read: float = 0.0  # when the prompt was ready


class Pipeline:
    """`await pipeline(ask)` answers one Ask; it never raises and keeps nothing afterwards.

    It also bounds the work: as many requests at once, from the first read to the last word, as Claude's
    rate limits allow now (`bot.pipeline.capacity`: its headers and 429s), never more than
    MAX_CONCURRENT_ANSWERS or 256 (the rest wait, with their progress showing, holding only their Ask:
    nothing of Slack is read, no file fetched, until their turn), the work before Claude a few answers at
    a time in arrival order (`bot.pipeline.lane`), USER_REQUESTS_PER_MINUTE per person
    (counted once the access check has let them in), USER_TOKENS_PER_DAY per person (every token Claude
    reports for their answers, finished or not), REQUEST_DEADLINE_SECONDS per answer, waiting
    included, and display names through one gate for the whole process. Running answers are known by
    task here, and to every replica through `state` (`bot.pipeline.inflight`): ids only, until they end.
    """

    def __init__(
        self, settings: Settings, slack: AsyncWebClient, claude: ClaudeClient, state: State | None = None
    ) -> None:
        self._settings = settings
        self._slack = slack
        self._claude = claude
        self.state = state or MemoryState()
        self.keys = StateKeys(settings.slack_bot_token)  # the same in every replica of this app
        self._turns = ClaudeCapacity(ceiling=settings.max_concurrent_answers)
        self._names = NameLookups()
        self._rate_limit = UserRateLimit(self.state, self.keys, settings.user_requests_per_minute)
        self._budget = UserTokenBudget(self.state, self.keys, settings.user_tokens_per_day)
        self._prices = {  # CLAUDE_PRICES is for CLAUDE_MODEL; a channel's own model has the table's
            model: prices_for(model, settings.claude_prices if model == settings.claude_model else None)
            for model in {settings.claude_model, *settings.channel_config.models()}
        }
        for model in sorted(m for m, prices in self._prices.items() if prices is None):
            log.warning(
                "model %s has no price in bot.pricing: answers' cost is logged as unknown; "
                "CLAUDE_PRICES can give CLAUDE_MODEL's",
                model,
            )
        self._access = AccessCheck(settings.access, slack, self.state, self.keys)
        self.viewed = ViewedChannels(self.state, self.keys)
        self.in_flight = InFlight(
            self.state,
            self.keys,
            lease_seconds=settings.answer_lease_seconds,
            deadline_seconds=settings.request_deadline_seconds,
        )
        self._lane = ArrivalLane()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    async def stop(self, channel: str, thread_ts: str) -> bool:
        """Cancel the answer being written in that thread, here or in another replica; True if here."""
        return await self.in_flight.stop(channel, thread_ts)

    async def wait_idle(self) -> None:
        """Return once no answer is being written."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, grace_seconds: float, arriving: Callable[[], Awaitable[None]] | None = None) -> int:
        """Take no new Asks, let running answers finish within the grace, interrupt the rest. What was
        acked but is still `arriving` (awaited, within the grace) is turned away, handed over if it can be.

        Returns how many were interrupted; each says so in Slack."""
        self._accepting = False
        self.in_flight.stop_taking_over()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        if arriving is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arriving(), grace_seconds)
        late: set[asyncio.Task[None]] = set()
        if running := set(self._tasks):
            _, late = await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()))
            for task in late:
                task.cancel(SHUTDOWN)
            await asyncio.gather(*late, return_exceptions=True)
        await self.in_flight.let_go()  # questions taken over and not yet begun: for another replica
        return len(late)

    async def __call__(self, ask: Ask) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._answer(ask, task)
        finally:
            clear_url_caches()  # the libraries' caches would keep this request's file and response URLs
            self._tasks.discard(task)

    async def _answer(self, ask: Ask, task: asyncio.Task[None]) -> None:
        preface = _quote(ask.message.text) + "\n\n" if isinstance(ask.reply_to, Privately) else ""
        writer = open_writer(self._slack, ask, preface)
        meter = metrics.RequestMeter(ask.surface)
        # Claimed on arrival, meanwhile: a replica that dies from here on leaves the question to another.
        answer_key = self.in_flight.enter(ask, task, writer)
        leave_lane: Callable[[], None] | None = None
        try:
            try:  # until its answer is begun, a shutdown turns it away as if it came later
                if not self._accepting:
                    await self._turn_away(ask, answer_key, writer, meter)
                    return
                leave_lane = await self._lane.enter()
                asker_name = await self._let_in(ask, meter)
            except asyncio.CancelledError as exc:
                if SHUTDOWN in exc.args:
                    await self._turn_away(ask, answer_key, writer, meter)
                raise
            if asker_name is not False:
                await self._begun(ask, answer_key, writer, meter, leave_lane, asker_name)
        finally:
            if leave_lane is not None:
                leave_lane()
            # Even when a Stop lands just now: a claim left held would be answered again.
            await self.in_flight.end(answer_key)

    async def _turn_away(
        self, ask: Ask, answer_key: str, writer: ReplyWriter, meter: metrics.RequestMeter
    ) -> None:
        """Stopping: another replica answers it, if there is one to hand it to."""
        if not self._handed_over(ask, answer_key):
            await writer.interrupt(RESTARTING)
        meter.ended("interrupted")

    def _handed_over(self, ask: Ask, answer_key: str) -> bool:
        """Stopping: left for another replica to answer again, if there is one and it can read the
        question again."""
        if self.state.shared and ask.surface in RESUMABLE:
            self.in_flight.hand_over(answer_key)
            return True
        return False

    async def _let_in(self, ask: Ask, meter: metrics.RequestMeter) -> str | None | Literal[False]:
        """Who may ask, decided before anything is read or shown: the asker's display name if Slack gave
        it, or False once told why not."""
        try:
            self._access.check_ids(ask)
            asker_name = await self._access.check_person(ask)
        except Refused as refusal:
            log.info("request=%s surface=%s refused: %s", ask.request_id, ask.surface, type(refusal).__name__)
            meter.refused(refusal)
            await say_privately(self._slack, ask, refusal.sentence)
            return False
        person = _person(ask)
        # Counted once let in only; a question taken over was counted when it first arrived.
        if not ask.taken_over and not await self._rate_limit.allow(*person):
            log.info("request=%s surface=%s refused: user rate limit", ask.request_id, ask.surface)
            meter.refused("rate_limit")
            await say_privately(self._slack, ask, TOO_MANY_REQUESTS.sentence)
            return False
        if not await self._budget.allow(*person):
            log.info("request=%s surface=%s refused: user token budget", ask.request_id, ask.surface)
            meter.refused("token_budget")
            await say_privately(self._slack, ask, OUT_OF_TOKENS.sentence)
            return False
        return asker_name

    async def _begun(
        self,
        ask: Ask,
        answer_key: str,
        writer: ReplyWriter,
        meter: metrics.RequestMeter,
        leave_lane: Callable[[], None],
        asker_name: str | None,
    ) -> None:
        person = _person(ask)
        # What Claude reports, kept as it comes: an answer cut short counts it too.
        usage = Usage(self._model_for(ask))
        timings = _Timings(started=time.perf_counter())
        shown: asyncio.Task[None] | None = None
        reply = _Reply(writer)
        try:
            await self.in_flight.held(answer_key)  # claimed before anything is shown
            shown = asyncio.create_task(show_progress(self._slack, ask.progress))  # meanwhile, wait and read
            async with (
                asyncio.timeout(self._settings.request_deadline_seconds),
                self._turn(ask, shown, leave_lane),
            ):
                timings.turn = time.perf_counter()
                await self._write_answer(ask, reply, timings, asker_name, usage, meter, leave_lane)
        except StoppedByReader:
            meter.ended("stopped")
            log.info(
                "request=%s surface=%s stopped by the reader %s",
                ask.request_id,
                ask.surface,
                self._used(usage),
            )
        except asyncio.CancelledError as exc:
            meter.ended("interrupted" if SHUTDOWN in exc.args or LOST in exc.args else "stopped")
            log.info(
                "request=%s surface=%s cancelled (%s) %s",
                ask.request_id,
                ask.surface,
                exc.args or "stop",
                self._used(usage),
            )
            if SHUTDOWN in exc.args:
                handed_over = self._handed_over(ask, answer_key)
                await reply.writer.interrupt(HANDED_OVER if handed_over else RESTARTING)
            elif LOST not in exc.args:  # a lost answer is marked by the replica that took it over
                await reply.writer.interrupt(STOPPED)
            raise
        except TimeoutError:
            meter.ended("timed_out")
            log.warning(
                "request=%s surface=%s passed its deadline %s", ask.request_id, ask.surface, self._used(usage)
            )
            await reply.writer.interrupt(TOOK_TOO_LONG)
        except VisibleError as exc:  # Slack or Claude failed: the asker is told in the error's own words
            meter.failed(exc)
            if isinstance(exc, ClaudeError):
                metrics.claude_failed(exc)
            log.warning(
                "request=%s surface=%s failed: %s %s", ask.request_id, ask.surface, exc, self._used(usage)
            )
            await reply.writer.interrupt(exc)
        except Exception as exc:  # never a traceback in Slack; only the class and frames in the log
            meter.failed(exc)
            log.error(
                "request=%s surface=%s failed: %s %s",
                ask.request_id,
                ask.surface,
                describe_exception(exc),
                self._used(usage),
            )
            await reply.writer.interrupt(exc)
        finally:
            reply.writer.close()
            metrics.used_tokens(
                input=usage.input_tokens,
                output=usage.output_tokens,
                cache_read=usage.cache_read_tokens,
                cache_write=usage.cache_write_tokens,
                web_searches=usage.web_searches,
                cost_usd=self.cost_usd(usage) or 0.0,
            )
            await self._budget.spend(*person, usage.total)
            if shown is not None:
                await shown  # a quick failure must not clear progress before it was shown
                await clear_progress(self._slack, ask.progress)

    @asynccontextmanager
    async def _turn(
        self, ask: Ask, shown: asyncio.Task[None], leave_lane: Callable[[], None]
    ) -> AsyncIterator[None]:
        """A turn that Claude's rate limits have room for, held from the first read to the last word, so
        that what a flood holds in memory is bounded by the turns, not by how many wait for one."""
        waited = self._turns.would_wait()
        if waited:  # no room now: wait, and let the asker see it
            log.info("request=%s waiting for a turn", ask.request_id)
            leave_lane()  # waiting on Claude is not work: the next arrival may start its own
            await asyncio.wait({shown})  # working first, then waiting (a cancel here leaves `shown` be)
            await show_waiting(self._slack, ask.progress)
        async with self._turns.turn():
            if waited:
                await show_waiting_over(self._slack, ask.progress)
            yield

    async def _write_answer(
        self,
        ask: Ask,
        reply: _Reply,
        timings: _Timings,
        asker_name: str | None,
        usage: Usage,
        meter: metrics.RequestMeter,
        leave_lane: Callable[[], None],
    ) -> None:
        prompt = await self._prompt_for(ask, asker_name)
        reply.writer = writer = await self._private_writer(ask, prompt, reply.writer)
        timings.read = time.perf_counter()
        leave_lane()  # what is left is Claude's request, then waiting on Claude
        searched = False

        async def on_search() -> None:
            nonlocal searched
            if not searched:
                searched = True
                await show_searching(self._slack, ask.progress)

        try:
            outcome = await ask_claude(
                self._claude,
                prompt,
                backend=self._settings.backend,
                model=usage.model,
                max_tokens=self._settings.claude_max_tokens,
                user_hash=opaque_user_id(self.keys, *_person(ask)),
                on_text=meter.on_text(writer.append),
                limits=self._turns,
                usage=usage,
                cache_ttl=self._settings.claude_cache_ttl,
                web_search=self._settings.web_search,
                on_search=on_search,
            )
            ended = stop_note(outcome.stop_reason) or (None if writer.has_words else EMPTY_ANSWER)
            notes = [note for note in (ended, _sources_note(outcome.sources)) if note]
            await writer.finish("\n\n".join(notes) or None)
        finally:  # after the answer's last words, as the working reaction is
            if searched:
                await clear_searching(self._slack, ask.progress)
        meter.answered()
        now = time.perf_counter()
        log.info(
            "request=%s surface=%s answered instructions=%s messages=%d omitted=%d turns=%d %s "
            "answer_chars=%d posts=%d stop=%s wait_ms=%.0f read_ms=%.0f total_ms=%.0f",
            ask.request_id,
            ask.surface,
            self._instructions_name(ask),
            prompt.kept,
            prompt.omitted,
            len(prompt.messages),
            self._used(outcome.usage),
            writer.chars,
            writer.posted(),
            outcome.stop_reason,
            (timings.turn - timings.started) * 1000,
            (timings.read - timings.turn) * 1000,
            (now - timings.started) * 1000,
        )

    def cost_usd(self, usage: Usage) -> float | None:
        """The estimated cost of `usage` in USD (`bot.pricing`); None: the model's price is unknown."""
        prices = self._prices.get(usage.model)
        if prices is None:
            return None
        return prices.cost_usd(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            cache_ttl=self._settings.claude_cache_ttl,
            web_searches=usage.web_searches,
        )

    def _used(self, usage: Usage) -> str:
        """The log fields for what an answer used, finished or not."""
        cost = self.cost_usd(usage)
        return (
            f"input_tokens={usage.input_tokens} output_tokens={usage.output_tokens} "
            f"cache_read_tokens={usage.cache_read_tokens} cache_write_tokens={usage.cache_write_tokens} "
            f"cost_usd={'unknown' if cost is None else f'{cost:.6f}'} model={usage.model}"
            + (f" web_searches={usage.web_searches}" if usage.web_searches else "")
        )

    def _instructions(self, ask: Ask) -> ChannelInstructions | None:
        """The operators' instructions for where this was asked (CHANNEL_CONFIG): its entry, or default."""
        return self._settings.channel_config.for_channel(ask.origin.channel_id)

    def _instructions_name(self, ask: Ask) -> str:
        """Their name, for the log line, never their text."""
        entry = self._instructions(ask)
        return "-" if entry is None else entry.name

    def _model_for(self, ask: Ask) -> str:
        entry = self._instructions(ask)
        return entry.model if entry is not None and entry.model else self._settings.claude_model

    async def _prompt_for(self, ask: Ask, asker_name: str | None) -> Prompt:
        """Read what the Ask names, no further back than the budget goes, and build Claude's input from it."""
        settings, slack, outbound = self._settings, self._slack, self._settings.outbound
        if ask.surface == "shortcut" and isinstance(ask.history, Thread):
            # Its question may come from a modal long after the shortcut was used: the asker may have left.
            await self._access.check_still_in(ask, ask.history.channel)
        # The three reads at once; when one fails, the others are cancelled and waited for (gather would
        # leave them reading, and telling the asker, after the request was over).
        try:
            async with asyncio.TaskGroup() as reads:
                reading = reads.create_task(
                    read_conversation(
                        slack,
                        ask,
                        dm_window_seconds=settings.dm_context_hours * 3600,
                        files=outbound.send_files,
                        budget_tokens=settings.context_budget_tokens,
                    )
                )
                viewing = reads.create_task(self._read_viewed_channel(ask))
                linking = reads.create_task(self._read_linked_threads(ask))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the read that failed first, as gather would raise it
        read, viewed, (linked, private) = reading.result(), viewing.result(), linking.result()
        conversation = read.messages
        first_question = sum(not ask.bot.wrote(message) for message in conversation) == 1
        redactor = Redactor(secrets=outbound.redact_secrets, personal=outbound.redact_personal)
        names, _, files = await asyncio.gather(
            look_up_names(
                slack,
                people_to_name([*conversation, *viewed, *(m for _, t in linked for m in t)], ask.bot),
                known={ask.origin.user_id: asker_name} if asker_name else None,
                lookups=self._names,
            ),
            name_thread(slack, ask.progress, ask.message.text) if first_question else asyncio.sleep(0),
            fetch_files(slack, conversation, ask, outbound, timeout=settings.slack_timeout_seconds),
        )
        prompt = build_prompt(
            conversation,
            bot=ask.bot,
            names=names,
            system=self._system_prompt(ask),
            budget_tokens=settings.context_budget_tokens,
            viewed=viewed,
            redact=redactor,
            files=files,
            earlier_unread=read.earlier_unread,
            linked=linked,
        )
        if redactor.counts:
            log.info("request=%s redacted %s", ask.request_id, redactor.counts)
        return replace(prompt, answer_privately=private)

    def _system_prompt(self, ask: Ask) -> str:
        """The same bytes for every question in one conversation (prompt caching): the prompt, the
        redaction note, then the operators' instructions for this channel, under a fixed header."""
        settings = self._settings
        system = settings.system_prompt + (REDACTION_NOTE if settings.outbound.redacts else "")
        entry = self._instructions(ask)
        if entry is not None:
            system += CHANNEL_INSTRUCTIONS + entry.instructions
        return system

    async def _read_viewed_channel(self, ask: Ask) -> list[SlackMessage]:
        """The channel the user is viewing is read only when the question is plainly about it, and only
        if the asker may read it now (checked at every read); if not, or if Slack will not give it, the
        thread alone is used and the asker is told privately."""
        if not (ask.agent_thread and isinstance(ask.history, Thread)):
            return []
        channel = await self.viewed.get(ask.history.channel, ask.history.thread_ts)
        if not asks_about_channel(ask.message.text, channel):
            return []
        if channel is None:  # none known (the agent view sends no context): said, not left to be guessed
            await say_privately(self._slack, ask, NO_VIEWED_CHANNEL)
            return []
        if await self._access.may_read(ask, channel):
            try:
                return await read_channel(self._slack, channel)
            except ContextUnavailable as exc:
                log.warning("request=%s viewed channel=%s not read: %s", ask.request_id, channel, exc)
        await say_privately(self._slack, ask, VIEWED_CHANNEL_NOT_READ)
        return []

    async def _read_linked_threads(self, ask: Ask) -> tuple[list[tuple[str, list[SlackMessage]]], bool]:
        """The threads the question itself links to (`bot.pipeline.links`), each only if the asker may read
        its channel now, and whether the answer must be private: a thread of another conversation was
        read, and others may read the answer. A link not read is left out, and the asker is told
        privately, once, without naming it."""
        links = find_links(ask.message.text)
        if not links:
            return [], False
        budget = self._settings.context_budget_tokens // 3

        async def read_one(link: Link) -> list[SlackMessage] | None:
            """The link's thread; None: not read."""
            if not await self._access.may_read(ask, link.channel):
                return None
            try:
                return await read_linked_thread(self._slack, link.channel, link.thread_ts, budget)
            except ContextUnavailable as exc:
                log.warning("request=%s linked channel=%s not read: %s", ask.request_id, link.channel, exc)
                return None

        outcomes = await asyncio.gather(*(read_one(link) for link in links))  # each link's own reads
        if None in outcomes:
            await say_privately(self._slack, ask, LINK_NOT_READ)
        read = [(link.channel, got) for link, got in zip(links, outcomes, strict=True) if got is not None]
        # Who reads this conversation is not who may read another: a partner in a Slack Connect channel,
        # a guest, someone from another workspace of the org. Only its own threads are answered here.
        elsewhere = any(channel != ask.origin.channel_id for channel, _ in read)
        return read, elsewhere and self._seen_by_others(ask)

    @staticmethod
    def _seen_by_others(ask: Ask) -> bool:
        """Whether others than the asker may see the answer where it goes: not in a DM, nor privately."""
        return isinstance(ask.reply_to, InConversation) and not ask.reply_to.channel.startswith("D")

    async def _private_writer(self, ask: Ask, prompt: Prompt, writer: ReplyWriter) -> ReplyWriter:
        """The answer goes to the asker alone when it holds what others in the conversation may not see."""
        if not prompt.answer_privately:
            return writer
        await say_privately(self._slack, ask, ANSWERED_PRIVATELY)
        return EphemeralAnswer(self._slack, ask)


def _sources_note(sources: tuple[Source, ...]) -> str | None:
    """The cited pages under the answer, as Markdown links (`bot.pipeline.mrkdwn` makes Slack's), each
    once; a title's brackets and a URL's parentheses and spaces would end the link early."""
    if not sources:
        return None
    links = []
    for source in sources:
        title = (source.title or source.url).replace("[", "(").replace("]", ")")
        url = source.url.replace("(", "%28").replace(")", "%29").replace(" ", "%20")
        links.append(f"[{title}]({url})")
    return "**Sources:** " + " · ".join(links)


def _person(ask: Ask) -> tuple[str, str]:
    """Who the per-person limits count, and Claude's opaque user id hashes: team and user id."""
    return ask.origin.team_id or "", ask.origin.user_id


def _quote(text: str, limit: int = 300) -> str:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return "\n".join(f"> {line}" for line in shown.splitlines() or [""])
