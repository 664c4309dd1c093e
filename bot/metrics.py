"""What an operator sees of the bot without seeing a conversation: Prometheus metrics, and the health
endpoints `/healthz` (the process is up) and `/readyz` (connected to Slack, Redis reachable when
configured, not draining), served beside Slack's events path in HTTP mode and on METRICS_PORT in
Socket Mode.

    claude_slack_requests_total{surface, outcome, reason}   each Ask once, when it ends
    claude_slack_tokens_total{kind}                         input, output, cache_read, cache_write
    claude_slack_web_searches_total                         searches Claude ran (WEB_SEARCH)
    claude_slack_cost_usd_total                             estimated from the price table
    claude_slack_slack_errors_total{method, error}          every Slack call that failed (bot.slack_calls)
    claude_slack_claude_errors_total{error}                 our Claude error classes
    claude_slack_feedback_total{value}                      positive, negative
    claude_slack_ack_seconds{transport}                     envelope or request in, acknowledged
    claude_slack_first_words_seconds{surface}               Ask in, Claude's first words on their way
    claude_slack_completion_seconds{surface}                Ask in, answer complete

No label carries a user, channel or team id, or any text: every label value is checked against a fixed
set (surfaces, outcomes, token kinds, feedback values, transports) or a narrow pattern (Slack's error
codes and our reasons, `[a-z_]{1,64}`; our method names, camelCase words joined by dots; our error
class names, which hold a lowercase letter, as Slack's ids never do), and anything else becomes "other".

Several workers (bot.workers) share one count: each writes its values to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, chosen from that variable when the
library is imported) and `/metrics` sums them with MultiProcessCollector.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SURFACES = frozenset({"mention", "direct_message", "assistant", "slash_command", "shortcut"})
OUTCOMES = frozenset({"answered", "refused", "failed", "stopped", "interrupted", "timed_out"})
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
FEEDBACK_VALUES = frozenset({"positive", "negative"})
TRANSPORTS = frozenset({"socket_mode", "http"})
OTHER = "other"
NOT_READY = 503

_CODE = re.compile(r"[a-z_]{1,64}")  # Slack's error codes ("channel_not_found"), our reasons ("rate_limit")
_WORD = r"[a-z]+(?:[A-Z][a-z]+)*"  # "chat", "postMessage"
_METHOD = re.compile(rf"{_WORD}(?:[._ ]{_WORD}){{0,4}}")  # "chat.postMessage", "conversations_replies"
_CLASS = re.compile(r"(?=.*[a-z])[A-Z][A-Za-z0-9]{0,63}")  # "ClaudeBusy", "ClientOSError"; not "U0ALICE"

# The metrics live as long as the process, as loggers do; in multiprocess mode `/metrics` reads the files
# instead of this registry.
REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "claude_slack"
REQUESTS = Counter(
    "requests",
    "Asks by surface and how they ended (answered, refused, failed, stopped, interrupted, timed_out); "
    "reason: the refusal or our error class.",
    ["surface", "outcome", "reason"],
    namespace=PREFIX,
    registry=REGISTRY,
)
TOKENS = Counter("tokens", "Tokens Claude reported, by kind.", ["kind"], namespace=PREFIX, registry=REGISTRY)
WEB_SEARCHES = Counter(
    "web_searches", "Web searches Claude ran for answers (WEB_SEARCH).", namespace=PREFIX, registry=REGISTRY
)
COST = Counter(
    "cost_usd", "Estimated cost of Claude's answers, in US dollars.", namespace=PREFIX, registry=REGISTRY
)
SLACK_ERRORS = Counter(
    "slack_errors",
    "Slack calls that failed, by our method name and Slack's error code (or the transport error's class).",
    ["method", "error"],
    namespace=PREFIX,
    registry=REGISTRY,
)
CLAUDE_ERRORS = Counter(
    "claude_errors",
    "Claude requests that failed, by our error class.",
    ["error"],
    namespace=PREFIX,
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "feedback", "Clicks on an answer's feedback buttons.", ["value"], namespace=PREFIX, registry=REGISTRY
)
ACK_SECONDS = Histogram(
    "ack_seconds",
    "From an envelope or HTTP request arriving to its acknowledgement (Slack waits 3 s).",
    ["transport"],
    namespace=PREFIX,
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0),
)
FIRST_WORDS_SECONDS = Histogram(
    "first_words_seconds",
    "From an Ask reaching the pipeline to Claude's first words going to Slack.",
    ["surface"],
    namespace=PREFIX,
    registry=REGISTRY,
    buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0),
)
COMPLETION_SECONDS = Histogram(
    "completion_seconds",
    "From an Ask reaching the pipeline to its answer complete in Slack.",
    ["surface"],
    namespace=PREFIX,
    registry=REGISTRY,
    buckets=(1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)


def _one_of(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


def _matching(value: str, pattern: re.Pattern[str]) -> str:
    return value if len(value) <= 64 and pattern.fullmatch(value) else OTHER


def _class_name(error: BaseException | type[BaseException]) -> str:
    return _matching((error if isinstance(error, type) else type(error)).__name__, _CLASS)


class RequestMeter:
    """One Ask's metrics, started when it reaches the pipeline: its first words, its completion, and how
    it ended (counted once: the first outcome given stands)."""

    def __init__(self, surface: str) -> None:
        self.surface = _one_of(surface, SURFACES)
        self.started = time.perf_counter()
        self._spoke = False
        self._ended = False

    def first_words(self) -> None:
        """Claude's first words are on their way to Slack (later calls do nothing)."""
        if not self._spoke:
            self._spoke = True
            FIRST_WORDS_SECONDS.labels(self.surface).observe(time.perf_counter() - self.started)

    def on_text(self, append: Callable[[str], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
        """`append`, noting the first words as they pass."""

        async def appending(text: str) -> None:
            self.first_words()
            await append(text)

        return appending

    def answered(self) -> None:
        if self._end("answered"):
            COMPLETION_SECONDS.labels(self.surface).observe(time.perf_counter() - self.started)

    def refused(self, reason: BaseException | type[BaseException] | str) -> None:
        """Not let in: a Refused error (its class names it) or our own word ("rate_limit")."""
        self._end("refused", _matching(reason, _CODE) if isinstance(reason, str) else _class_name(reason))

    def failed(self, error: BaseException) -> None:
        self._end("failed", _class_name(error))

    def ended(self, outcome: str) -> None:
        """Any other end: "stopped" (by the reader), "interrupted" (shutdown, handed over, lost),
        "timed_out"."""
        self._end(outcome)

    def _end(self, outcome: str, reason: str = "") -> bool:
        if self._ended:
            return False
        self._ended = True
        REQUESTS.labels(self.surface, _one_of(outcome, OUTCOMES), reason).inc()
        return True


def used_tokens(
    *,
    input: int,
    output: int,
    cache_read: int = 0,
    cache_write: int = 0,
    web_searches: int = 0,
    cost_usd: float = 0.0,
) -> None:
    """What one answer cost, as Claude reported it; `cost_usd` estimated from the price table."""
    for kind, count in zip(TOKEN_KINDS, (input, output, cache_read, cache_write), strict=True):
        if count > 0:
            TOKENS.labels(kind).inc(count)
    if web_searches > 0:
        WEB_SEARCHES.inc(web_searches)
    if cost_usd > 0:
        COST.inc(cost_usd)


def slack_failed(method: str, error: str | BaseException) -> None:
    """A Slack call failed: Slack refused it with the code `error`, or the transport raised `error`."""
    code = _matching(error, _CODE) if isinstance(error, str) else _class_name(error)
    SLACK_ERRORS.labels(_matching(method, _METHOD).replace(" ", "_"), code).inc()


def claude_failed(error: BaseException | type[BaseException]) -> None:
    CLAUDE_ERRORS.labels(_class_name(error)).inc()


def feedback(value: str) -> None:
    FEEDBACK.labels(_one_of(value, FEEDBACK_VALUES)).inc()


def acked(transport: str, seconds: float) -> None:
    ACK_SECONDS.labels(_one_of(transport, TRANSPORTS)).observe(seconds)


# Serving: /metrics, /healthz, /readyz.

Problems = Callable[[], Awaitable[list[str]]]  # what keeps us from being ready; [] when ready


@dataclass
class Readiness:
    """What `/readyz` checks each time it is asked: `connected` (None until there is a connection to
    ask about), `redis` pinged when configured (it raises when unreachable), and `draining`."""

    draining: Callable[[], bool]
    redis: Callable[[], Awaitable[None]] | None = None
    connected: Callable[[], Awaitable[bool]] | None = None

    async def problems(self) -> list[str]:
        problems = []
        if self.draining():
            problems.append("draining")
        if self.connected is None or not await self.connected():
            problems.append("not connected to Slack")
        if self.redis is not None:
            try:
                await self.redis()
            except Exception as exc:  # whatever the client raises, Redis is not there for us
                log.debug("readiness: Redis unreachable (%s)", exc.__class__.__name__)
                problems.append("Redis unreachable")
        return problems


async def always() -> bool:
    return True


def exposed(multiproc_dir: str | None = None) -> Collector:
    """What `/metrics` shows: with a multiprocess directory (bot.workers sets PROMETHEUS_MULTIPROC_DIR
    for its workers), every process's values summed from the files there; else this process's."""
    path = multiproc_dir or os.environ.get(MULTIPROC_ENV)  # the variable prometheus-client itself reads
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def add_health_routes(web_app: web.Application, problems: Problems, multiproc_dir: str | None = None) -> None:
    """GET /metrics, /healthz and /readyz; they take no signature and show no content."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        found = await problems()
        if found:
            return web.Response(status=NOT_READY, text="not ready: " + ", ".join(found) + "\n")
        return web.Response(text="ready\n")

    web_app.router.add_get("/metrics", make_aiohttp_handler(exposed(multiproc_dir)))
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)


async def start_health(
    problems: Problems,
    *,
    port: int | None = None,
    host: str = "0.0.0.0",
    path: str | None = None,
    multiproc_dir: str | None = None,
) -> web.AppRunner:
    """Serve the health routes alone on host:port (0: a free port, see `runner.addresses`) or on the
    Unix socket `path`; `await runner.cleanup()` stops. Raises OSError if it cannot listen."""
    web_app = web.Application()
    add_health_routes(web_app, problems, multiproc_dir)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.UnixSite(runner, path) if path is not None else web.TCPSite(runner, host, port or 0)
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
