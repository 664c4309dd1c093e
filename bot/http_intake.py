"""HTTP mode's front door, before Bolt: bounded reads, then Slack's signature checked on the raw bytes
before anything parses them, then the request handed to Bolt, and Slack answered 200 for all it signed:
an event at once, before Bolt dispatches it in arrival order (`bot.arrivals`), as over Socket Mode; a
slash command or an interaction with Bolt's reply. Beside the events path, unsigned GETs of the health
routes (`bot.metrics`: /metrics, /healthz, /readyz).

The limits on a connection come from aiohttp itself: its keep-alive timer starts when a connection opens
(and again after each answer) and is not pushed back by bytes arriving, so a client has
`header_timeout_seconds` to deliver a complete request head; idle connections close then too. Header
lines and counts keep aiohttp's bounds (8 KB a line, 128 headers). The body gets `body_timeout_seconds`
and `max_body_bytes` here. A refused request's unread body is not drained: its connection is closed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot import metrics
from bot.arrivals import Arrivals
from bot.guards import always_acknowledged, bolt_can_read

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
Headers = dict[str, str | Sequence[str]]  # as Bolt takes them
EPOCH_SECONDS = re.compile(r"[0-9]{1,12}")  # the verifier calls int() on it, which raises on anything else
# Slack's signature is a lowercase hex HMAC-SHA256; the verifier's compare_digest raises TypeError (a 500)
# on a non-ASCII string, so anything else is refused as unsigned before it gets there.
SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    # Slack gives up on an answer after 3 seconds, so a request slower than these is lost anyway.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 5.0
    max_body_bytes: int = 1024 * 1024  # Slack's payloads are a few KB; a 40,000-character message ~200 KB


async def start_http(
    app: AsyncApp,
    signing_secret: str,
    *,
    host: str,
    port: int,
    limits: HttpLimits | None = None,
    shared_port: bool = False,
    ready: metrics.Problems | None = None,
    arrivals: Arrivals | None = None,
) -> web.AppRunner:
    """Listen on host:port (0: any free port, see `runner.addresses`); `await runner.cleanup()` stops.

    `shared_port`: with WORKERS > 1 every worker binds the same PORT (SO_REUSEPORT) and the kernel spreads
    connections; otherwise a PORT another program holds is refused, as it should be. `ready`: serve the
    health routes too, `/readyz` asking it. `arrivals`: where acked events wait for Bolt."""
    limits = limits or HttpLimits()
    runner = web.AppRunner(
        http_application(app, signing_secret, limits, ready, arrivals),
        access_log=None,
        keepalive_timeout=limits.header_timeout_seconds,
        lingering_time=0,  # don't read on after answering a refused request: close its connection
    )
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=shared_port or None).start()
    return runner


def http_application(
    app: AsyncApp,
    signing_secret: str,
    limits: HttpLimits,
    ready: metrics.Problems | None = None,
    arrivals: Arrivals | None = None,
) -> web.Application:
    verifier = SignatureVerifier(signing_secret)
    arrivals = arrivals or Arrivals()

    async def receive(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (EPOCH_SECONDS.fullmatch(timestamp) and SIGNATURE.fullmatch(signature)):
            return _refused(401, "unsigned")
        if (request.content_length or 0) > limits.max_body_bytes:
            return _refused(413, "body too large")
        try:
            async with asyncio.timeout(limits.body_timeout_seconds):
                raw = await request.read()  # past client_max_size aiohttp stops reading and raises
        except TimeoutError:
            return _refused(408, "body too slow")
        except web.HTTPRequestEntityTooLarge:
            return _refused(413, "body too large")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _refused(401, "not UTF-8, so not Slack's")
        if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            return _refused(401, "bad or stale signature")
        headers: Headers = dict(request.headers)
        if _is_event(body, request.content_type):  # Slack reads nothing in an event's answer
            arrivals.add(functools.partial(_dispatch, app, body, request.query_string, headers))
            metrics.acked("http", time.perf_counter() - started)
            return web.Response(status=200)
        bolt_request = _bolt_request(body, request.query_string, headers)
        if bolt_request is None:
            return web.Response(status=200)
        response = await to_aiohttp_response(always_acknowledged(await app.async_dispatch(bolt_request)))
        metrics.acked("http", time.perf_counter() - started)
        return response

    web_app = web.Application(client_max_size=limits.max_body_bytes)
    web_app.router.add_post(EVENTS_PATH, receive)
    if ready is not None:
        metrics.add_health_routes(web_app, ready)
    return web_app


def _is_event(body: str, content_type: str) -> bool:
    """An Events API delivery: JSON whose type is event_callback (read once more by Bolt, afterwards)."""
    if content_type != "application/json":
        return False
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "event_callback"


async def _dispatch(app: AsyncApp, body: str, query: str, headers: Headers) -> None:
    bolt_request = _bolt_request(body, query, headers)
    if bolt_request is None:
        return
    try:
        await app.async_dispatch(bolt_request)
    except Exception as exc:  # Bolt answers its listeners' errors itself; this is for its own
        log.debug("event not dispatched (%s)", exc.__class__.__name__)


def _bolt_request(body: str, query: str, headers: Headers) -> AsyncBoltRequest | None:
    """Bolt's request, parsed from a body Slack signed; None if it cannot be read (signed, but broken:
    answered 200, so that Slack does not send it again)."""
    try:
        bolt_request = AsyncBoltRequest(body=body, query=query, headers=headers)
    except Exception as exc:  # whatever Bolt's parsing raises, the answer is the same
        log.debug("signed request ignored: unreadable body (%s)", exc.__class__.__name__)
        return None
    if not bolt_can_read(bolt_request.body):
        log.debug("signed request ignored: not of a shape Bolt reads")
        return None
    return bolt_request


def _refused(status: int, reason: str) -> web.Response:
    log.debug("http request refused with %d: %s", status, reason)
    response = web.Response(status=status)
    response.force_close()
    return response
