"""Build the Slack app from settings and clients, and run it over Socket Mode or HTTP."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import re
import signal
import time
from typing import Any

import aiohttp
import redis.exceptions
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app, send_async_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot import guards, metrics
from bot.arrivals import Arrivals
from bot.backends import ClaudeClient, build_claude_client, where
from bot.config import ConfigError, Settings
from bot.http_intake import EVENTS_PATH, start_http
from bot.logs import BOLT_LOGGER
from bot.pipeline.answer import Pipeline
from bot.pipeline.ask import BotIdentity
from bot.policy import policy_summary
from bot.slack_calls import SlackCallFailed, slack_call
from bot.state import MemoryState, RedisState, State
from bot.surfaces import assistant, direct_message, feedback, mention, resumed, shortcuts, slash_command
from bot.workers import tell_supervisor_listening, worker_health_socket

log = logging.getLogger(__name__)


class StartupError(Exception):
    """Slack or the configuration refused us at start; the message is one line naming the variable."""


def build_slack_client(settings: Settings) -> AsyncWebClient:
    """Call from a running event loop: the client keeps one connection pool for every Web API call."""
    slack = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        # Without a session slack_sdk opens a new one, and a new connection, for every call; it applies
        # `timeout` only to sessions it opens, so ours carries it.
        session=aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.slack_timeout_seconds)),
    )
    # Beside the default retry on a dropped connection: wait out 429s (Retry-After) and retry 500/503.
    slack.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    slack.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=2))
    return slack


def build_app(
    settings: Settings,
    slack: AsyncWebClient,
    claude: ClaudeClient,
    pipeline: Pipeline | None = None,
) -> AsyncApp:
    """`pipeline` holds the State kept between requests (ids only), shared by every process when it is
    Redis; without one, a pipeline on this process's memory."""
    bolt_logger = logging.getLogger(BOLT_LOGGER)
    # Bolt reads SLACK_BOT_TOKEN from the environment besides the client's token, then warns that the
    # client's wins: the same token, so every process would start with a WARNING that says nothing.
    level = bolt_logger.level
    bolt_logger.setLevel(logging.ERROR)
    try:
        app = AsyncApp(
            client=slack,
            signing_secret=settings.slack_signing_secret or "",
            # Over HTTP, bot.http_intake has checked the signature on the raw bytes before Bolt sees them.
            request_verification_enabled=False,
            logger=bolt_logger,
        )
    finally:
        bolt_logger.setLevel(level)
    pipeline = pipeline or Pipeline(settings, slack, claude)
    state, keys = pipeline.state, pipeline.keys
    replays = None if settings.socket_mode else guards.recent_interaction_ids(state, keys)
    guards.register(app, guards.recent_event_ids(state, keys), replays)
    mention.register(app, pipeline)
    # Before direct_message: it takes the DM's threads.
    assistant.register(app, pipeline, pipeline.stop, pipeline.viewed)
    direct_message.register(app, pipeline)
    slash_command.register(app, pipeline, settings.slash_command, functools.partial(policy_summary, settings))
    shortcuts.register(app, pipeline)
    feedback.register(app)
    # Acknowledge any other event, so Slack does not redeliver what we do not handle.
    app.event(re.compile(".*"))(_acknowledge_only)
    return app


async def _acknowledge_only() -> None:
    return None


def watch_in_flight(
    pipeline: Pipeline, slack: AsyncWebClient, identity: dict[str, Any]
) -> asyncio.Task[None]:
    """Stop flags from other replicas, this replica's leases, and answers other replicas left unfinished
    (`bot.pipeline.inflight`), until cancelled."""
    bot = BotIdentity(_str_or_none(identity.get("user_id")), _str_or_none(identity.get("bot_id")))
    return asyncio.create_task(pipeline.in_flight.watch(resumed.resumer(slack, bot, pipeline)))


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT; then take no new work, finish what runs within the grace period,
    mark the rest as interrupted in Slack, and return. The health routes (`bot.metrics`) are served
    on PORT beside the events path, or in Socket Mode on METRICS_PORT until the drain is over."""
    try:
        claude = build_claude_client(settings)  # first: it may refuse a backend's missing credentials
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    slack = build_slack_client(settings)
    state: State = MemoryState()
    try:
        identity = await _check_bot_token(slack)
        if settings.redis_url is not None:
            state = await _reach_redis(settings.redis_url)
        log.info("Claude through %s", where(settings))
        pipeline = Pipeline(settings, slack, claude, state)
        app = build_app(settings, slack, claude, pipeline)
        await warm_up(app, identity)
        watching = watch_in_flight(pipeline, slack, identity)
        # What start-up made (modules, clients, Bolt's app) lives as long as the process: leave it out
        # of every later collection, so that collections under a burst scan only requests' objects.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ready = metrics.Readiness(stop.is_set, state.ping if isinstance(state, RedisState) else None)
        health = await _start_health(settings, ready)
        arrivals = Arrivals()  # what was acked, on its way to the pipeline
        try:
            if settings.slack_app_token is not None:
                await _serve_socket_mode(app, settings.slack_app_token, stop, ready, arrivals)
            else:
                await _serve_http(app, settings, stop, ready, arrivals)
            log.info(
                "stopping: finishing answers in progress for up to %.0fs", settings.shutdown_grace_seconds
            )
            interrupted = await pipeline.drain(settings.shutdown_grace_seconds, arrivals.settled)
            watching.cancel()
        finally:
            if health is not None:
                await health.cleanup()
        log.info("stopped; %d answers interrupted", interrupted)
    finally:
        await claude.close()
        await state.close()
        if slack.session is not None:
            await slack.session.close()


async def _start_health(settings: Settings, ready: metrics.Readiness) -> web.AppRunner | None:
    """Socket Mode's health routes: on METRICS_PORT, or for a worker on the Unix socket its supervisor
    asks (the supervisor serves METRICS_PORT); None when not served (HTTP mode serves them on PORT)."""
    if not settings.socket_mode:
        return None
    path = worker_health_socket(os.environ) if settings.workers > 1 else None
    port = settings.metrics_port if settings.workers == 1 else None
    if path is None and port is None:
        return None
    try:
        runner = await metrics.start_health(ready.problems, port=port, path=path)
    except OSError as exc:
        what = f"listen on port {port}" if port is not None else "serve this worker's health socket"
        raise StartupError(f"METRICS_PORT: cannot {what} ({exc.__class__.__name__})") from None
    if port is not None:
        log.info("metrics on port %d", port)
    return runner


async def _reach_redis(url: str) -> RedisState:
    state = RedisState(url)
    try:
        await state.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        await state.close()
        raise StartupError(f"REDIS_URL: cannot reach Redis ({exc.__class__.__name__})") from None
    log.info("state shared through Redis")
    return state


async def warm_up(app: AsyncApp, identity: dict[str, Any]) -> None:
    """Let Bolt make its one auth.test now, with an event it ignores, so that no real event's ack
    waits on it."""
    event = {"type": "app_home_opened", "user": identity.get("user_id"), "tab": "home"}
    body = {
        "type": "event_callback",
        "team_id": identity.get("team_id"),
        "event_id": "warm-up",
        "event": event,
    }
    await app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))


async def _check_bot_token(slack: AsyncWebClient) -> dict[str, Any]:
    try:
        with slack_call("auth.test"):
            identity = await slack.auth_test()
    except SlackCallFailed as exc:
        if exc.refused:
            raise StartupError(f"SLACK_BOT_TOKEN: Slack rejected it ({exc.error})") from None
        raise StartupError(f"SLACK_API_URL: cannot reach Slack ({exc.error})") from None
    log.info("connected as bot user=%s team=%s", identity.get("user_id"), identity.get("team_id"))
    return dict(identity.data) if isinstance(identity.data, dict) else {}


class AckOnArrivalClient(SocketModeClient):
    """slack_sdk's aiohttp Socket Mode client, acknowledging each Events API envelope in its receive loop
    as the frame is read, before any listener runs: under a burst an ack waits on nothing but the
    socket, not on the dispatch of the envelopes read before it. Each envelope is parsed once; its
    listeners run as the SDK runs them, in a task of their own, in the order the envelopes came
    (`bot.arrivals`). Slash commands and interactions are acked by the handler, with Bolt's reply; one
    whose payload Bolt could not read (not an object, an event of another shape), here, and dropped."""

    def __init__(self, arrivals: Arrivals | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._arrivals = arrivals or Arrivals()

    async def enqueue_message(self, message: str) -> None:
        try:
            envelope = json.loads(message) if message.startswith("{") else {}
        except ValueError:
            log.debug("an unreadable Socket Mode frame was dropped")
            return
        if not isinstance(envelope, dict):
            return
        envelope_id = envelope.get("envelope_id")
        readable = guards.bolt_can_read(envelope.get("payload"))  # else Bolt (or the SDK) fails on it
        if isinstance(envelope_id, str) and (envelope.get("type") == "events_api" or not readable):
            arrived = time.perf_counter()
            await self.send_socket_mode_response({"envelope_id": envelope_id})
            metrics.acked("socket_mode", time.perf_counter() - arrived)
            if not readable:
                log.debug("an envelope whose payload Bolt cannot read was acked and dropped")
                return
        self._arrivals.add(functools.partial(self.run_message_listeners, envelope, message))


class AckFirstSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler on AckOnArrivalClient: Events API envelopes arrive acked, and every
    other one is acked with Bolt's reply, or empty when Bolt has none (no listener of ours takes it, or
    its payload broke one)."""

    def __init__(self, app: AsyncApp, app_token: str, arrivals: Arrivals | None = None) -> None:
        self.app = app  # Bolt's own attributes, on our client
        self.app_token = app_token
        self.client = AckOnArrivalClient(
            arrivals, app_token=app_token, logger=app.logger, web_client=app.client
        )
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        if req.type == "events_api":  # acked on arrival
            await run_async_bolt_app(self.app, req)
            return
        arrived, started = time.perf_counter(), time.time()
        try:
            response = await run_async_bolt_app(self.app, req)
        except Exception as exc:  # Bolt could not even read the payload: still acked
            log.debug("envelope type=%s unreadable (%s)", req.type, exc.__class__.__name__)
            response = BoltResponse(status=200, body="")
        await send_async_response(client, req, guards.always_acknowledged(response), started)
        metrics.acked("socket_mode", time.perf_counter() - arrived)


async def _serve_socket_mode(
    app: AsyncApp, app_token: str, stop: asyncio.Event, ready: metrics.Readiness, arrivals: Arrivals
) -> None:
    handler = AckFirstSocketModeHandler(app, app_token, arrivals)
    try:
        # Asked here, not inside connect_async: slack_sdk's connect loop catches a refusal and retries
        # it every few seconds for ever, so a revoked token would never stop the bot.
        with slack_call("apps.connections.open"):
            opened = await app.client.apps_connections_open(app_token=app_token)
        handler.client.wss_uri = opened["url"]
    except SlackCallFailed as exc:
        if not exc.refused:
            raise  # only a refusal names the setting to fix
        raise StartupError(f"SLACK_APP_TOKEN: Slack rejected it ({exc.error})") from None
    try:
        # The SDK retries a connection that fails for as long as it takes: a stop asked for meanwhile wins.
        connecting = asyncio.ensure_future(handler.connect_async())  # type: ignore[no-untyped-call]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
            return
        stopping.cancel()
        connecting.result()
        ready.connected = handler.client.is_connected
        log.info("listening over Socket Mode")
        tell_supervisor_listening(os.environ)
        await stop.wait()
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


async def _serve_http(
    app: AsyncApp, settings: Settings, stop: asyncio.Event, ready: metrics.Readiness, arrivals: Arrivals
) -> None:
    port, secret = settings.port, settings.slack_signing_secret or ""
    ready.connected = metrics.always  # Slack reaches us: listening is being connected
    try:
        runner = await start_http(
            app,
            secret,
            host="0.0.0.0",
            port=port,
            shared_port=settings.workers > 1,
            ready=ready.problems,
            arrivals=arrivals,
        )
    except OSError as exc:  # taken, or not ours to take
        raise StartupError(f"PORT: cannot listen on port {port} ({exc.__class__.__name__})") from None
    try:
        log.info("listening over HTTP on port %d at %s", port, EVENTS_PATH)
        tell_supervisor_listening(os.environ)
        await stop.wait()
    finally:
        await runner.cleanup()
