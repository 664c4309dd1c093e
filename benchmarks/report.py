"""Turn raw results into figures: per-level summaries, the critical path, tables and PASS/FAIL lines."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.context import ContextResult
from benchmarks.load import BOT, BOT_X2, LevelResult, LoadConfig, Variant, Wave, round_trip_waves
from benchmarks.stats import Summary, mean

MS = 1000.0
LATENCY_NOTE = """\
  (p50/p95/p99; overhead = first visible - sent - Claude's time - k*L, split into its p50 before
  the Claude request and after the first token; Claude's time = from the request's arrival at fake
  Claude to its first token leaving it (TTFT, and whatever the fake took); probe ack = no-op events
  sent while answers stream; (1.4x) = the figure over the plain bot's at the same N, measured in
  this run just before it)"""
RESOURCE_NOTE = """\
  (CPU of all the variant's processes: ms per answer, and of that before the Claude request (from each
  burst's first envelope to its last request); bench before Claude = this process's CPU per answer
  over that same time; cores busy before Claude = both together over its length (2 = the machine is
  full, so the fakes and the bot wait on each other); % of one core over the measured rounds; bench = this
  process, which runs both fakes; others = the rest of the machine (2 cores = 200%): if high, the
  figures above are disturbed; split = each process's share of the CPU; warnings = lines logged at
  WARNING or above during the rounds)"""
CONTEXT_NOTE = """\
  (full = read_conversation + look_up_names + build_prompt (with the default redaction of secrets)
  through the real client; pure = slim + people_to_name + build_prompt on fetched pages; Slack side =
  full - pure: JSON decode of the pages is the bot's share of it, fake paging the time inside
  FakeSlack's conversations.replies handler, the rest HTTP on both sides. k = sequential Slack round
  trips (each page, then users.info in waves of 10): with Slack latency L the read takes k*L more;
  plain read = the baseline, a plain bot's read of the same thread through the same client: every
  page, every author's users.info at once, "name: text" lines, no budget or redaction)"""


@dataclass(frozen=True, slots=True)
class CriticalPath:
    """The Slack calls an answer makes before its first visible words, in sequential waves."""

    waves: tuple[Wave, ...]  # the most common shape where timing is clean
    k: int | None  # sequential Slack round trips; None at zero latency (then they cost nothing)
    k_spread: dict[int, int]  # k -> conversations over every level (load can blur the timing)

    def describe(self, latency: float) -> str:
        if self.k is None:
            return "path before first words: not measurable at zero Slack latency (k*L = 0)"
        shown = " -> ".join(
            " + ".join(f"{method}" + (f" x{count}" if count > 1 else "") for method, count in wave)
            for wave in self.waves
        )
        return (
            f"path before first words: {shown} -> Claude -> chat.startStream; "
            f"k = {self.k} sequential Slack round trips (k*L = {self.k * latency * MS:.0f} ms subtracted)"
        )


def critical_path(levels: Sequence[LevelResult], latency: float) -> CriticalPath:
    """Read where timing is clean: at the single-conversation level if it ran, else everywhere (the
    bot's own levels, when it ran)."""
    levels = [level for level in levels if not level.variant.baseline] or levels
    everywhere = [c for level in levels for c in level.conversations if c.visible is not None]
    clean = [c for level in levels if level.level == 1 for c in level.conversations if c.visible is not None]
    if latency <= 0 or not everywhere:
        return CriticalPath((), None, {})
    shapes = collections.Counter(round_trip_waves(c.before_visible, latency) for c in clean or everywhere)
    waves = shapes.most_common(1)[0][0]
    spread = collections.Counter(len(round_trip_waves(c.before_visible, latency)) for c in everywhere)
    return CriticalPath(waves, len(waves), dict(sorted(spread.items())))


@dataclass
class LevelFigures:
    variant: Variant
    level: int
    answers: int
    failures: int
    ack: Summary  # ms
    probe_ack: Summary  # ms
    overhead: Summary  # ms: before_claude + after_token
    before_claude: Summary  # ms: Claude request - sent - k*L
    after_token: Summary  # ms: first visible - first token sent
    completion: Summary  # s
    throughput: float  # answers/s over the bursts' makespans
    cpu_ms_per_answer: float
    before_claude_cpu_ms: float  # per answer, from the burst's first envelope to its last Claude request
    before_claude_bench_ms: float  # the benchmark process's CPU per answer over that same time
    before_claude_cores: float  # cores the bot and the benchmark kept busy over that time (2 = all)
    cpu_shares: list[float]
    bot_cpu_util: float  # of one core, over the measured rounds
    driver_cpu_util: float
    others_cpu_util: float  # other processes on the machine, in cores
    peak_rss_mb: float
    slack_calls_per_answer: float
    appends_per_answer: float
    bot_warnings: int
    unattributed: dict[str, int]  # Slack calls during the rounds that named no conversation
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gaps(pairs: Iterable[tuple[float | None, float | None]], minus: float = 0.0) -> list[float]:
    """end - start - minus for each (end, start) pair where both happened."""
    return [end - start - minus for end, start in pairs if end is not None and start is not None]


def level_figures(level: LevelResult, config: LoadConfig, k: int | None) -> LevelFigures:
    path = (k or 0) * config.slack_latency
    done = [c for c in level.conversations if c.done is not None and c.failure is None]
    answers = len(done)
    return LevelFigures(
        variant=level.variant,
        level=level.level,
        answers=answers,
        failures=len(level.conversations) - answers,
        ack=Summary.of(_gaps((c.acked, c.sent) for c in level.conversations), MS),
        probe_ack=Summary.of(_gaps((p.acked, p.sent) for p in level.probes), MS),
        overhead=Summary.of([o for c in done if (o := c.overhead(path)) is not None], MS),
        before_claude=Summary.of(_gaps(((c.claude_at, c.sent) for c in done), path), MS),
        after_token=Summary.of(_gaps((c.visible, c.token_at) for c in done), MS),
        completion=Summary.of(_gaps((c.done, c.sent) for c in done)),
        throughput=answers / sum(level.makespans) if level.makespans else math.nan,
        cpu_ms_per_answer=level.bot_cpu_seconds / answers * MS if answers else math.nan,
        before_claude_cpu_ms=level.before_claude_cpu_seconds / answers * MS if answers else math.nan,
        before_claude_bench_ms=level.before_claude_driver_seconds / answers * MS if answers else math.nan,
        before_claude_cores=(level.before_claude_cpu_seconds + level.before_claude_driver_seconds)
        / level.before_claude_wall_seconds
        if level.before_claude_wall_seconds
        else math.nan,
        cpu_shares=level.cpu_shares,
        bot_cpu_util=level.bot_cpu_seconds / level.wall_seconds if level.wall_seconds else math.nan,
        driver_cpu_util=level.driver_cpu_seconds / level.wall_seconds if level.wall_seconds else math.nan,
        others_cpu_util=level.others_cpu_seconds / level.wall_seconds if level.wall_seconds else math.nan,
        peak_rss_mb=level.peak_rss_mb,
        slack_calls_per_answer=mean([sum(c.calls.values()) for c in done]),
        appends_per_answer=mean([c.calls["chat.appendStream"] for c in done]),
        bot_warnings=level.bot_warnings,
        unattributed=level.unattributed,
        error=level.error,
    )


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float | None  # None: not measured in this run
    limit: float
    unit: str

    baseline: float | None = None  # the plain bot's figure in this run

    @property
    def verdict(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "SKIP"
        return "PASS" if self.value <= self.limit else "FAIL"

    def line(self) -> str:
        if self.verdict == "SKIP":
            return f"SKIP  {self.name} <= {self.limit:g} {self.unit}: not measured"
        assert self.value is not None
        text = f"{self.verdict}  {self.name} <= {self.limit:g} {self.unit}: {self.value:.1f} {self.unit}"
        if self.baseline is not None and not math.isnan(self.baseline):
            text += f" (plain bot {self.baseline:.1f} {self.unit}, {_ratio(self.value, self.baseline)})"
        if self.verdict == "FAIL":
            text += (
                f" ({self.value / self.limit:.1f}x the target, {self.value - self.limit:+.1f} {self.unit})"
            )
        return text


def _ratio(value: float, baseline: float) -> str:
    if math.isnan(value) or math.isnan(baseline) or baseline <= 0:
        return "-"
    return f"{value / baseline:.1f}x"


def baselines(figures: Sequence[LevelFigures]) -> dict[int, LevelFigures]:
    """The plain bot's figures by level."""
    return {f.level: f for f in figures if f.variant.baseline}


def targets(figures: Sequence[LevelFigures], context: Sequence[ContextResult]) -> list[Target]:
    """Issue 11's targets (2 cores, fake Slack answering at once, default settings)."""
    by_key = {(f.variant, f.level): f for f in figures}
    plain = baselines(figures)
    by_size = {r.messages: r for r in context}

    Pick = Callable[[LevelFigures], float]

    def target(name: str, variant: Variant, level: int, pick: Pick, limit: float, unit: str) -> Target:
        mine, base = by_key.get((variant, level)), plain.get(level)
        return Target(
            f"{name} ({variant.name})",
            pick(mine) if mine else None,
            limit,
            unit,
            pick(base) if base else None,
        )

    def overhead(f: LevelFigures) -> float:
        return f.overhead.p50

    big = by_size.get(5000)
    return [
        target("ack p99 with 200 arriving at once", BOT, 200, lambda f: f.ack.p99, 20, "ms"),
        target("ack p99 with 200 arriving at once", BOT_X2, 200, lambda f: f.ack.p99, 20, "ms"),
        target("first-words overhead p50, one conversation", BOT, 1, overhead, 5, "ms"),
        target("first-words overhead p50, one conversation", BOT_X2, 1, overhead, 5, "ms"),
        target("first-words overhead p50, 60 arriving at once", BOT, 60, overhead, 50, "ms"),
        target("first-words overhead p50, 60 arriving at once", BOT_X2, 60, overhead, 50, "ms"),
        target("peak memory (VmHWM) at 200", BOT, 200, lambda f: f.peak_rss_mb, 200, "MB"),
        Target(
            "context assembly p50, 5,000 messages, zero latency",
            big.full.p50 if big else None,
            200,
            "ms",
            big.plain.p50 if big else None,
        ),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]


def _num(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def load_lines(figures: Sequence[LevelFigures], path: CriticalPath, config: LoadConfig) -> list[str]:
    c = config
    floor = c.ttft + c.stream_seconds() + ((path.k or 0) + 1) * c.slack_latency
    lines = [
        f"Load: N mentions arrive at once, each its own thread of {c.thread_messages} messages by "
        f"{c.thread_users} people; bot MAX_CONCURRENT_ANSWERS={c.claude_slots}",
        f"  Claude: TTFT {c.ttft * MS:.0f} ms, {c.tokens_per_second:g} tok/s ({c.chunk_chars} chars "
        f"every {c.chunk_delay * MS:.0f} ms), answer {c.answer_chars} chars; "
        f"Slack: L = {c.slack_latency * MS:.0f} ms per call, {c.page_size} messages a page",
        f"  {path.describe(c.slack_latency)}",
        f"  simulated floor for completion: TTFT + stream + (k+1)*L = {floor:.2f} s",
    ]
    if c.claude_slots is not None and any(f.level > c.claude_slots for f in figures):
        lines.append(
            f"  N > MAX_CONCURRENT_ANSWERS={c.claude_slots}: answers queue for a Claude slot, and the "
            "overhead includes that wait"
        )
    lines.append(
        "  variants: plain = the baseline, a plain async bot on the same clients and Slack calls "
        "(benchmarks/plain_bot.py); bot = `python -m bot`; bot x2 = two of them on one Redis, the burst "
        "shared between their Socket Mode connections; bot http = `python -m bot` in HTTP mode, each "
        "event POSTed to it signed (ack = the response)"
    )
    lines.append("")
    plain = baselines(figures)

    def vs(f: LevelFigures, value: float, pick: Callable[[LevelFigures], float], digits: int = 1) -> str:
        base = plain.get(f.level)
        text = _num(value, digits)
        return text if f.variant.baseline or base is None else f"{text} ({_ratio(value, pick(base))})"

    header: tuple[str, ...] = (
        "variant",
        "N",
        "answers",
        "ack ms",
        "probe ack ms",
        "overhead ms",
        "pre-Claude",
        "post-token",
        "completion s",
        "answers/s",
    )
    rows: list[tuple[str, ...]] = [
        (
            f.variant.name,
            str(f.level),
            f"{f.answers}" + (f" ({f.failures} failed)" if f.failures else ""),
            f.ack.triple(1) + _tail_ratio(f, plain, lambda g: g.ack),
            f.probe_ack.triple(1),
            f.overhead.triple(1) + _tail_ratio(f, plain, lambda g: g.overhead),
            vs(f, f.before_claude.p50, lambda g: g.before_claude.p50),
            vs(f, f.after_token.p50, lambda g: g.after_token.p50),
            f.completion.triple(2) + _tail_ratio(f, plain, lambda g: g.completion),
            _num(f.throughput, 1),
        )
        for f in figures
    ]
    lines += ["  " + line for line in _table(header, rows)]
    lines += [*LATENCY_NOTE.splitlines(), ""]
    header = (
        "variant",
        "N",
        "CPU ms/answer",
        "before Claude",
        "bench before Claude",
        "cores busy before Claude",
        "CPU % of a core",
        "peak RSS MB",
        "bench CPU %",
        "others CPU %",
        "split",
        "Slack calls/answer",
        "appends/answer",
        "warnings",
    )
    rows = [
        (
            f.variant.name,
            str(f.level),
            vs(f, f.cpu_ms_per_answer, lambda g: g.cpu_ms_per_answer),
            vs(f, f.before_claude_cpu_ms, lambda g: g.before_claude_cpu_ms, 2),
            _num(f.before_claude_bench_ms, 2),
            _num(f.before_claude_cores, 2),
            _num(f.bot_cpu_util * 100),
            vs(f, f.peak_rss_mb, lambda g: g.peak_rss_mb),
            _num(f.driver_cpu_util * 100),
            _num(max(0.0, f.others_cpu_util) * 100),
            "/".join(f"{share * 100:.0f}" for share in f.cpu_shares) if len(f.cpu_shares) > 1 else "-",
            _num(f.slack_calls_per_answer, 1),
            _num(f.appends_per_answer, 1),
            str(f.bot_warnings),
        )
        for f in figures
    ]
    lines += ["  " + line for line in _table(header, rows)]
    lines += RESOURCE_NOTE.splitlines()
    for f in figures:
        if f.error:
            lines.append(f"  {f.variant.name} N={f.level}: {f.error}")
        if f.unattributed:
            unnamed = f"calls that named no conversation: {f.unattributed}"
            lines.append(f"  {f.variant.name} N={f.level}: {unnamed}")
    return lines


def _tail_ratio(
    f: LevelFigures, plain: dict[int, LevelFigures], pick: Callable[[LevelFigures], Summary]
) -> str:
    """ " (p50 ratio/p99 ratio)" against the plain bot at the same level; nothing for the plain bot."""
    base = plain.get(f.level)
    if f.variant.baseline or base is None:
        return ""
    mine, theirs = pick(f), pick(base)
    if not mine.n or not theirs.n:
        return ""
    return f" ({_ratio(mine.p50, theirs.p50)}/{_ratio(mine.p99, theirs.p99)})"


def context_lines(results: Sequence[ContextResult], repeats: int) -> list[str]:
    lines = [
        f"Context assembly, in-process, FakeSlack at zero latency ({repeats} runs each; ms p50/p95/p99)",
    ]
    header = (
        "messages",
        "pages",
        "k",
        "kept",
        "omitted",
        "prompt chars",
        "full",
        "pure",
        "JSON decode",
        "fake paging",
        "Slack side p50",
        "plain read",
        "full/plain p50",
    )
    rows: list[tuple[str, ...]] = [
        (
            f"{r.messages:,}",
            str(r.pages),
            str(r.round_trips),
            str(r.kept),
            str(r.omitted),
            f"{r.prompt_chars:,}",
            r.full.triple(1),
            r.pure.triple(1),
            r.decode.triple(1),
            r.fake.triple(1),
            _num(r.full.p50 - r.pure.p50, 1),
            r.plain.triple(1),
            _ratio(r.full.p50, r.plain.p50),
        )
        for r in results
    ]
    lines += ["  " + line for line in _table(header, rows)]
    lines += CONTEXT_NOTE.splitlines()
    return lines
