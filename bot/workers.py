"""WORKERS > 1: `python -m bot` becomes a small supervisor of that many `python -m bot` children.

Each child is one ordinary bot (its own Socket Mode connection, or its own socket on the shared PORT),
started with WORKER_ENV set so that it serves instead of supervising. The parent:
- relays each child's output line by line with a `worker=<n>` prefix (the lines are the child's own
  content-free log lines; the parent adds nothing else to them);
- restarts a child that exits on its own (a crash, SIGKILL), waiting longer after each quick failure;
- stops everything when a child exits 1 or 2 before it ever took work (its configuration, PORT taken),
  and prints its "startup error: ..." line last, once, as a single bot would;
- on SIGTERM or SIGINT sends SIGTERM to every child, waits while they drain (SHUTDOWN_GRACE_SECONDS),
  and exits 0.

Metrics cover every child: when they are served, the parent makes a private directory (removed at exit)
and gives it to the children as PROMETHEUS_MULTIPROC_DIR, where each writes its counts (`bot.metrics`).
In HTTP mode each child serves them, summed, on the shared PORT. In Socket Mode the parent serves
METRICS_PORT: `/metrics` summed from the directory, `/readyz` ready when every child's own `/readyz`,
asked over its Unix socket in that directory (HEALTH_SOCKET_ENV), says so and the parent is not stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from bot.config import Settings
from bot.metrics import MULTIPROC_ENV, start_health

log = logging.getLogger(__name__)

WORKER_ENV = "BOT_WORKER"  # set in a child's environment: "serve as worker <n>, do not supervise"
HEALTH_SOCKET_ENV = "BOT_HEALTH_SOCKET"  # set for a Socket Mode child: where to serve its /readyz
HEALTH_TIMEOUT_SECONDS = 5.0  # a child's /readyz pings Redis, which gives up after 2 s
MAX_SOCKET_PATH = 100  # a Unix socket's path is at most 107 bytes on Linux
# What a child writes on its way out when it cannot start (bot/__main__.py), with exit code 1 or 2.
STARTUP_LINES = ("startup error: ", "configuration error: ")
LISTENING = "worker listening"  # a child's line once it takes work, written whatever its LOG_LEVEL
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
QUICK_EXIT_SECONDS = 60.0  # a child that ran shorter than this and exited counts towards a longer wait
STOP_MARGIN_SECONDS = 10.0  # past the grace period a child that still runs is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h
MAX_LINE_BYTES = 64 * 1024


def restart_delay(quick_exits: int) -> float:
    """Seconds before the next start after `quick_exits` quick exits in a row (1 s, 2 s, 4 s ... 30 s)."""
    return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** max(0, quick_exits - 1))


@dataclass
class _Worker:
    number: int
    process: asyncio.subprocess.Process | None = None
    quick_exits: int = 0
    startup_line: str | None = None  # the last start's "startup error: ..." line, if it wrote one
    listened: bool = False  # some start of it got as far as taking work


class Supervisor:
    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.environ = dict(environ)
        self.workers = [_Worker(n) for n in range(1, settings.workers + 1)]
        self.stopping = asyncio.Event()
        self.fatal: tuple[int, str] | None = None  # exit code and the line that says why
        self._before_exec = _parent_death_signal()
        self.metrics_dir: str | None = None  # while metrics are served: the children's shared directory

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        settings = self.settings
        if settings.socket_mode and settings.metrics_port is None:
            return await self._supervise()  # no metrics served: nothing to count them in
        self.metrics_dir = _private_directory()
        try:
            if not settings.socket_mode:  # each child serves them on PORT
                return await self._supervise()
            assert settings.metrics_port is not None
            try:
                health = await start_health(
                    self.problems, port=settings.metrics_port, multiproc_dir=self.metrics_dir
                )
            except OSError as exc:
                sys.stderr.write(
                    f"startup error: METRICS_PORT: cannot listen on port {settings.metrics_port} "
                    f"({exc.__class__.__name__})\n"
                )
                return 1
            log.info("metrics on port %d", settings.metrics_port)
            try:
                return await self._supervise()
            finally:
                await health.cleanup()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def problems(self) -> list[str]:
        """Why we are not ready (Socket Mode, METRICS_PORT): stopping, or each child that is not."""
        if self.stopping.is_set():
            return ["draining"]
        found = await asyncio.gather(*(self._worker_problem(worker) for worker in self.workers))
        return [problem for problem in found if problem is not None]

    async def _worker_problem(self, worker: _Worker) -> str | None:
        if worker.process is None or worker.process.returncode is not None:
            return f"worker={worker.number} not running"
        connector = aiohttp.UnixConnector(path=self._health_socket(worker.number))
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get(
                    "http://worker/readyz", timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS)
                ) as response,
            ):
                if response.status == 200:
                    return None
                return f"worker={worker.number} {(await response.text()).strip()[:200]}"
        except (aiohttp.ClientError, OSError, TimeoutError):  # not listening yet, or gone
            return f"worker={worker.number} not answering"

    def _health_socket(self, number: int) -> str:
        assert self.metrics_dir is not None
        return os.path.join(self.metrics_dir, f"w{number}.sock")

    def _child_env(self, worker: _Worker) -> dict[str, str]:
        env = {**self.environ, WORKER_ENV: str(worker.number)}
        if self.metrics_dir is not None:
            env[MULTIPROC_ENV] = self.metrics_dir
            if self.settings.socket_mode:
                env[HEALTH_SOCKET_ENV] = self._health_socket(worker.number)
        return env

    async def _supervise(self) -> int:
        log.info("starting %d workers", len(self.workers))
        keepers = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
        await self.stopping.wait()
        deadline = self.settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        _, late = await asyncio.wait(keepers, timeout=deadline)
        for worker in self.workers:
            if late and worker.process is not None and worker.process.returncode is None:
                log.warning("worker=%d did not stop within %.0fs: killed", worker.number, deadline)
                worker.process.kill()
        await asyncio.gather(*keepers)
        if self.fatal is not None:
            code, line = self.fatal
            if line:  # the child's own one line, said once and last, as one bot would
                sys.stderr.write(line + "\n")
            return code
        log.info("all %d workers stopped", len(self.workers))
        return 0

    def stop(self) -> None:
        """Take every child down (each drains on SIGTERM); nothing is started after this."""
        self.stopping.set()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)

    async def _keep(self, worker: _Worker) -> None:
        """Run one child until we stop, starting it again whenever it exits on its own."""
        while not self.stopping.is_set():
            started = time.monotonic()
            code, why = await self._run_once(worker)
            if self.stopping.is_set():
                return
            ran = time.monotonic() - started
            if code in (1, 2) and not worker.listened:
                # It never got going (its configuration, PORT taken, a bug at start): starting it again
                # would only fail again. Once it has run, a failed restart may be passing (Redis away).
                if self.fatal is None:
                    self.fatal = (code, worker.startup_line or "")
                    if worker.startup_line is None:  # else that line, printed last, says it
                        log.warning(
                            "worker=%d could not start (%s): stopping", worker.number, _describe_exit(code)
                        )
                self.stop()
                return
            worker.quick_exits = worker.quick_exits + 1 if ran < QUICK_EXIT_SECONDS else 0
            delay = restart_delay(worker.quick_exits)
            log.warning(
                "worker=%d exited (%s) after %.0fs; restarting in %.0fs",
                worker.number,
                why,
                ran,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)

    async def _run_once(self, worker: _Worker) -> tuple[int, str]:
        """Start the child and relay its output until it exits: its exit code, and why, in words."""
        worker.startup_line = None
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                env=self._child_env(worker),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Its own process group: a terminal's Ctrl-C reaches the parent only, which sends SIGTERM.
                process_group=0,
                preexec_fn=self._before_exec,
            )
        except OSError as exc:  # out of processes or memory: try again later
            return -1, f"not started: {exc.__class__.__name__}"
        worker.process = process
        if self.stopping.is_set():  # the signal came while it was being started
            process.send_signal(signal.SIGTERM)
        log.info("worker=%d started pid=%d", worker.number, process.pid)
        assert process.stdout is not None
        await self._relay(worker, process.stdout)
        code = await process.wait()
        return code, worker.startup_line or _describe_exit(code)

    async def _relay(self, worker: _Worker, output: asyncio.StreamReader) -> None:
        """Copy the child's lines to our stderr, `worker=<n>` first; hold back its startup error line."""
        prefix = f"worker={worker.number} "
        pending = b""
        while chunk := await output.read(MAX_LINE_BYTES):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) >= MAX_LINE_BYTES:  # no line is this long; pass it on rather than grow
                lines.append(pending)
                pending = b""
            for raw in lines:
                self._relay_line(worker, prefix, raw.decode(errors="replace"))
        if pending:
            self._relay_line(worker, prefix, pending.decode(errors="replace"))

    def _relay_line(self, worker: _Worker, prefix: str, line: str) -> None:
        if line.startswith(STARTUP_LINES):
            worker.startup_line = line
            return
        if line == LISTENING:  # for us alone
            worker.listened = True
            return
        with contextlib.suppress(OSError):  # our stderr gone: keep supervising all the same
            sys.stderr.write(prefix + line + "\n")
            sys.stderr.flush()


def run_workers(settings: Settings, environ: Mapping[str, str]) -> int:
    """Supervise `settings.workers` children, each started with `environ` plus WORKER_ENV; the exit code."""
    return asyncio.run(Supervisor(settings, environ).run())


def tell_supervisor_listening(environ: Mapping[str, str]) -> None:
    """In a child: it takes work from now on, so a failed restart later is passing (Redis away). Not a
    log line, which LOG_LEVEL=WARNING would hide."""
    if environ.get(WORKER_ENV):
        with contextlib.suppress(OSError):
            sys.stdout.write(LISTENING + "\n")
            sys.stdout.flush()


def worker_health_socket(environ: Mapping[str, str]) -> str | None:
    """In a Socket Mode child of a supervisor serving METRICS_PORT: where to serve its health routes."""
    return environ.get(HEALTH_SOCKET_ENV) or None


def _private_directory() -> str:
    """A fresh directory only we may read (mkdtemp: 0700), short enough to hold the children's sockets."""
    path = tempfile.mkdtemp(prefix="bot-metrics-")
    if len(path) + len("/w64.sock") > MAX_SOCKET_PATH:  # a long TMPDIR: /tmp is short
        os.rmdir(path)
        path = tempfile.mkdtemp(prefix="bot-metrics-", dir="/tmp")
    return path


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _parent_death_signal() -> Callable[[], None] | None:
    """What a child runs before exec so that, if the supervisor dies without stopping it (SIGKILL), it
    gets SIGTERM and drains rather than live on as an orphan holding a Socket Mode connection (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it

    def before_exec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return before_exec
