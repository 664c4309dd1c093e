"""WORKERS=N: `python -m bot` supervises N worker processes on this host, each with its own Socket Mode
connection (or its own socket on the shared PORT), restarts one that dies, drains them all on SIGTERM,
and stops in one line when they cannot start."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.signature import SignatureVerifier

from bot.http_intake import EVENTS_PATH
from tests.bot_process import BotProcess, run_to_exit
from tests.conftest import ALICE, BOT_USER, CHANNEL, bot_env, mention, said
from tests.fakes.slack_api import FakeSlack
from tests.redis_server import RedisServer, free_port

SECRET = "test-signing-secret"
STARTED = re.compile(r"worker=(\d+) started pid=(\d+)")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack whose bot token is this test's own: what the workers keep in the session's Redis is
    keyed by it, so no other test's event ids or counts are seen here."""
    async with FakeSlack(bot_token=f"xoxb-{uuid.uuid4().hex}", bot_user_id=BOT_USER) as fake:
        fake.add_user(ALICE, display_name="Alice", real_name="Alice Archer")
        yield fake


@pytest.fixture
async def launch(tmp_path, slack) -> AsyncIterator[Callable[[dict[str, str]], Awaitable[BotProcess]]]:
    """Start `python -m bot`; whatever a failing test leaves running is stopped at the end."""
    bots: list[BotProcess] = []

    async def start(env: dict[str, str]) -> BotProcess:
        bot = BotProcess(tmp_path, env)
        await bot.start()
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        if bot.process.returncode is None:
            bot.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(bot.process.wait(), timeout=30)
            except TimeoutError:
                bot.process.kill()
                await bot.process.wait()
        for pid in started_pids(bot).values():
            if alive(pid) and slack.bot_token.encode() in _environ(pid):  # still ours: a leftover worker
                os.kill(pid, signal.SIGKILL)


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return environ.read()
    except OSError:
        return b""


def workers_env(slack, claude, redis_server, **overrides: str) -> dict[str, str]:
    return bot_env(
        slack, claude, WORKERS="2", REDIS_URL=redis_server.url, USER_REQUESTS_PER_MINUTE="1000", **overrides
    )


def started_pids(bot: BotProcess) -> dict[int, int]:
    """Worker number -> pid of its latest start, from the supervisor's log."""
    return {int(m[1]): int(m[2]) for line in bot.output if (m := STARTED.search(line))}


def answered_by(bot: BotProcess, request_id: str) -> str:
    [line] = [line for line in bot.output if f"request={request_id} " in line and " answered " in line]
    return line.split(" ", 1)[0]  # the `worker=<n>` the supervisor puts first


def alive(pid: int) -> bool:
    """Running; a zombie (exited, not yet reaped by whoever adopted it) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def exited(pid: int) -> None:
    """Wait until `pid` is gone (its parent reaps it), polling: there is nothing to await on another
    process's child."""
    async with asyncio.timeout(30):
        while alive(pid):
            await asyncio.sleep(0.05)


def thread_mention(slack: FakeSlack, text: str, ts: str) -> dict:
    slack.add_thread(CHANNEL, [said(ALICE, text, ts)])
    return slack.events_api_envelope(mention(text, ts=ts), event_id=f"Ev{uuid.uuid4().hex[:12]}")


async def test_each_worker_holds_a_socket_and_answers_its_events_once_and_sigterm_drains_both(
    slack, claude, redis_server, launch
):
    claude.first_token_delay = 0.5
    bot = await launch(workers_env(slack, claude, redis_server, SHUTDOWN_GRACE_SECONDS="10"))
    await slack.wait_for_socket(count=2, timeout=30)
    assert len(slack.sockets) == 2
    pids = started_pids(bot)
    assert sorted(pids) == [1, 2]

    frames = [
        thread_mention(slack, "<@U0BOT> one", "5.000001"),
        thread_mention(slack, "<@U0BOT> two", "5.000002"),
    ]
    await asyncio.gather(*(ws.send_str(json.dumps(f)) for ws, f in zip(slack.sockets, frames, strict=True)))
    await claude.wait_for_requests(2, timeout=30)

    output = await bot.stop()  # SIGTERM to the supervisor, with both answers in flight

    assert bot.process.returncode == 0, output
    assert slack.thread_texts(CHANNEL, "5.000001") == ["Hello from fake Claude."]
    assert slack.thread_texts(CHANNEL, "5.000002") == ["Hello from fake Claude."]
    assert len(claude.requests) == 2
    # The two sockets were two processes: each event was answered by a different worker.
    assert {answered_by(bot, f["payload"]["event_id"]) for f in frames} == {"worker=1", "worker=2"}
    assert output.count("stopped; 0 answers interrupted") == 2
    assert not any(alive(pid) for pid in pids.values())
    assert "restarting" not in output and "Traceback" not in output


async def test_a_worker_killed_outright_is_started_again_and_all_stop_with_the_supervisor(
    slack, claude, redis_server, launch
):
    bot = await launch(workers_env(slack, claude, redis_server))
    await slack.wait_for_socket(count=2, timeout=30)
    await bot.wait_for_output("listening over Socket Mode", count=2)
    killed = started_pids(bot)[2]

    os.kill(killed, signal.SIGKILL)

    [restart] = await bot.wait_for_output("restarting in")
    assert "worker=2 exited (signal SIGKILL)" in restart
    await slack.wait_for_socket(count=3, timeout=30)
    assert started_pids(bot)[2] != killed
    await bot.wait_for_output("listening over Socket Mode", count=3)

    frame = thread_mention(slack, "<@U0BOT> after the restart", "6.000001")
    await slack.sockets[-1].send_str(json.dumps(frame))  # the newest connection: the restarted worker's
    await slack.wait_for("reactions.remove", timeout=30)
    assert slack.thread_texts(CHANNEL, "6.000001") == ["Hello from fake Claude."]
    await bot.wait_for_output(f"request={frame['payload']['event_id']} ")
    assert answered_by(bot, frame["payload"]["event_id"]) == "worker=2"

    # The supervisor itself killed outright: no chance to pass anything on, the kernel tells the
    # workers (SIGTERM), rather than leave them running as orphans with their Socket Mode connections.
    workers = started_pids(bot).values()
    bot.process.kill()
    await bot.stop(signal_first=False)
    for pid in workers:
        await exited(pid)


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


async def test_at_log_level_warning_a_worker_whose_restart_meets_redis_away_is_tried_again(
    tmp_path, slack, claude, launch
):
    """Whether a worker ever took work must not hang on an INFO line that LOG_LEVEL=WARNING hides: a
    restart failing while Redis is away is passing, and must not stop every worker."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        bot = await launch(workers_env(slack, claude, server, LOG_LEVEL="WARNING"))
        await slack.wait_for_socket(count=2, timeout=30)
        server.stop()
        os.kill(child_pids(bot.process.pid)[0], signal.SIGKILL)

        # Restarted, it meets Redis away and exits 1 ("startup error: REDIS_URL"): it is tried again.
        await bot.wait_for_output("restarting in", count=2, timeout=15)
        assert bot.process.returncode is None
        server.start()
        await slack.wait_for_socket(count=3, timeout=30)
        output = await bot.stop()
        assert bot.process.returncode == 0, output
    finally:
        server.stop()


async def http_workers(slack, claude, redis_server, launch) -> tuple[BotProcess, int]:
    """Two workers listening over HTTP on one port; returns the bot and the port."""
    port = free_port()
    env = workers_env(
        slack, claude, redis_server, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET, PORT=str(port)
    )
    bot = await launch(env)
    await bot.wait_for_output(f"listening over HTTP on port {port}", count=2)
    return bot, port


async def ask_until_both_workers_answer(slack: FakeSlack, bot: BotProcess, port: int, root: int) -> int:
    """Signed mentions, one at a time, until each worker has answered one; returns how many were sent.

    A new connection for each request, so that the kernel picks a listener for each; with two
    listeners, 40 picks all landing on the same one would take a 1-in-2**39 chance."""
    workers: set[str] = set()
    verifier = SignatureVerifier(SECRET)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for n in range(1, 41):
            frame = thread_mention(slack, f"<@U0BOT> question {n}", f"{root}.{n:06d}")
            body = json.dumps(frame["payload"])
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": verifier.generate_signature(timestamp=timestamp, body=body),
            }
            async with session.post(
                f"http://127.0.0.1:{port}{EVENTS_PATH}", data=body, headers=headers
            ) as resp:
                assert resp.status == 200
            event_id = frame["payload"]["event_id"]
            await bot.wait_for_output(f"request={event_id} ")
            workers.add(answered_by(bot, event_id))
            if len(workers) == 2:
                break
    assert workers == {"worker=1", "worker=2"}
    return n


async def test_http_workers_share_one_port_and_both_answer(slack, claude, redis_server, launch):
    bot, port = await http_workers(slack, claude, redis_server, launch)
    asked = await ask_until_both_workers_answer(slack, bot, port, 7)
    await slack.wait_for("reactions.remove", count=asked, timeout=30)

    assert len(claude.requests) == asked  # each answered once
    output = await bot.stop()
    assert bot.process.returncode == 0, output


async def test_more_than_one_worker_without_redis_url_is_refused_in_one_line_naming_workers(
    slack, claude, tmp_path
):
    code, stdout, stderr = await run_to_exit(tmp_path, bot_env(slack, claude, WORKERS="2"))

    assert code == 2
    assert stdout == ""
    assert stderr.startswith("configuration error: WORKERS: ")
    assert stderr.count("\n") == 1
    assert slack.calls == []  # no worker was started


async def test_workers_that_cannot_start_stop_the_supervisor_with_that_one_line(slack, claude, tmp_path):
    env = bot_env(slack, claude, WORKERS="2", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    code, _, stderr = await run_to_exit(tmp_path, env)

    assert code == 1
    assert stderr.endswith("\nstartup error: REDIS_URL: cannot reach Redis (ConnectionError)\n")
    assert stderr.count("startup error") == 1  # both workers failed; it is said once, last
    assert "restarting" not in stderr
    assert "Traceback" not in stderr


async def test_workers_that_cannot_bind_port_stop_the_supervisor_rather_than_restart(
    slack, claude, redis_server, tmp_path
):
    with socket.socket() as taken:  # another program holds PORT, without SO_REUSEPORT
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = workers_env(
            slack, claude, redis_server, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET, PORT=str(port)
        )

        code, _, stderr = await run_to_exit(tmp_path, env)

    assert code == 1
    assert stderr.splitlines()[-1].startswith("startup error: PORT: "), stderr  # as one bot says it
    assert "restarting" not in stderr
    assert "Traceback" not in stderr
    assert "uncaught" not in stderr


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus text scrape (0 when it is not there)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


async def get(url: str) -> tuple[int, str]:
    """A GET on a connection of its own, so that with a shared PORT the kernel picks a worker for each."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(url) as response,
    ):
        return response.status, await response.text()


def multiproc_dir(pid: int) -> str:
    [entry] = [e for e in _environ(pid).split(b"\0") if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return entry.split(b"=", 1)[1].decode()


async def test_socket_mode_workers_metrics_port_sums_both_and_is_ready_only_when_both_are(
    slack, claude, redis_server, launch
):
    port = free_port()
    bot = await launch(workers_env(slack, claude, redis_server, METRICS_PORT=str(port)))
    url = f"http://127.0.0.1:{port}"
    await slack.wait_for_socket(count=2, timeout=30)
    await bot.wait_for_output("listening over Socket Mode", count=2)
    assert await get(f"{url}/readyz") == (200, "ready\n")
    assert await get(f"{url}/healthz") == (200, "ok\n")
    pids = started_pids(bot)
    shared = multiproc_dir(pids[1])
    assert multiproc_dir(pids[2]) == shared
    assert os.stat(shared).st_mode & 0o777 == 0o700  # private to us

    # One failed thread read in each worker: only the sum of both processes' counts says 2.
    slack.fail("conversations.replies", error="thread_not_found", times=2)
    frames = []
    for n in (1, 2):
        root, ts = f"8.00000{n}", f"8.10000{n}"
        slack.add_thread(CHANNEL, [said(ALICE, "a root", root), said(ALICE, "<@U0BOT> sum this", ts)])
        event = mention("<@U0BOT> sum this", ts=ts, thread_ts=root)
        frames.append(slack.events_api_envelope(event, event_id=f"Ev{uuid.uuid4().hex[:12]}"))
    await asyncio.gather(*(ws.send_str(json.dumps(f)) for ws, f in zip(slack.sockets, frames, strict=True)))
    failed = await bot.wait_for_output(" failed: ", count=2)
    assert {line.split(" ", 1)[0] for line in failed} == {"worker=1", "worker=2"}

    status, text = await get(f"{url}/metrics")
    assert status == 200
    errors = (
        "claude_slack_slack_errors_total",
        {"method": "conversations_replies", "error": "thread_not_found"},
    )
    assert metric(text, errors[0], **errors[1]) == 2
    assert "pid=" not in text

    # A worker draining (SIGTERM to it alone, an answer in flight) is up but not ready: so are we.
    [first] = [line for line in failed if f"request={frames[0]['payload']['event_id']} " in line]
    draining = int(first.split(" ", 1)[0].removeprefix("worker="))  # the worker behind sockets[0]
    claude.gate = asyncio.Event()
    held = thread_mention(slack, "<@U0BOT> a long one", "8.200001")
    await slack.sockets[0].send_str(json.dumps(held))
    await claude.wait_for_requests(1, timeout=30)
    os.kill(pids[draining], signal.SIGTERM)
    [stopping] = await bot.wait_for_output("stopping: finishing answers")
    assert stopping.startswith(f"worker={draining} ")
    status, text = await get(f"{url}/readyz")
    assert status == 503 and f"worker={draining} not ready: draining" in text, text
    claude.gate.set()
    await bot.wait_for_output("listening over Socket Mode", count=3)  # it exited and was started again
    assert await get(f"{url}/readyz") == (200, "ready\n")
    assert slack.thread_texts(CHANNEL, "8.200001") == ["Hello from fake Claude."]
    errors_after = metric((await get(f"{url}/metrics"))[1], errors[0], **errors[1])
    assert errors_after == 2  # the count of a worker that has exited stays

    output = await bot.stop()
    assert bot.process.returncode == 0, output
    assert not os.path.exists(shared)  # removed at exit
    assert "Traceback" not in output


async def test_http_workers_each_serve_the_metrics_of_both_on_port(slack, claude, redis_server, launch):
    bot, port = await http_workers(slack, claude, redis_server, launch)
    url = f"http://127.0.0.1:{port}"
    n = await ask_until_both_workers_answer(slack, bot, port, 9)

    # Whichever worker answers the scrape, it counts both workers' acks.
    status, text = await get(f"{url}/metrics")
    assert status == 200
    assert metric(text, "claude_slack_ack_seconds_count", transport="http") == n
    assert await get(f"{url}/readyz") == (200, "ready\n")
    assert await get(f"{url}/healthz") == (200, "ok\n")
    await slack.wait_for("reactions.remove", count=n, timeout=30)
    output = await bot.stop()
    assert bot.process.returncode == 0, output
