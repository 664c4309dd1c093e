"""The bench's side of the wire: fakes that timestamp what arrives, and the bot as its own process.

Timestamps are `time.perf_counter()` in the benchmark process, taken where the fakes record an
arrival (a Web API call once its parameters are read, an ack once its frame is parsed, a Claude
request once its body is read) or a departure (an answer's first token, as the fake writes it), so
every interval is measured on one clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from slack_sdk.signature import SignatureVerifier

from bot.http_intake import EVENTS_PATH
from tests.fakes.claude_api import ClaudeRequest, FakeClaude
from tests.fakes.slack_api import Call, FakeSlack
from tests.redis_server import RedisServer, free_port

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

OnCall = Callable[[Call, float], None]
OnAck = Callable[[str, float], None]
OnClaude = Callable[[ClaudeRequest, float], None]
OnToken = Callable[[dict[str, Any], float], None]


class _StampedCalls(list[Call]):
    """FakeSlack.calls, reporting each call with its arrival time (the fake only appends to it)."""

    def __init__(self, observe: OnCall) -> None:
        super().__init__()
        self._observe = observe

    def append(self, call: Call) -> None:
        now = time.perf_counter()
        super().append(call)
        self._observe(call, now)


class _StampedAcks(dict[str, dict[str, Any]]):
    """FakeSlack.acks, reporting each Socket Mode ack with its arrival time."""

    def __init__(self, observe: OnAck) -> None:
        super().__init__()
        self._observe = observe

    def __setitem__(self, envelope_id: str, frame: dict[str, Any]) -> None:
        now = time.perf_counter()
        super().__setitem__(envelope_id, frame)
        self._observe(envelope_id, now)


class _StampedRequests(list[ClaudeRequest]):
    """FakeClaude.requests, reporting each request with its arrival time."""

    def __init__(self, observe: OnClaude) -> None:
        super().__init__()
        self._observe = observe

    def append(self, request: ClaudeRequest) -> None:
        now = time.perf_counter()
        super().append(request)
        self._observe(request, now)


class TimedSlack(FakeSlack):
    """FakeSlack whose recorded calls and acks are also reported, timestamped, as they arrive; with
    several bot processes connected, envelopes go to their connections in turn, so a burst is shared
    evenly (Slack spreads events at random over an app's connections)."""

    def __init__(self, on_call: OnCall, on_ack: OnAck, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = _StampedCalls(on_call)
        self.acks = _StampedAcks(on_ack)
        self.spread = _InTurn()


class _InTurn(random.Random):
    """FakeSlack.spread that picks the connections in turn rather than at random: an even share."""

    def __init__(self) -> None:
        super().__init__()
        self._turn = 0

    def choice(self, seq: SupportsLenAndGetItem[T]) -> T:
        self._turn += 1
        return seq[self._turn % len(seq)]


class TimedClaude(FakeClaude):
    """FakeClaude whose requests are also reported, timestamped, as they arrive, and so is the moment each
    answer's first token leaves it: the time between the two is Claude's, however long the fake took."""

    def __init__(self, on_request: OnClaude, on_token: OnToken) -> None:
        super().__init__()
        self.requests = _StampedRequests(on_request)
        self.on_first_token = lambda body: on_token(body, time.perf_counter())


class SocketIntake:
    """Events as Slack sends them in Socket Mode: envelopes over the bot's connections; FakeSlack
    reports each ack as its frame arrives."""

    failures = 0  # a frame is not refused: an unacknowledged one shows as an ack missing

    def __init__(self, slack: TimedSlack, workers: int) -> None:
        self._slack, self._workers = slack, workers

    def settings(self) -> dict[str, str]:
        return {}

    async def ready(self) -> None:
        """Once every worker is connected."""
        await self._slack.wait_for_socket(timeout=30, count=self._workers)

    async def deliver(self, envelope: dict[str, Any]) -> None:
        await self._slack.send_envelope(envelope)

    async def settle(self) -> None:
        return None

    async def close(self) -> None:
        return None


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HttpIntake:
    """Events as Slack sends them in HTTP mode: each envelope's payload POSTed, signed, to the bot's
    events path, all of a burst at once, each over one of `connections` keep-alive connections opened
    beforehand; the ack is the response. Each is reported sent as it is written (`on_sent`) and acked
    as its response's head arrives (`on_ack`). Requests are written as bytes and only the status line
    and length of the answer read: aiohttp's client takes ~0.15 ms of this process's CPU a request, so
    in a burst of 200 the acks would measure the bench's own queue."""

    SECRET = "bench-signing-secret"

    def __init__(self, on_sent: OnAck, on_ack: OnAck, connections: int) -> None:
        self._on_sent, self._on_ack, self._connections = on_sent, on_ack, connections
        self._port = free_port()
        self._signer = SignatureVerifier(self.SECRET)
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        self._posts: set[asyncio.Task[None]] = set()
        self.failures = 0  # POSTs that did not get a 200

    def settings(self) -> dict[str, str]:
        return {"SLACK_APP_TOKEN": "", "SLACK_SIGNING_SECRET": self.SECRET, "PORT": str(self._port)}

    async def ready(self) -> None:
        """Once the bot answers, with as many connections open to it as a burst will use."""
        health = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
        async with asyncio.timeout(30):
            while True:
                try:
                    first = await self._connect()
                    if await _exchange(first, health) == 200:
                        break
                    first[1].close()
                except (OSError, asyncio.IncompleteReadError):
                    pass
                await asyncio.sleep(0.05)
        self._idle.put_nowait(first)
        for _ in range(self._connections - 1):
            self._idle.put_nowait(await self._connect())

    async def _connect(self) -> Connection:
        return await asyncio.open_connection("127.0.0.1", self._port)

    async def deliver(self, envelope: dict[str, Any]) -> None:
        post = asyncio.create_task(self._post(envelope["envelope_id"], json.dumps(envelope["payload"])))
        self._posts.add(post)
        post.add_done_callback(self._posts.discard)

    async def _post(self, envelope_id: str, body: str) -> None:
        timestamp = str(int(time.time()))
        signature = self._signer.generate_signature(timestamp=timestamp, body=body) or ""
        data = body.encode()
        request = (
            f"POST {EVENTS_PATH} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"X-Slack-Request-Timestamp: {timestamp}\r\nX-Slack-Signature: {signature}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data

        def acked() -> None:
            self._on_ack(envelope_id, time.perf_counter())

        connection = await self._idle.get()
        self._on_sent(envelope_id, time.perf_counter())
        try:
            status = await _exchange(connection, request, acked)
        except (OSError, asyncio.IncompleteReadError):  # the bot closed it (idle too long): once more
            connection[1].close()
            connection = await self._connect()
            status = await _exchange(connection, request, acked)
        self.failures += status != 200
        self._idle.put_nowait(connection)

    async def settle(self) -> None:
        """Every POST sent so far has its response."""
        await asyncio.gather(*self._posts, return_exceptions=True)

    async def close(self) -> None:
        await self.settle()
        while not self._idle.empty():
            self._idle.get_nowait()[1].close()


async def _exchange(connection: Connection, request: bytes, on_head: Callable[[], None] | None = None) -> int:
    """Write one request, read its answer's head and body; returns the status."""
    reader, writer = connection
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if on_head is not None:
        on_head()
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    if length:
        await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in this process while it times something: a full collection of the
    fakes' heap stalls their event loop for ~0.1 s, which would show up as the bot's latency."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used (all cores, /proc/stat): others' share is this
    minus ours, and says whether something else competed for the cores while we measured."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS  # user..steal; guest time is already in user


def bot_env(slack: FakeSlack, claude: FakeClaude, **overrides: str) -> dict[str, str]:
    """The bot's whole configuration: the fakes on 127.0.0.1, nothing from the developer's environment."""
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": claude.base_url,
        "CLAUDE_MAX_RETRIES": "0",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, `--save "" --appendonly no`, for the run of a level."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()


class BotProcess:
    """`python -m <module>` (the bot, or the baseline) in an empty temporary directory (its cwd, HOME and
    TMPDIR), with /proc readings."""

    def __init__(self, env: dict[str, str], module: str = "bot") -> None:
        self._env = env
        self._module = module
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=40)  # the last lines, for errors
        self.warnings = 0  # lines at WARNING or above

    async def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-bot-")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._dir.name,
            "TMPDIR": self._dir.name,
            "PYTHONPATH": str(REPO),  # this checkout's bot/, whatever is installed
            "PYTHONDONTWRITEBYTECODE": "1",  # the bot process writes nothing
            **self._env,
        }
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self._module,
            cwd=self._dir.name,  # no .env here: the environment above is the whole configuration
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        assert self._process is not None, "the bot is not started"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line:
                self.warnings += 1

    def tree(self) -> list[int]:
        """The process and its descendants (WORKERS > 1: the supervisor, then its workers)."""
        pids, i = [self.pid], 0
        while i < len(pids):
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pids[i]}/task").iterdir():
                    pids += [int(child) for child in (task / "children").read_text().split()]
            i += 1
        return pids

    def cpu_seconds_each(self) -> list[float]:
        """User plus system CPU time of each process of the tree (all its threads) so far."""
        return [_cpu_seconds(pid) for pid in self.tree()]

    def cpu_seconds(self) -> float:
        return sum(self.cpu_seconds_each())

    def cpu_ns(self) -> int:
        """CPU time the tree's threads have run, in nanoseconds (schedstat): fine enough for one burst."""
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):  # a process or thread that has just ended
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        total += int((task / "schedstat").read_text().split()[0])
        return total

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory any process of the tree has had."""
        return max(_peak_rss_mb(pid) for pid in self.tree())

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit code."""
        process = self._process
        try:
            if process is not None:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            if self._reader is not None:
                await asyncio.wait_for(self._reader, 5)
        finally:
            if self._dir is not None:
                self._dir.cleanup()
        return process.returncode if process else None


def _cpu_seconds(pid: int) -> float:
    # Fields after the ")" that ends the command name start at field 3 (state); utime is 14, stime 15.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # it has just ended
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")
