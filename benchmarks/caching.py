"""Prompt caching's saving: a 30,000-token thread, a first question and 10 follow-ups, each prompt built
by the bot (`build_prompt`, secrets redacted) and sent with the bot's own request (`ask_claude`, cache
control for CLAUDE_CACHE_TTL) through the real client to FakeClaude, which reports usage as the API does
for cached prefixes (reads, writes, the rest). Input cost from that usage and bot.pricing, against the
same tokens at the input price (no caching). Each follow-up adds the bot's answer and a new question."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from anthropic import AsyncAnthropic

from benchmarks.harness import REPO
from benchmarks.report import Target
from bot.config import BackendSettings
from bot.pipeline.ask import BotIdentity, SlackMessage
from bot.pipeline.claude import Usage, ask_claude
from bot.pipeline.prompt import build_prompt
from bot.pipeline.redaction import Redactor
from bot.pipeline.tokens import CHARS_PER_TOKEN
from bot.pricing import Prices, prices_for
from tests.fakes.claude_api import FakeClaude

MODEL = "claude-sonnet-5-5"
THREAD_TOKENS = 30_000
FOLLOW_UPS = 10
CORPUS = REPO / "tests" / "corpus" / "engineering_messages.txt"
BOT = BotIdentity("U0BOT", "B0BOT")
PEOPLE = {f"U0P{n}": f"Person {n}" for n in range(6)}
ANSWER = "Here is what the thread says about it, step by step, with the parts that matter most. " * 14
DEFAULT_BUDGET = 50_000  # CONTEXT_BUDGET_TOKENS's default
TARGET = 0.20  # follow-ups pay at most this share of the uncached input cost (issue 12)


@dataclass(frozen=True, slots=True)
class CachingRun:
    name: str
    budget_tokens: int
    ttl: str
    first_cached: float  # USD: the first question's input, as reported (writes the cache)
    first_uncached: float
    follow_ups_cached: float  # USD: the 10 follow-ups' input, as reported
    follow_ups_uncached: float
    read_tokens: int  # over the follow-ups
    write_tokens: int
    input_tokens: int
    windows: int  # distinct window starts over all 11 questions

    @property
    def fraction(self) -> float:
        return self.follow_ups_cached / self.follow_ups_uncached if self.follow_ups_uncached else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


def a_thread(tokens: int) -> list[SlackMessage]:
    """Messages from the engineering corpus by six people, a minute apart, until `tokens` are reached."""
    corpus = [text for text in CORPUS.read_text(encoding="utf-8").split("\n%%\n") if text.strip()]
    thread: list[SlackMessage] = []
    total = 0
    while total < tokens:
        text = corpus[len(thread) % len(corpus)]
        user = f"U0P{len(thread) % len(PEOPLE)}"
        thread.append(SlackMessage(ts=f"{1_790_000_000 + 60 * len(thread)}.000100", text=text, user=user))
        total += len(f"{PEOPLE[user]}: {text}\n\n") // CHARS_PER_TOKEN  # as the prompt renders it
    return thread


async def run_caching(budget_tokens: int, ttl: str = "5m", name: str = "") -> CachingRun:
    prices = prices_for(MODEL)
    assert prices is not None
    thread = a_thread(THREAD_TOKENS)
    costs: list[tuple[float, float]] = []  # (as reported, uncached) per question
    read = write = plain = 0
    starts: set[int] = set()
    async with FakeClaude() as claude:
        claude.set_rate_limits(requests=None)
        claude.responder = lambda _body: ANSWER
        client = AsyncAnthropic(api_key="bench", base_url=claude.base_url, max_retries=0)
        try:
            for n in range(FOLLOW_UPS + 1):
                stamp = 1_800_000_000 + 120 * n
                thread.append(SlackMessage(ts=f"{stamp}.000100", text=f"<@U0BOT> question {n}?", user="U0P1"))
                prompt = build_prompt(
                    thread,
                    bot=BOT,
                    names=PEOPLE,
                    system="You are Claude, answering in Slack.",
                    budget_tokens=budget_tokens,
                    redact=Redactor(),
                )
                starts.add(prompt.omitted)
                usage = Usage(MODEL)

                async def ignore(_text: str) -> None:
                    return None

                await ask_claude(
                    client,
                    prompt,
                    backend=BackendSettings(),
                    model=MODEL,
                    max_tokens=1024,
                    user_hash="bench",
                    on_text=ignore,
                    usage=usage,
                    cache_ttl=ttl,
                )
                costs.append(_input_costs(prices, usage, ttl))
                if n:
                    read += usage.cache_read_tokens
                    write += usage.cache_write_tokens
                    plain += usage.input_tokens
                thread.append(
                    SlackMessage(ts=f"{stamp + 60}.000100", text=ANSWER, user="U0BOT", bot_id="B0BOT")
                )
                claude.pass_time(60)  # a minute between questions
        finally:
            await client.close()
    (first_cached, first_uncached), later = costs[0], costs[1:]
    return CachingRun(
        name=name or f"budget {budget_tokens:,}, {ttl}",
        budget_tokens=budget_tokens,
        ttl=ttl,
        first_cached=first_cached,
        first_uncached=first_uncached,
        follow_ups_cached=sum(cached for cached, _ in later),
        follow_ups_uncached=sum(uncached for _, uncached in later),
        read_tokens=read,
        write_tokens=write,
        input_tokens=plain,
        windows=len(starts),
    )


def _input_costs(prices: Prices, usage: Usage, ttl: str) -> tuple[float, float]:
    """The input's cost as reported (reads, writes, the rest), and the same tokens all at the input price."""
    cached = prices.cost_usd(
        input_tokens=usage.input_tokens,
        output_tokens=0,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_ttl=ttl,
    )
    every = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    uncached = prices.cost_usd(input_tokens=every, output_tokens=0, cache_ttl=ttl)
    return cached, uncached


async def caching_runs() -> list[CachingRun]:
    return [
        await run_caching(DEFAULT_BUDGET, "5m", "default budget (50,000), 5m"),
        await run_caching(DEFAULT_BUDGET, "1h", "default budget (50,000), 1h"),
        await run_caching(20_000, "5m", "budget 20,000 (the window moves), 5m"),
    ]


def caching_target(runs: list[CachingRun]) -> Target:
    default = next((run for run in runs if run.budget_tokens == DEFAULT_BUDGET and run.ttl == "5m"), None)
    return Target(
        f"follow-ups' input cost with caching, share of uncached ({THREAD_TOKENS:,}-token thread)",
        default.fraction * 100 if default else None,
        TARGET * 100,
        "%",
    )


def caching_lines(runs: list[CachingRun]) -> list[str]:
    lines = [
        f"Prompt caching: a {THREAD_TOKENS:,}-token thread, a first question and {FOLLOW_UPS} follow-ups "
        f"({MODEL}; input cost from the usage reported, USD)",
    ]
    for run in runs:
        lines.append(
            f"  {run.name}: first question ${run.first_cached:.4f} (uncached ${run.first_uncached:.4f}); "
            f"follow-ups ${run.follow_ups_cached:.4f} of ${run.follow_ups_uncached:.4f} uncached = "
            f"{run.fraction:.1%}; follow-ups read {run.read_tokens:,}, wrote {run.write_tokens:,}, "
            f"input {run.input_tokens:,} tokens; {run.windows} window start(s)"
        )
    return lines
