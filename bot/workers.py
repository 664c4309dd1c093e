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
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.config import Settings

log = logging.getLogger(__name__)

WORKER_ENV = "BOT_WORKER"  # set in a child's environment: "serve as worker <n>, do not supervise"
# What a child writes on its way out when it cannot start (bot/__main__.py), with exit code 1 or 2.
STARTUP_LINES = ("startup error: ", "configuration error: ")
LISTENING = "listening over"  # bot.app logs it once the child takes work ("listening over Socket Mode")
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

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
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
                env={**self.environ, WORKER_ENV: str(worker.number)},
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
        if LISTENING in line:
            worker.listened = True
        with contextlib.suppress(OSError):  # our stderr gone: keep supervising all the same
            sys.stderr.write(prefix + line + "\n")
            sys.stderr.flush()


def run_workers(settings: Settings, environ: Mapping[str, str]) -> int:
    """Supervise `settings.workers` children, each started with `environ` plus WORKER_ENV; the exit code."""
    return asyncio.run(Supervisor(settings, environ).run())


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
