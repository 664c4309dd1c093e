"""Load scenario: N mentions arrive at once over Socket Mode (or POSTed, in HTTP mode); time acks, first
words and completion.

Each level of each variant (the baseline plain bot, the bot, the bot as two processes sharing a Redis,
the bot in HTTP mode) starts fresh fakes and fresh processes, warms each process up with one short
answer (the first request makes Bolt call auth.test), then runs `rounds` bursts of N conversations. Every
conversation has a channel and users of its own, so each Slack call and Claude request is attributed
to its conversation by channel, user id or metadata.user_id. While a burst's answers stream, no-op
events (reaction_added, which the bot only acknowledges) probe how quickly the busy bot still acks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import (
    BotProcess,
    HttpIntake,
    SocketIntake,
    TimedClaude,
    TimedSlack,
    bot_env,
    collector_paused,
    machine_busy_seconds,
    redis_server,
)
from bot.pipeline.claude import opaque_user_id
from bot.state import StateKeys
from tests.fakes.claude_api import ClaudeRequest
from tests.fakes.slack_api import BOT_TOKEN, Call

TEAM = "T0TEAM"
KEYS = StateKeys(BOT_TOKEN)  # as the bot keys its hashes, so that Claude's requests tell whose they are
BOT_USER = "U0BOT"
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text
FIRST_VISIBLE = frozenset({"chat.startStream", "chat.postMessage"})
MAX_PROBES_PER_ROUND = 400


@dataclass(frozen=True, slots=True)
class Variant:
    """What is measured: `python -m <module>`, with WORKERS=`workers` (more than one share a Redis), its
    events over Socket Mode or (`over_http`) POSTed to it as in HTTP mode."""

    name: str
    module: str
    workers: int = 1
    over_http: bool = False

    @property
    def baseline(self) -> bool:
        return self.module != "bot"


PLAIN = Variant("plain", "benchmarks.plain_bot")
BOT = Variant("bot", "bot")
BOT_X2 = Variant("bot x2", "bot", workers=2)
BOT_HTTP = Variant("bot http", "bot", over_http=True)


@dataclass(frozen=True, slots=True)
class LoadConfig:
    ttft: float  # seconds from Claude's request to its first token
    tokens_per_second: float
    chunk_tokens: int  # tokens per streamed delta
    slack_latency: float  # seconds FakeSlack adds to every Web API call
    answer_chars: int
    thread_messages: int
    thread_users: int
    claude_slots: int | None  # the bot's MAX_CONCURRENT_ANSWERS; None: the bot's default
    page_size: int  # messages per conversations.* page the fake returns
    levels: tuple[int, ...]
    rounds: dict[int, int]  # bursts per level
    probe_interval: float | None  # seconds between no-op probe events while answers stream; None: off
    variants: tuple[Variant, ...] = (PLAIN, BOT, BOT_X2, BOT_HTTP)

    @property
    def chunk_chars(self) -> int:
        return max(1, self.chunk_tokens * CHARS_PER_TOKEN)

    @property
    def chunk_delay(self) -> float:
        return self.chunk_tokens / self.tokens_per_second

    def stream_seconds(self) -> float:
        """How long fake Claude takes to stream one answer after its first token."""
        chunks = math.ceil(self.answer_chars / self.chunk_chars)
        return max(0, chunks - 1) * self.chunk_delay


@dataclass(eq=False)  # identity: two conversations are never the same one
class Conversation:
    """One mention in a thread of its own, and what the fakes saw of it (perf_counter seconds)."""

    n: int
    channel: str
    root_ts: str
    mention_ts: str
    asker: str
    people: tuple[str, ...]
    sent: float | None = None
    acked: float | None = None
    claude_at: float | None = None
    token_at: float | None = None  # the first token of the answer left fake Claude
    visible: float | None = None
    done: float | None = None
    before_visible: list[tuple[float, str]] = field(default_factory=list)
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    failure: str | None = None

    @property
    def user_hash(self) -> str:
        return opaque_user_id(KEYS, TEAM, self.asker)

    def overhead(self, path: float) -> float | None:
        """Seconds from the mention's envelope to its first visible words that were not Claude's (from
        the request's arrival to its first token leaving the fake) nor `path`, the Slack latency the
        sequential calls must wait."""
        sent, asked, token, visible = self.sent, self.claude_at, self.token_at, self.visible
        if sent is None or asked is None or token is None or visible is None:
            return None
        return (asked - sent - path) + (visible - token)


@dataclass
class Probe:
    sent: float
    acked: float | None = None


Clocks = tuple[int, float, float]  # the bots' CPU (ns), this process's CPU (s) and the time (s)


@dataclass
class Burst:
    conversations: list[Conversation]
    started: Clocks  # as its first envelope went
    asked: Clocks | None = None  # as its last Claude request arrived

    def before_claude(self) -> Clocks | None:
        """How much of each clock went by from the first envelope to the last Claude request."""
        if self.asked is None:
            return None
        (ns0, driver0, wall0), (ns1, driver1, wall1) = self.started, self.asked
        return ns1 - ns0, driver1 - driver0, wall1 - wall0


class Recorder:
    """Attributes every timestamped arrival at the fakes to its conversation or probe."""

    def __init__(self) -> None:
        self._by_channel: dict[str, Conversation] = {}
        self._by_user: dict[str, Conversation] = {}
        self._by_envelope: dict[str, Conversation] = {}
        self._by_hash: dict[str, Conversation] = {}
        self.probes: dict[str, Probe] = {}
        self.unattributed: collections.Counter[str] = collections.Counter()
        self._pending = 0
        self._asking = 0  # conversations of this burst whose Claude request has not arrived yet
        self.all_done = asyncio.Event()
        self.on_all_asked: Callable[[], None] | None = None  # called when the burst's last request arrives

    def expect(self, conversations: list[Conversation]) -> None:
        for conv in conversations:
            self._by_channel[conv.channel] = conv
            self._by_hash[conv.user_hash] = conv
            for user in conv.people:
                self._by_user[user] = conv
        self._pending = self._asking = len(conversations)
        self.all_done.clear()

    def sent(self, conv: Conversation, envelope_id: str, at: float) -> None:
        conv.sent = at
        self._by_envelope[envelope_id] = conv

    def left(self, envelope_id: str, at: float) -> None:
        """The envelope left later than it was handed over (a POST starts once its task runs)."""
        if (conv := self._by_envelope.get(envelope_id)) is not None:
            conv.sent = at
        elif (probe := self.probes.get(envelope_id)) is not None:
            probe.sent = at

    def on_call(self, call: Call, at: float) -> None:
        channel = call.params.get("channel") or call.params.get("channel_id")
        conv = self._by_channel.get(str(channel)) if channel else None
        if conv is None and call.method == "users.info":
            conv = self._by_user.get(str(call.params.get("user")))
        if conv is None:
            self.unattributed[call.method] += 1
            return
        conv.calls[call.method] += 1
        if conv.visible is None:
            if call.method in FIRST_VISIBLE:
                conv.visible = at
            else:
                conv.before_visible.append((at, call.method))
        if call.method == "chat.postMessage" and str(call.params.get("text", "")).startswith(":warning:"):
            conv.failure = "the bot posted an error sentence"
        if call.method == "reactions.remove" and conv.done is None:  # the last call of an answer
            conv.done = at
            self._pending -= 1
            if self._pending <= 0:
                self.all_done.set()

    def on_ack(self, envelope_id: str, at: float) -> None:
        if (conv := self._by_envelope.get(envelope_id)) is not None:
            conv.acked = at
        elif (probe := self.probes.get(envelope_id)) is not None:
            probe.acked = at

    def on_claude(self, request: ClaudeRequest, at: float) -> None:
        metadata = request.body.get("metadata") or {}
        conv = self._by_hash.get(str(metadata.get("user_id")))
        if conv is not None and conv.claude_at is None:
            conv.claude_at = at
            self._asking -= 1
            if self._asking == 0 and self.on_all_asked is not None:
                self.on_all_asked()

    def on_token(self, body: dict[str, Any], at: float) -> None:
        conv = self._by_hash.get(str((body.get("metadata") or {}).get("user_id")))
        if conv is not None and conv.token_at is None:
            conv.token_at = at


@dataclass
class LevelResult:
    variant: Variant
    level: int
    rounds: int
    conversations: list[Conversation]
    probes: list[Probe]
    makespans: list[float]  # per round: first envelope sent -> last answer complete
    bot_cpu_seconds: float  # over the measured rounds, all its processes
    before_claude_cpu_seconds: float  # of that, from each burst's first envelope to its last Claude request
    before_claude_driver_seconds: float  # the benchmark process's CPU over that same time
    before_claude_wall_seconds: float  # and how long that time was, all bursts together
    cpu_shares: list[float]  # each process's share of bot_cpu_seconds
    wall_seconds: float  # of the measured rounds
    driver_cpu_seconds: float  # the benchmark process (fakes and driver) over the same time
    others_cpu_seconds: float  # every other process on the machine over the same time
    peak_rss_mb: float
    bot_warnings: int
    bot_output_tail: list[str]
    unattributed: dict[str, int]
    error: str | None = None


def answer_text(chars: int) -> str:
    """A plausible Markdown answer of about `chars` characters: paragraphs, a list, a code block."""
    parts = [
        "Here is what the thread settled on, and what is still open.",
        "The deploy failed because the migration ran before the new column existed; rerunning it "
        "after the schema change fixed staging.",
        "- **Owner:** the platform team\n- **Next step:** add a check to the pipeline\n- **Risk:** low",
        "```python\nif not column_exists(table, 'created_at'):\n    run_migration('0042')\n```",
        "Two questions were left open: whether to backfill old rows, and who reviews the runbook.",
    ]
    text, i = "", 0
    while len(text) < chars:
        text += ("\n\n" if text else "") + parts[i % len(parts)]
        i += 1
    return text[:chars]


class LoadBench:
    """One level of one variant: fresh fakes and processes, a warm-up, then `rounds` bursts of `level`."""

    def __init__(self, config: LoadConfig, level: int, variant: Variant = BOT) -> None:
        self.config = config
        self.level = level
        self.variant = variant
        self.bots: list[BotProcess] = []
        self.recorder = Recorder()
        self._intake: SocketIntake | HttpIntake | None = None
        self._answer = answer_text(config.answer_chars)
        self._next = 0

    def _conversation(self, slack: TimedSlack) -> Conversation:
        """A thread of its own: `thread_messages` messages by `thread_users` people, the last a mention."""
        n, self._next = self._next, self._next + 1
        people = tuple(
            f"U0{chr(ord('A') + i)}{self.level:03d}{n:06d}" for i in range(self.config.thread_users)
        )
        asker = people[0]
        for i, user in enumerate(people):
            slack.add_user(user, display_name=f"Person {i} of {n}", real_name=f"Person {i} Number {n}")
        root = 1_700_000_000 + n
        stamps = [f"{root}.{100 * (i + 1):06d}" for i in range(self.config.thread_messages)]
        messages = [
            {
                "type": "message",
                "user": people[(len(stamps) - 1 - i) % len(people)],  # the asker writes the last one
                "text": f"Message {i} in thread {n}: the staging deploy failed again after the schema "
                f"change, and <@{people[i % len(people)]}> is looking into the migration order.",
                "ts": ts,
            }
            for i, ts in enumerate(stamps)
        ]
        messages[-1]["text"] = f"<@{BOT_USER}> what did we decide, and what is left to do?"
        channel = f"C0L{self.level:03d}{n:06d}"
        slack.add_thread(channel, messages)
        return Conversation(n, channel, stamps[0], stamps[-1], asker, people)

    @staticmethod
    def _mention(conv: Conversation) -> dict[str, Any]:
        return {
            "type": "app_mention",
            "user": conv.asker,
            "text": f"<@{BOT_USER}> what did we decide, and what is left to do?",
            "ts": conv.mention_ts,
            "channel": conv.channel,
            "event_ts": conv.mention_ts,
            "thread_ts": conv.root_ts,
        }

    def _round_timeout(self, count: int) -> float:
        c = self.config
        ideal = c.ttft + c.stream_seconds() + 20 * c.slack_latency
        return 30.0 + 3 * ideal + 0.1 * count  # generous, but bounded

    async def _burst(self, slack: TimedSlack, count: int, answer: str, probe: bool) -> Burst:
        """`count` mentions sent at once; returns when every answer is complete (or the time is up)."""
        conversations = [self._conversation(slack) for _ in range(count)]
        frames = [slack.events_api_envelope(self._mention(conv)) for conv in conversations]
        self.recorder.expect(conversations)
        with collector_paused():
            burst = Burst(conversations, self._clocks())

            def all_asked() -> None:
                burst.asked = self._clocks()

            self.recorder.on_all_asked = all_asked
            for conv, frame in zip(conversations, frames, strict=True):
                self.recorder.sent(conv, frame["envelope_id"], time.perf_counter())
                await self.intake.deliver(frame)
            prober = asyncio.create_task(self._probe(slack)) if probe else None
            try:
                await asyncio.wait_for(self.recorder.all_done.wait(), self._round_timeout(count))
            except TimeoutError:
                for conv in conversations:
                    if conv.done is None:
                        conv.failure = conv.failure or "not complete before the round's time limit"
            finally:
                if prober is not None:
                    prober.cancel()
                    await asyncio.gather(prober, return_exceptions=True)
                await self.intake.settle()
        for conv in conversations:  # a fast broken path must not pass for a fast bot
            if conv.failure is None and "".join(slack.thread_texts(conv.channel, conv.root_ts)) != answer:
                conv.failure = "the answer in Slack is not Claude's whole answer"
        return burst

    async def _probe(self, slack: TimedSlack) -> None:
        """No-op events while the answers stream: how soon does a busy bot ack?"""
        assert self.config.probe_interval is not None
        await asyncio.sleep(self.config.ttft + 0.2)  # the burst's acks are in; the streams are flowing
        for i in range(MAX_PROBES_PER_ROUND):
            if self.recorder.all_done.is_set():
                return
            event = {
                "type": "reaction_added",
                "user": "U0PROBE",
                "reaction": "eyes",
                "item": {"type": "message", "channel": "C0PROBE", "ts": f"1600000000.{i:06d}"},
                "event_ts": f"{time.time():.6f}",
            }
            frame = slack.events_api_envelope(event)
            self.recorder.probes[frame["envelope_id"]] = Probe(sent=time.perf_counter())
            await self.intake.deliver(frame)
            await asyncio.sleep(self.config.probe_interval)

    async def _warm_up(self, slack: TimedSlack, claude: TimedClaude) -> None:
        """One short answer per worker (envelopes go to the connections in turn): Bolt's auth.test,
        first connections and imports happen here, unmeasured."""
        claude.responder = lambda _body: "Warmed up."
        try:
            for conv in (
                await self._burst(slack, self.variant.workers, "Warmed up.", probe=False)
            ).conversations:
                if conv.failure:
                    raise RuntimeError(f"warm-up failed: {conv.failure}")
        finally:
            claude.responder = lambda _body: self._answer

    @property
    def intake(self) -> SocketIntake | HttpIntake:
        assert self._intake is not None, "the level is not running"
        return self._intake

    def _cpu_ns(self) -> int:
        return sum(bot.cpu_ns() for bot in self.bots)

    def _clocks(self) -> Clocks:
        return self._cpu_ns(), time.process_time(), time.perf_counter()

    async def run(self) -> LevelResult:
        c, rec = self.config, self.recorder
        fakes = {"bot_user_id": BOT_USER, "team_id": TEAM, "page_size": c.page_size}
        async with (
            TimedSlack(rec.on_call, rec.on_ack, **fakes) as slack,
            TimedClaude(rec.on_claude, rec.on_token) as claude,
            contextlib.AsyncExitStack() as stack,
        ):
            claude.first_token_delay = c.ttft
            claude.chunk_chars = c.chunk_chars
            claude.chunk_delay = c.chunk_delay
            claude.responder = lambda _body: self._answer
            settings = {
                "USER_REQUESTS_PER_MINUTE": "1000",  # each conversation has its own asker anyway
                "SHUTDOWN_GRACE_SECONDS": "2",
            }
            if c.claude_slots is not None:
                settings["MAX_CONCURRENT_ANSWERS"] = str(c.claude_slots)
            if self.variant.workers > 1:  # `python -m bot` supervises that many workers on one Redis
                settings["WORKERS"] = str(self.variant.workers)
                settings["REDIS_URL"] = stack.enter_context(redis_server()).url
            self._intake = (
                HttpIntake(rec.left, rec.on_ack, connections=self.level)
                if self.variant.over_http
                else SocketIntake(slack, self.variant.workers)
            )
            stack.push_async_callback(self._intake.close)
            settings.update(self._intake.settings())
            bot = BotProcess(bot_env(slack, claude, **settings), self.variant.module)
            self.bots = [bot]
            stack.push_async_callback(bot.stop)  # also when cancelled: no bot outlives the benchmark
            await bot.start()
            return await self._measure(slack, claude)

    async def _measure(self, slack: TimedSlack, claude: TimedClaude) -> LevelResult:
        c, rec, bots = self.config, self.recorder, self.bots
        conversations: list[Conversation] = []
        makespans: list[float] = []
        error: str | None = None
        cpu0 = [cpu for bot in bots for cpu in bot.cpu_seconds_each()]
        wall0, driver0 = time.perf_counter(), time.process_time()
        busy0, warnings0, before_claude_ns = machine_busy_seconds(), 0, 0
        before_claude_driver = before_claude_wall = 0.0
        try:
            await self.intake.ready()
            slack.latency = 0.0  # the warm-up is not measured; keep it short
            await self._warm_up(slack, claude)
            slack.latency = c.slack_latency
            rec.probes.clear()
            rec.unattributed.clear()
            warnings0 = sum(bot.warnings for bot in bots)  # what start-up logged is not the rounds'
            cpu0 = [cpu for bot in bots for cpu in bot.cpu_seconds_each()]
            wall0, driver0 = time.perf_counter(), time.process_time()
            busy0 = machine_busy_seconds()
            probe = c.probe_interval is not None and self.level > 1  # one answer: its own ack says it
            for _ in range(c.rounds[self.level]):
                burst = await self._burst(slack, self.level, self._answer, probe)
                if (spent := burst.before_claude()) is not None:
                    spent_ns, spent_driver, spent_wall = spent
                    before_claude_ns += spent_ns
                    before_claude_driver += spent_driver
                    before_claude_wall += spent_wall
                batch = burst.conversations
                conversations.extend(batch)
                ends = [conv.done for conv in batch if conv.done is not None]
                starts = [conv.sent for conv in batch if conv.sent is not None]
                if ends and starts:
                    makespans.append(max(ends) - min(starts))
                if any(conv.failure for conv in batch):
                    error = "some answers failed; later rounds skipped"
                    break
        except (AssertionError, RuntimeError, TimeoutError, OSError) as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        running = all(bot.running for bot in bots)
        if self.intake.failures:
            error = f"{error or 'events were refused'}; {self.intake.failures} POSTs got no 200"
        for bot in bots:
            if not bot.running:  # its output is content-free by design (bot.logs), so it may be shown
                last = " | ".join(list(bot.output)[-3:])
                error = f"{error or 'a bot process exited'}; its last lines: {last}"
        now = [cpu for bot in bots for cpu in bot.cpu_seconds_each()]
        cpus = [cpu - start for cpu, start in zip(now, cpu0, strict=True)] if len(now) == len(cpu0) else []
        running = running and bool(cpus)  # a worker restarted: its CPU cannot be told apart
        bot_cpu = sum(cpus) if running else math.nan
        driver_cpu = time.process_time() - driver0
        return LevelResult(
            variant=self.variant,
            level=self.level,
            rounds=c.rounds[self.level],
            conversations=conversations,
            probes=list(rec.probes.values()),
            makespans=makespans,
            bot_cpu_seconds=bot_cpu,
            before_claude_cpu_seconds=before_claude_ns / 1e9,
            before_claude_driver_seconds=before_claude_driver,
            before_claude_wall_seconds=before_claude_wall,
            cpu_shares=[cpu / bot_cpu for cpu in cpus[1:]] if bot_cpu and len(cpus) > 1 else [],
            wall_seconds=time.perf_counter() - wall0,
            driver_cpu_seconds=driver_cpu,
            others_cpu_seconds=machine_busy_seconds() - busy0 - bot_cpu - driver_cpu,
            peak_rss_mb=max(bot.peak_rss_mb() for bot in bots) if running else math.nan,
            bot_warnings=sum(bot.warnings for bot in bots) - warnings0,
            bot_output_tail=[line for bot in bots for line in list(bot.output)[-10:]],
            unattributed=dict(rec.unattributed),
            error=error,
        )


Wave = tuple[tuple[str, int], ...]  # the methods (and how many of each) sent together


def round_trip_waves(calls: list[tuple[float, str]], latency: float) -> tuple[Wave, ...]:
    """The calls grouped by how many round trips had to come back before each was sent.

    A call sent within 0.8 * latency of another ran alongside it (reactions.add beside the read, the
    users.info lookups beside each other); one sent later waited for an answer. Each call's depth is
    1 + the deepest call that could have answered before it; the number of waves is k, the sequential
    Slack round trips on the path. Needs latency > 0.
    """
    ordered = sorted(calls)
    depth: list[int] = []
    for t, _ in ordered:
        answered = [depth[j] for j, (u, _) in enumerate(ordered[: len(depth)]) if u + 0.8 * latency <= t]
        depth.append(1 + max(answered, default=0))
    waves: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (_, method), d in zip(ordered, depth, strict=True):
        waves[d][method] += 1
    return tuple(tuple(sorted(waves[d].items())) for d in sorted(waves))


async def run_load(config: LoadConfig) -> list[LevelResult]:
    """Every level of every variant, the baseline's first at each level, so that the two are measured
    as close together in time as they can be (a busy machine disturbs both alike)."""
    return [
        await LoadBench(config, level, variant).run()
        for level in config.levels
        for variant in config.variants
    ]
