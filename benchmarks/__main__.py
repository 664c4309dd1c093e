"""`python -m benchmarks [--quick] [--json PATH]`: run the load, context and caching benchmarks, print
figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.caching import CachingRun, caching_lines, caching_runs, caching_target
from benchmarks.context import ContextResult, run_context
from benchmarks.harness import REPO
from benchmarks.load import BOT, BOT_HTTP, BOT_X2, PLAIN, LevelResult, LoadConfig, run_load
from benchmarks.redaction import redaction_lines
from benchmarks.report import context_lines, critical_path, level_figures, load_lines, targets

CONTEXT_SIZES = (100, 1_000, 5_000)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one burst per level, fewer repeats (< ~60 s)")
    parser.add_argument("--ttft", type=float, default=0.5, help="Claude's time to first token, s")
    parser.add_argument("--tokens-per-second", type=float, default=80.0, help="Claude's streaming rate")
    parser.add_argument("--chunk-tokens", type=int, default=4, help="tokens per streamed delta")
    parser.add_argument(
        "--slack-latency", type=float, default=0.0, help="added to every Slack call, s (0: answering at once)"
    )
    parser.add_argument("--answer-chars", type=int, default=1200, help="length of each answer")
    parser.add_argument(
        "--claude-slots",
        type=int,
        help="the bot's MAX_CONCURRENT_ANSWERS (default: unset, the bot's own default)",
    )
    parser.add_argument("--levels", default="1,60,200", help="conversations arriving at once, per level")
    parser.add_argument(
        "--variants",
        default="plain,bot,bot-x2,bot-http",
        help="what to measure: plain (the baseline), bot, bot-x2 (two processes on one Redis), bot-http "
        "(events POSTed to it as in HTTP mode)",
    )
    parser.add_argument("--rounds", type=int, help="bursts per level (default: by level, fewer with --quick)")
    parser.add_argument("--page-size", type=int, default=200, help="messages per conversations.* page")
    parser.add_argument("--no-probes", action="store_true", help="send no no-op events while answers stream")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-context", action="store_true")
    parser.add_argument("--skip-caching", action="store_true")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        levels = [int(part) for part in args.levels.split(",") if part.strip()]
    except ValueError:
        parser.error("--levels: whole numbers separated by commas, such as 1,50,200")
    if not levels or min(levels) < 1 or max(levels) > 1000:
        parser.error("--levels: between 1 and 1000 conversations each")
    if args.ttft < 0 or args.slack_latency < 0 or args.tokens_per_second <= 0 or args.chunk_tokens < 1:
        parser.error("--ttft and --slack-latency must be >= 0, --tokens-per-second > 0, --chunk-tokens >= 1")
    if args.claude_slots is not None and not 1 <= args.claude_slots <= 1000:
        parser.error("--claude-slots: between 1 and 1000 (what the bot accepts)")
    if args.rounds is not None and not 1 <= args.rounds <= 100:
        parser.error("--rounds: between 1 and 100")
    known = {"plain": PLAIN, "bot": BOT, "bot-x2": BOT_X2, "bot-http": BOT_HTTP}
    names = [part.strip() for part in args.variants.split(",") if part.strip()]
    if not names or any(name not in known for name in names):
        parser.error("--variants: some of plain, bot, bot-x2, bot-http, separated by commas")
    args.levels = tuple(levels)
    args.variants = tuple(known[name] for name in names)
    return args


def default_rounds(level: int, quick: bool) -> int:
    """Enough bursts for ~200 samples per level (20 single answers), or one burst when quick."""
    if quick:
        return 3 if level == 1 else 1
    return min(20, max(3, math.ceil(200 / level)))


def bot_revision() -> str:
    """Which bot was measured: others change bot/ while we run, so say the commit and if it is dirty."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "bot")
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"commit {head}" + (" + uncommitted changes in bot/" if dirty else "")


def machine_speed_seconds() -> float:
    """How long this machine takes for ten million steps of a pure-Python loop (the better of two): the
    machines these run on differ by more than 2x, and this says how fast this one was, for comparing
    absolute figures between runs (ratios to the baselines compare within one)."""
    best = math.inf
    for _ in range(2):
        started, total = time.perf_counter(), 0
        for step in range(10_000_000):
            total += step
        best = min(best, time.perf_counter() - started)
    return best


def context_repeats(quick: bool) -> int:
    return 3 if quick else 10


def load_config(args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(
        ttft=args.ttft,
        tokens_per_second=args.tokens_per_second,
        chunk_tokens=args.chunk_tokens,
        slack_latency=args.slack_latency,
        answer_chars=args.answer_chars,
        thread_messages=5,
        thread_users=3,
        claude_slots=args.claude_slots,
        page_size=args.page_size,
        levels=args.levels,
        rounds={level: args.rounds or default_rounds(level, args.quick) for level in args.levels},
        probe_interval=None if args.no_probes else 0.25,  # 4/s: adds ~2% to CPU per answer at N=50
        variants=args.variants,
    )


async def run(args: argparse.Namespace) -> tuple[list[LevelResult], list[ContextResult], list[CachingRun]]:
    config = load_config(args)
    # A hard limit on the whole run, on top of each round's own: it always stops by itself.
    budget = 300.0 if args.quick else 1800.0
    async with asyncio.timeout(budget):
        levels = [] if args.skip_load else await run_load(config)
        repeats = context_repeats(args.quick)
        context = [] if args.skip_context else await run_context(CONTEXT_SIZES, repeats, args.page_size)
        caching = [] if args.skip_caching else await caching_runs()
    return levels, context, caching


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    config = load_config(args)
    started, revision, speed = time.monotonic(), bot_revision(), machine_speed_seconds()
    try:
        # The fakes on uvloop: their share of every round trip is the apparatus, not the bot.
        levels, context, caching = uvloop.run(run(args))
    except TimeoutError:
        print("FAIL  the run passed its overall time limit; the bot was stopped", file=sys.stderr)  # noqa: T201
        return 2
    path = critical_path(levels, config.slack_latency)
    figures = [level_figures(level, config, path.k) for level in levels]
    checks = targets(figures, context)
    if caching:
        checks.append(caching_target(caching))

    quick = " (quick)" if args.quick else ""
    lines = [
        f"Benchmarks of `python -m bot` ({revision}) against loopback fakes{quick}",
        f"This machine: a pure-Python loop of 10 million steps takes {speed:.2f} s (the better of two)",
        "",
    ]
    if figures:
        lines += [*load_lines(figures, path, config), ""]
    if context:
        lines += [*context_lines(context, context_repeats(args.quick)), ""]
    if not args.skip_context:
        lines += [*redaction_lines(context_repeats(args.quick)), ""]
    if caching:
        lines += [*caching_lines(caching), ""]
    lines += [check.line() for check in checks]
    lines.append(f"(ran {time.monotonic() - started:.0f} s)")
    print("\n".join(lines))  # noqa: T201 (printing the figures is the point)

    if args.json:
        report: dict[str, Any] = {
            "bot": revision,
            "machine_loop_seconds": speed,
            "config": {**asdict(config), "rounds": {str(k): v for k, v in config.rounds.items()}},
            "critical_path": asdict(path),
            "levels": [figure.to_dict() for figure in figures],
            "context": [result.to_dict() for result in context],
            "caching": [run.to_dict() for run in caching],
            "targets": [{**asdict(check), "verdict": check.verdict} for check in checks],
        }
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = any(check.verdict == "FAIL" for check in checks) or any(f.error for f in figures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
