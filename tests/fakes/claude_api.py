"""Loopback fake of the Anthropic Messages API (JSON and SSE) for the real AsyncAnthropic client, and of the
same API as Amazon Bedrock (AWS event-stream) and Google Vertex AI (SSE) serve it, for the SDK's
AsyncAnthropicBedrock and AsyncAnthropicVertex, with a Google OAuth token endpoint for the latter."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import struct
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.loopback import LoopbackServer

ALLOWED_FIELDS = frozenset(
    "model max_tokens messages system metadata stop_sequences stream temperature top_p top_k tools"
    " tool_choice thinking service_tier container mcp_servers context_management output_config inference_geo"
    " output_format speed cache_control".split()
)
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_STATUS_BY_TYPE = {error_type: status for status, error_type in ERROR_TYPES.items()}
_ERROR_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "This request would exceed your organization's rate limit.",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}
# AWS error names by HTTP status (botocore's bedrock-runtime model), for errors before a Bedrock stream.
AWS_ERRORS: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# Google's error statuses for what Vertex AI answers itself (auth, quota); the model's errors pass through.
GOOGLE_ERRORS: dict[int, str] = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
}
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
BEDROCK_VERSION = "bedrock-2023-05-31"
VERTEX_VERSION = "vertex-2023-10-16"
_PREFILL = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)


@dataclass
class ClaudeRequest:
    body: dict[str, Any]
    headers: dict[str, str]  # lower-cased names
    path: str = "/v1/messages"  # as the server saw it, percent-decoded


@dataclass
class _CacheEntry:
    tokens: int  # the prefix's, up to and including its breakpoint's block
    ttl: str
    expires: float  # on the fake's cache clock


@dataclass
class _Failure:
    kind: Literal["status", "midstream", "drop", "hang"]
    status: int = 500
    error_type: str = "api_error"
    headers: dict[str, str] = field(default_factory=dict)
    after_chunks: int | None = None


@dataclass
class _Bucket:
    """One of the API's rate limits: a token bucket of `limit` that refills fully in `per_seconds`."""

    limit: int
    per_seconds: float
    level: float = -1.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = float(self.limit)

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.limit, self.level + (now - self.at) * self.limit / self.per_seconds)
        self.at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket holds `amount` (0 if it does)."""
        self.refill()
        return max(0.0, (min(amount, self.limit) - self.level) * self.per_seconds / self.limit)

    def headers(self, name: str) -> dict[str, str]:
        full_in = (self.limit - self.level) * self.per_seconds / self.limit
        reset = datetime.fromtimestamp(time.time() + full_in, UTC).isoformat(timespec="milliseconds")
        return {
            f"anthropic-ratelimit-{name}-limit": str(self.limit),
            f"anthropic-ratelimit-{name}-remaining": str(max(0, math.floor(self.level))),
            f"anthropic-ratelimit-{name}-reset": reset.replace("+00:00", "Z"),
        }


class _Invalid(Exception):
    """What the real API would reject with 400 invalid_request_error; the text is the API's message."""


class FakeClaude(LoopbackServer):
    def __init__(self) -> None:
        self.requests: list[ClaudeRequest] = []
        self.responder: Callable[[dict[str, Any]], str] = lambda _body: "Hello from fake Claude."
        self.chunk_chars = 20
        self.first_token_delay = 0.0
        self.chunk_delay = 0.0
        self.abandoned = 0  # streams whose client hung up before the end (a reader pressed Stop, say)
        # Called with each request's body just before its first text delta is written (benchmarks time it).
        self.on_first_token: Callable[[dict[str, Any]], None] | None = None
        self.gate: asyncio.Event | None = None  # when set to an Event, streams wait for it to start
        # Thinking (`think`, `lead_with`): blocks streamed before the answer's text block, as models that
        # think send them. A set `thinking_gate` holds each thinking block before its signature.
        self.thinking_gate: asyncio.Event | None = None
        self.thinking_delay = 0.0  # seconds between thinking deltas
        self.thinking_started = 0  # streams that have sent a thinking delta
        self._leads: deque[list[dict[str, Any]]] = deque()
        self._paused: list[list[dict[str, Any]]] = []  # turns paused (`pause_turn`), which may be sent back
        self.rate_limited = 0  # requests refused with 429 because a rate limit was exhausted
        # Scripted usage fields added to each answer's usage instead of the emulated ones below:
        # {"cache_read_input_tokens": 900, "cache_creation": {...}}; {}: emulate prompt caching.
        self.cache_usage: dict[str, Any] = {}
        # Prompt caching as the API does it (`_input_usage`): the prefix up to each breakpoint
        # (`cache_control` on a block, or the top-level one: the last block) is remembered, as a hash and
        # its token count, for its TTL, refreshed on each hit, if it is at least `cache_min_tokens` long;
        # a later request whose prefix up to a breakpoint, or up to one of the `cache_lookback` blocks
        # before it, is remembered reads it. Tokens as `_estimate_tokens` counts them (text only).
        self.cache_min_tokens = 1024
        self.cache_lookback = 20
        self.cache_ttl_seconds = {"5m": 300.0, "1h": 3600.0}
        self._cache: dict[tuple[str, str], _CacheEntry] = {}
        self._cache_clock = 0.0  # seconds passed, for TTLs: moved by `pass_time` only
        self._buckets: dict[str, _Bucket] = {}
        self.set_rate_limits()
        self._replies: deque[tuple[str, str]] = deque()
        self._failures: deque[_Failure] = deque()
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()  # releases hung handlers so shutdown does not wait for them
        self.access_token = "ya29.fake-vertex-token"  # what the OAuth endpoint issues and Vertex accepts
        self.tokens_issued = 0
        self.refuse_grants = False  # the token endpoint then answers 400 invalid_grant, as for a revoked key
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        # Bedrock (bedrock-runtime InvokeModel): the model id, or an ARN with slashes, is part of the path.
        app.router.add_post("/model/{model:.+}/invoke-with-response-stream", self._bedrock)
        app.router.add_post("/model/{model:.+}/invoke", self._bedrock)
        # Vertex AI: .../models/{model}:streamRawPredict or :rawPredict, under the /v1 of its base URL.
        vertex = "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{target}"
        app.router.add_post(vertex, self._vertex)
        app.router.add_post("/oauth2/token", self._google_token)
        super().__init__(app)

    async def close(self) -> None:
        self._closing.set()  # releases hung requests
        await super().close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def vertex_base_url(self) -> str:
        """Like https://{region}-aiplatform.googleapis.com/v1."""
        return f"{self.base_url}/v1"

    @property
    def token_uri(self) -> str:
        """The OAuth token endpoint, for a google-auth credentials file's `token_uri`."""
        return f"{self.base_url}/oauth2/token"

    def google_credentials(self, project_id: str = "fake-project") -> dict[str, str]:
        """A service account key file's content (GOOGLE_APPLICATION_CREDENTIALS) whose access tokens come
        from this fake. google-auth honours `token_uri` for service accounts; for "authorized_user" files it
        always uses Google's own endpoint."""
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": "fake-key-id",
            "private_key": _service_account_key(),
            "client_email": f"slack-bot@{project_id}.iam.gserviceaccount.com",
            "client_id": "100000000000000000000",
            "token_uri": self.token_uri,
        }

    # --- scripting ---

    def reply(self, text: str, *, stop_reason: str = "end_turn") -> None:
        self._replies.append((text, stop_reason))

    def set_rate_limits(
        self,
        *,
        requests: int | None = 4000,
        input_tokens: int = 2_000_000,
        output_tokens: int = 400_000,
        per_seconds: float = 60.0,
    ) -> None:
        """The organisation's limits on the Anthropic API (per minute there; `per_seconds` here, so that a
        test need not wait a minute): token buckets, full at first, told in `anthropic-ratelimit-*` headers
        of every response and enforced with 429 and `retry-after`. `requests=None`: no limits and no
        headers, as behind a gateway that strips them."""
        self._buckets = {}
        if requests is not None:
            self._buckets = {
                "requests": _Bucket(requests, per_seconds),
                "input-tokens": _Bucket(input_tokens, per_seconds),
                "output-tokens": _Bucket(output_tokens, per_seconds),
            }

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        error_type: str | None = None,
        retry_after_ms: float | None = None,
        retry_after: int | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """The SDK ignores `retry-after-ms: 0` (needs > 0) and backs off ~0.5 s: pass 1 to retry at once.
        `retry_after` is in seconds, as the API sends it with a 429."""
        headers = {}
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if should_retry is not None:
            headers["x-should-retry"] = "true" if should_retry else "false"
        kind = error_type or ERROR_TYPES.get(status, "api_error")
        self._failures.extend(_Failure("status", status, kind, headers) for _ in range(times))

    def fail_midstream(
        self, after_chunks: int, *, error_type: str = "overloaded_error", times: int = 1
    ) -> None:
        """An `error` event after `after_chunks` text deltas. On Bedrock an error type ending in "Exception"
        (throttlingException, modelStreamErrorException…) is sent as an AWS exception frame instead."""
        status = _STATUS_BY_TYPE.get(error_type, 500)  # used when the request is not streaming
        self._failures.extend(
            _Failure("midstream", status, error_type, after_chunks=after_chunks) for _ in range(times)
        )

    def drop_connection(self, *, after_chunks: int | None = None, times: int = 1) -> None:
        self._failures.extend(_Failure("drop", after_chunks=after_chunks) for _ in range(times))

    def hang(self, times: int = 1) -> None:
        self._failures.extend(_Failure("hang") for _ in range(times))

    def think(self, thinking: str, *, redacted: bool = False) -> None:
        """The next streamed answer starts with a thinking block (or a `redacted_thinking` one, whose
        encrypted `data` comes whole in its start event) before its text."""
        self.lead_with(redacted_thinking() if redacted else thinking_block(thinking))

    def lead_with(self, *blocks: dict[str, Any]) -> None:
        """The next streamed answer starts with these content blocks (`thinking_block`, `redacted_thinking`,
        `text_block`), at indexes 0, 1…, and then its own text block."""
        self._leads.append(list(blocks))

    def search(
        self,
        query: str,
        results: list[tuple[str, str]] | None = None,
        *,
        error_code: str | None = None,
        then: tuple[dict[str, Any], ...] = (),
    ) -> None:
        """The next streamed answer searches the web as the API streams it: a `server_tool_use` block (its
        query as `input_json_delta`s), a `web_search_tool_result` block with `results` ((url, title)
        pairs) or an `error_code` (`max_uses_exceeded`, `unavailable`…), then the `then` blocks
        (`text_block`, `cited_text`, more searches' blocks), then its own text block; the answer's usage
        counts the searches (`usage.server_tool_use.web_search_requests`)."""
        use = web_search_use(query)
        self.lead_with(use, web_search_result(use["id"], results or [], error_code=error_code), *then)

    def pass_time(self, seconds: float) -> None:
        """Let `seconds` pass for the prompt cache's TTLs."""
        self._cache_clock += seconds

    def cached_prefixes(self) -> list[tuple[int, str]]:
        """The prefixes cached now, as (tokens, TTL), shortest first."""
        live = [e for e in self._cache.values() if e.expires > self._cache_clock]
        return sorted((entry.tokens, entry.ttl) for entry in live)

    def _input_usage(self, body: dict[str, Any]) -> dict[str, Any]:
        """How the API reports a request's input: read from the cache, written to it, and the rest."""
        total = _estimate_tokens(body)
        if self.cache_usage:
            return {"input_tokens": total, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        model = str(body.get("model"))
        hashes, tokens, breakpoints = _prefixes(body)
        now = self._cache_clock
        read = 0
        for entry in self._cache_hits(body):
            entry.expires = now + self.cache_ttl_seconds[entry.ttl]
            read = max(read, entry.tokens)
        written = {"5m": 0, "1h": 0}
        covered = read
        for at, ttl in breakpoints:
            if tokens[at] < self.cache_min_tokens:
                continue  # too short to cache: sent as input
            key = (model, hashes[at])
            if key not in self._cache or self._cache[key].expires <= now:
                self._cache[key] = _CacheEntry(tokens[at], ttl, now + self.cache_ttl_seconds[ttl])
            if tokens[at] > covered:
                written[ttl] += tokens[at] - covered
                covered = tokens[at]
        return {
            "input_tokens": total - covered,
            "cache_creation_input_tokens": written["5m"] + written["1h"],
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written["5m"],
                "ephemeral_1h_input_tokens": written["1h"],
            },
        }

    def _cache_hits(self, body: dict[str, Any]) -> list[_CacheEntry]:
        """The live cached prefix each breakpoint reads (at it, or one of the `cache_lookback` blocks
        before it), if any."""
        if self.cache_usage:
            return []
        model = str(body.get("model"))
        hashes, _, breakpoints = _prefixes(body)
        hits = []
        for at, _ in breakpoints:
            for back in range(at, max(-1, at - self.cache_lookback), -1):
                entry = self._cache.get((model, hashes[back]))
                if entry is not None and entry.expires > self._cache_clock:
                    hits.append(entry)
                    break
        return hits

    async def wait_for_thinking(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until `count` streams have begun thinking (sent a thinking delta)."""
        async with self._arrived:
            try:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: self.thinking_started >= count), timeout
                )
            except TimeoutError:
                raise AssertionError(
                    f"expected {count} thinking streams, got {self.thinking_started}"
                ) from None

    async def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[ClaudeRequest]:
        """Wait until at least `count` requests arrived; returns all recorded so far."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests) >= count), timeout)
            except TimeoutError:
                raise AssertionError(f"expected {count} Claude requests, got {len(self.requests)}") from None
            return list(self.requests)

    async def wait_for_abandoned(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until `count` streams were given up by their client before the end."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: self.abandoned >= count), timeout)
            except TimeoutError:
                raise AssertionError(f"expected {count} abandoned streams, got {self.abandoned}") from None

    # --- handlers ---

    async def _google_token(self, request: web.Request) -> web.Response:
        """A service account's JWT-bearer grant; the assertion must ask for the cloud-platform scope."""
        form = await request.post()
        assertion = str(form.get("assertion", ""))
        claims = _jwt_claims(assertion) if assertion.count(".") == 2 else {}
        scopes = str(claims.get("scope", "")).split()
        if self.refuse_grants or form.get("grant_type") != JWT_BEARER or GOOGLE_SCOPE not in scopes:
            return web.json_response({"error": "invalid_grant", "error_description": "Bad grant"}, status=400)
        async with self._arrived:
            self.tokens_issued += 1
        return web.json_response(
            {"access_token": self.access_token, "expires_in": 3600, "token_type": "Bearer"}
        )

    async def _record(self, request: web.Request) -> Any:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        async with self._arrived:
            self.requests.append(ClaudeRequest(body if isinstance(body, dict) else {}, headers, request.path))
            self._arrived.notify_all()
        return body

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "messages: Field required")
        return web.json_response({"input_tokens": _estimate_tokens(body)}, headers={"request-id": _id("req")})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = self._failures.popleft() if self._failures else None
        streaming = isinstance(body, dict) and body.get("stream") is True
        # The input-tokens limit counts what is not read from the cache: the input and the cache writes.
        hits = self._cache_hits(body) if isinstance(body, dict) else []
        read = max((entry.tokens for entry in hits), default=0)
        limited = self._take(_estimate_tokens(body) - read if isinstance(body, dict) else 0)
        limits = self._limit_headers()
        if failure is not None:
            if failure.kind == "hang":
                await self._closing.wait()
                return _drop(request)
            if failure.kind == "status" or (failure.kind == "midstream" and not streaming):
                return _error(failure.status, failure.error_type, headers={**limits, **failure.headers})
            if failure.kind == "drop" and (failure.after_chunks is None or not streaming):
                return _drop(request)
        if limited is not None:
            async with self._arrived:
                self.rate_limited += 1
            return _error(429, "rate_limit_error", headers={**limits, "retry-after": str(limited)})
        try:
            _validate(body, self._paused)
        except _Invalid as err:
            return _error(400, "invalid_request_error", str(err), headers=limits)
        text, stop_reason = self._replies.popleft() if self._replies else (self.responder(body), "end_turn")
        if streaming:
            return await self._stream(request, body, text, stop_reason, failure, limits=limits)
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        self._spend_output(_tokens(text))
        message = _message(body, [{"type": "text", "text": text}] if text else [], stop_reason, text)
        message["usage"].update(self._input_usage(body), **self.cache_usage)
        return web.json_response(message, headers={"request-id": _id("req"), **limits})

    def _take(self, input_tokens: int) -> int | None:
        """Spend one request and its input tokens; None, or the seconds to wait (`retry-after`) if a limit
        is exhausted, in which case nothing is spent."""
        if not self._buckets:
            return None
        needs = {"requests": 1, "input-tokens": input_tokens, "output-tokens": 1}
        wait = max(self._buckets[name].wait_for(amount) for name, amount in needs.items())
        if wait > 0:
            return max(1, math.ceil(wait))
        self._buckets["requests"].level -= 1
        self._buckets["input-tokens"].level -= min(input_tokens, self._buckets["input-tokens"].level)
        return None

    def _spend_output(self, output_tokens: int) -> None:
        if self._buckets:
            bucket = self._buckets["output-tokens"]
            bucket.refill()
            bucket.level = max(0.0, bucket.level - output_tokens)

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in self._buckets.items():
            bucket.refill()
            headers.update(bucket.headers(name))
        if self._buckets:  # `tokens-*`: the most restrictive of input and output, as the API says
            tightest = min(("input-tokens", "output-tokens"), key=lambda name: self._buckets[name].level)
            headers.update(
                {
                    key.replace(tightest, "tokens"): value
                    for key, value in self._buckets[tightest].headers(tightest).items()
                }
            )
        return headers

    async def _bedrock(self, request: web.Request) -> web.StreamResponse:
        """InvokeModel[WithResponseStream]: the model in the path, `anthropic_version` in the body, SigV4 or
        a Bedrock API key (bearer) in Authorization, errors as AWS shapes them."""
        body = await self._record(request)
        failure = self._failures.popleft() if self._failures else None
        streaming = request.path.endswith("/invoke-with-response-stream")
        if failure is not None:
            if failure.kind == "hang":
                await self._closing.wait()
                return _drop(request)
            if failure.kind == "status" or (failure.kind == "midstream" and not streaming):
                return _aws_error(failure.status, headers=failure.headers)
            if failure.kind == "drop" and (failure.after_chunks is None or not streaming):
                return _drop(request)
        auth = request.headers.get("authorization", "")
        if not auth.startswith(("AWS4-HMAC-SHA256 Credential=", "Bearer ")):
            return _aws_error(403, "Missing Authentication Token")
        try:
            body = _platform_body(body, BEDROCK_VERSION, request.match_info["model"])
            if "stream" in body:  # the SDK moves it into the path
                raise _Invalid("extraneous key [stream] is not permitted")
            _validate(body, self._paused)
        except _Invalid as err:
            return _aws_error(
                400, f"Malformed input request: {err}, please reformat your input and try again."
            )
        text, stop_reason = self._replies.popleft() if self._replies else (self.responder(body), "end_turn")
        if streaming:
            return await self._stream(request, body, text, stop_reason, failure, bedrock=True)
        message = _message(body, [{"type": "text", "text": text}] if text else [], stop_reason, text)
        message["usage"].update(self._input_usage(body), **self.cache_usage)
        return web.json_response(message, headers={"x-amzn-requestid": str(uuid.uuid4())})

    async def _vertex(self, request: web.Request) -> web.StreamResponse:
        """rawPredict and streamRawPredict: the model in the path, `anthropic_version` in the body, an OAuth
        access token as bearer; the model's answers and errors as the Messages API gives them."""
        body = await self._record(request)
        model, _, method = request.match_info["target"].rpartition(":")
        if method not in ("rawPredict", "streamRawPredict"):
            return _google_error(404)
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return _google_error(401)
        failure = self._failures.popleft() if self._failures else None
        streaming = method == "streamRawPredict"
        if failure is not None:
            if failure.kind == "hang":
                await self._closing.wait()
                return _drop(request)
            if failure.kind == "status" or (failure.kind == "midstream" and not streaming):
                if failure.status in GOOGLE_ERRORS:
                    return _google_error(failure.status, headers=failure.headers)
                return _error(failure.status, failure.error_type, headers=failure.headers)
            if failure.kind == "drop" and (failure.after_chunks is None or not streaming):
                return _drop(request)
        try:
            body = _platform_body(body, VERTEX_VERSION, model)
            _validate(body, self._paused)
        except _Invalid as err:
            return _error(400, "invalid_request_error", str(err))
        text, stop_reason = self._replies.popleft() if self._replies else (self.responder(body), "end_turn")
        if streaming:
            return await self._stream(request, body, text, stop_reason, failure)
        message = _message(body, [{"type": "text", "text": text}] if text else [], stop_reason, text)
        message["usage"].update(self._input_usage(body), **self.cache_usage)
        return web.json_response(message)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        text: str,
        stop_reason: str,
        failure: _Failure | None,
        *,
        bedrock: bool = False,
        limits: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """Server-sent events, or on Bedrock the same events as AWS event-stream `chunk` frames."""
        if bedrock:
            headers = {
                "content-type": "application/vnd.amazon.eventstream",
                "x-amzn-bedrock-content-type": "application/json",
                "x-amzn-requestid": str(uuid.uuid4()),
            }
        else:
            headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
            headers["request-id"] = _id("req")
            headers.update(limits or {})
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            if not bedrock:
                await resp.write(
                    f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
                )
            elif event != "ping":  # Bedrock sends no pings
                await resp.write(_chunk_frame(data))

        start = _message(body, [], None, "")
        start["usage"].update(self._input_usage(body), **self.cache_usage)
        await send("message_start", {"type": "message_start", "message": start})
        index, searches, led = await self._lead(send)  # thinking and other scripted blocks first
        block = {"type": "text", "text": ""}
        await send(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )
        await send("ping", {"type": "ping"})
        size = max(1, self.chunk_chars)
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        cut = failure.after_chunks if failure is not None else None
        if self.gate is not None:
            await self.gate.wait()
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        try:
            for i, chunk in enumerate(chunks[:cut]):
                if i and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                if not i and self.on_first_token is not None:
                    self.on_first_token(body)
                delta = {"type": "text_delta", "text": chunk}
                await send(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
        except (ConnectionResetError, asyncio.CancelledError):  # aiohttp cancels a handler whose client left
            async with self._arrived:
                self.abandoned += 1
                self._arrived.notify_all()
            raise
        if failure is not None and failure.kind == "drop":
            return _drop(request)
        if failure is not None and bedrock and failure.error_type.endswith("Exception"):
            await resp.write(_exception_frame(failure.error_type))  # Bedrock's own mid-stream failure
        elif failure is not None:  # midstream: the API reports overload etc. as an SSE event after HTTP 200
            error = {"type": failure.error_type, "message": _ERROR_MESSAGES.get(failure.error_type, "Error")}
            await send("error", {"type": "error", "error": error})
        else:
            if not bedrock:
                self._spend_output(_tokens(text))
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
            end = {"stop_reason": stop_reason, "stop_sequence": None}
            counts = {k: v for k, v in start["usage"].items() if k in _CUMULATIVE}  # as message_start's
            usage: dict[str, Any] = {"output_tokens": _tokens(text), **counts}
            if searches:
                usage["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
            await send("message_delta", {"type": "message_delta", "delta": end, "usage": usage})
            if stop_reason == "pause_turn":  # the turn so far, as a continuation sends it back
                last = body["messages"][-1]
                before = _uncached(last["content"]) if last["role"] == "assistant" else []
                self._paused.append([*before, *led, *([text_block(text)] if text else [])])
            stop: dict[str, Any] = {"type": "message_stop"}
            if bedrock:
                metrics = {
                    "inputTokenCount": start["usage"]["input_tokens"],
                    "outputTokenCount": _tokens(text),
                    "cacheReadInputTokenCount": start["usage"]["cache_read_input_tokens"],
                    "cacheWriteInputTokenCount": start["usage"]["cache_creation_input_tokens"],
                }
                stop["amazon-bedrock-invocationMetrics"] = {
                    **metrics,
                    "invocationLatency": 1,
                    "firstByteLatency": 1,
                }
            await send("message_stop", stop)
        await resp.write_eof()
        return resp

    async def _lead(
        self, send: Callable[[str, dict[str, Any]], Awaitable[None]]
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """Stream the blocks `lead_with` scripted for this answer, each as the API does: thinking as a
        start with empty `thinking` and `signature`, `thinking_delta`s, one `signature_delta`, a stop;
        redacted thinking whole in its start; text as `text_delta`s, after a `citations_delta` for each
        of its citations; a `server_tool_use` as a start with empty `input` and its input as
        `input_json_delta`s; a `web_search_tool_result` whole in its start. Returns the next block's
        index, the number of web searches and the blocks."""
        blocks = self._leads.popleft() if self._leads else []
        searches = 0
        size = max(1, self.chunk_chars)

        async def delta(index: int, delta: dict[str, Any]) -> None:
            await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

        try:
            for index, block in enumerate(blocks):
                kind = block["type"]
                if kind in ("server_tool_use", "web_search_tool_result"):
                    searches += kind == "server_tool_use"
                    shell = {**block, "input": {}} if kind == "server_tool_use" else block
                    start = {"type": "content_block_start", "index": index, "content_block": shell}
                    await send("content_block_start", start)
                    if kind == "server_tool_use":
                        partial = json.dumps(block["input"])
                        for i in range(0, len(partial), size):
                            await delta(
                                index, {"type": "input_json_delta", "partial_json": partial[i : i + size]}
                            )
                    await send("content_block_stop", {"type": "content_block_stop", "index": index})
                    continue
                field = "thinking" if kind == "thinking" else "text"
                shell = {**block, "thinking": "", "signature": ""} if kind == "thinking" else dict(block)
                citations = shell.pop("citations", None) or []
                if kind == "text":
                    shell["text"] = ""
                    if citations:
                        shell["citations"] = []
                start = {"type": "content_block_start", "index": index, "content_block": shell}
                await send("content_block_start", start)
                for citation in citations:
                    await delta(index, {"type": "citations_delta", "citation": citation})
                whole = "" if kind == "redacted_thinking" else block[field]  # redacted: all in the start
                for i in range(0, len(whole), size):
                    if i and kind == "thinking" and self.thinking_delay:
                        await asyncio.sleep(self.thinking_delay)
                    await delta(index, {"type": f"{field}_delta", field: whole[i : i + size]})
                    if kind == "thinking" and not i:
                        async with self._arrived:
                            self.thinking_started += 1
                            self._arrived.notify_all()
                if kind == "thinking":
                    if self.thinking_gate is not None:
                        await self.thinking_gate.wait()
                    await delta(index, {"type": "signature_delta", "signature": block["signature"]})
                await send("content_block_stop", {"type": "content_block_stop", "index": index})
        except (ConnectionResetError, asyncio.CancelledError):  # the client left while Claude was thinking
            async with self._arrived:
                self.abandoned += 1
                self._arrived.notify_all()
            raise
        return len(blocks), searches, blocks


def thinking_block(thinking: str) -> dict[str, Any]:
    """A thinking block as the API sends it (anthropic.types.ThinkingBlock), its signature opaque."""
    signature = base64.b64encode(uuid.uuid4().bytes * 4).decode()
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def redacted_thinking() -> dict[str, Any]:
    """A redacted thinking block (anthropic.types.RedactedThinkingBlock): encrypted, nothing readable."""
    return {"type": "redacted_thinking", "data": base64.b64encode(uuid.uuid4().bytes * 8).decode()}


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def web_search_use(query: str) -> dict[str, Any]:
    """Claude's call of the web search tool (anthropic.types.ServerToolUseBlock)."""
    return {"type": "server_tool_use", "id": _id("srvtoolu"), "name": "web_search", "input": {"query": query}}


def web_search_result(
    tool_use_id: str, results: list[tuple[str, str]], *, error_code: str | None = None
) -> dict[str, Any]:
    """The search's results (anthropic.types.WebSearchToolResultBlock), their page content encrypted, or
    its error (WebSearchToolResultErrorObject)."""
    content: Any = (
        {"type": "web_search_tool_result_error", "error_code": error_code}
        if error_code
        else [
            {
                "type": "web_search_result",
                "url": url,
                "title": title,
                "encrypted_content": base64.b64encode(uuid.uuid4().bytes * 6).decode(),
                "page_age": "April 30, 2026",
            }
            for url, title in results
        ]
    )
    return {"type": "web_search_tool_result", "tool_use_id": tool_use_id, "content": content}


def cited_text(text: str, *sources: tuple[str, str, str]) -> dict[str, Any]:
    """A text block citing search results: (url, title, cited_text) each, as
    anthropic.types.CitationsWebSearchResultLocation."""
    citations = [
        {
            "type": "web_search_result_location",
            "url": url,
            "title": title,
            "encrypted_index": base64.b64encode(uuid.uuid4().bytes).decode(),
            "cited_text": cited,
        }
        for url, title, cited in sources
    ]
    return {"type": "text", "text": text, "citations": citations}


WEB_SEARCH_TYPES = ("web_search_20250305", "web_search_20260209", "web_search_20260318")
_WEB_SEARCH_FIELDS = frozenset(
    "name type allowed_callers allowed_domains blocked_domains cache_control defer_loading max_uses"
    " response_inclusion strict user_location".split()
)
_CALLERS = ("direct", "code_execution_20250825", "code_execution_20260120", "code_execution_20260521")


def _validate_tools(tools: Any) -> None:
    """The web search tool as the API checks it (the SDK's WebSearchTool*Param); other tools pass."""
    if not isinstance(tools, list):
        raise _Invalid("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not str(tool.get("type", "")).startswith("web_search"):
            continue
        if tool["type"] not in WEB_SEARCH_TYPES:
            raise _Invalid(f"tools.{i}.type: unknown tool type {tool['type']!r}")
        for key in tool:
            if key not in _WEB_SEARCH_FIELDS:
                raise _Invalid(f"tools.{i}.{key}: Extra inputs are not permitted")
        if tool.get("name") != "web_search":
            raise _Invalid(f"tools.{i}.name: Input should be 'web_search'")
        if tool.get("allowed_domains") and tool.get("blocked_domains"):
            raise _Invalid(f"tools.{i}: cannot use both allowed_domains and blocked_domains")
        if any(caller not in _CALLERS for caller in tool.get("allowed_callers") or []):
            raise _Invalid(f"tools.{i}.allowed_callers: unknown caller")
        max_uses = tool.get("max_uses")
        if max_uses is not None and (not isinstance(max_uses, int) or max_uses < 1):
            raise _Invalid(f"tools.{i}.max_uses: Input should be greater than or equal to 1")


def _id(prefix: str) -> str:
    return f"{prefix}_fake{uuid.uuid4().hex[:20]}"


_CUMULATIVE = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_TTLS = ("5m", "1h")
MAX_BREAKPOINTS = 4


def _prefixes(body: dict[str, Any]) -> tuple[list[str], list[int], list[tuple[int, str]]]:
    """The prompt as the cache sees it, block by block (system, then each message's content; a string is
    one text block): for each block the hash of the prefix up to and including it (`cache_control`
    aside) and its tokens, and the breakpoints as (block index, TTL)."""
    blocks: list[tuple[str, dict[str, Any]]] = []
    system = body.get("system")
    for block in [{"type": "text", "text": system}] if isinstance(system, str) else system or []:
        blocks.append(("system", block))
    for message in body.get("messages") or []:
        content = message.get("content")
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
            blocks.append((message.get("role"), block))
    hashes, tokens, breakpoints = [], [], []
    running, text = hashlib.sha256(), ""
    for index, (role, block) in enumerate(blocks):
        control = block.get("cache_control") if isinstance(block, dict) else None
        plain = {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
        running.update(json.dumps([role, plain], sort_keys=True, separators=(",", ":")).encode())
        hashes.append(running.hexdigest())
        if isinstance(plain, dict) and isinstance(plain.get("text"), str):
            text += plain["text"]
        tokens.append(_tokens(text))
        if control is not None:
            breakpoints.append((index, control.get("ttl", "5m")))
    top = body.get("cache_control")
    if top is not None and blocks:  # automatic caching: the last cacheable block
        breakpoints.append((len(blocks) - 1, top.get("ttl", "5m")))
    return hashes, tokens, breakpoints


def _validate_cache_control(body: dict[str, Any]) -> None:
    """`cache_control` where the API takes it: {"type": "ephemeral"} and an optional TTL, at most
    MAX_BREAKPOINTS of them, and no 1-hour one after a 5-minute one."""
    controls: list[Any] = []
    system = body.get("system")
    for block in system if isinstance(system, list) else []:
        if isinstance(block, dict) and "cache_control" in block:
            controls.append(block["cache_control"])
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and "cache_control" in block:
                controls.append(block["cache_control"])
    if body.get("cache_control") is not None:
        controls.append(body["cache_control"])
    for control in controls:
        if not isinstance(control, dict) or control.get("type") != "ephemeral":
            raise _Invalid("cache_control.type: Input should be 'ephemeral'")
        if set(control) - {"type", "ttl"}:
            raise _Invalid("cache_control: Extra inputs are not permitted")
        if control.get("ttl", "5m") not in _TTLS:
            raise _Invalid("cache_control.ttl: Input should be '5m' or '1h'")
    if len(controls) > MAX_BREAKPOINTS:
        found = f"Found {len(controls)}."
        raise _Invalid(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. {found}")
    ttls = [control.get("ttl", "5m") for control in controls]
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise _Invalid("a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block")


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def _estimate_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    texts = [_text_of(body.get("system"))] + [
        _text_of(m.get("content")) for m in messages if isinstance(m, dict)
    ]
    return _tokens("".join(texts))


def _message(
    body: dict[str, Any], content: list[dict[str, Any]], stop_reason: str | None, text: str
) -> dict[str, Any]:
    usage = {
        "input_tokens": _estimate_tokens(body),
        "output_tokens": _tokens(text),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }
    return {
        "id": _id("msg"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _error(
    status: int, error_type: str, message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    request_id = _id("req")
    error = {"type": error_type, "message": message or _ERROR_MESSAGES.get(error_type, "Error")}
    body = {"type": "error", "error": error, "request_id": request_id}
    return web.json_response(body, status=status, headers={"request-id": request_id, **(headers or {})})


def _aws_error(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    name = AWS_ERRORS.get(status, "InternalServerException")
    headers = {
        "x-amzn-errortype": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-requestid": str(uuid.uuid4()),
        **(headers or {}),
    }
    return web.json_response({"message": message or f"{name} (fake)"}, status=status, headers=headers)


def _google_error(status: int, headers: dict[str, str] | None = None) -> web.Response:
    error = {"code": status, "message": f"{GOOGLE_ERRORS.get(status, 'UNKNOWN')} (fake)"}
    error["status"] = GOOGLE_ERRORS.get(status, "UNKNOWN")
    return web.json_response({"error": error}, status=status, headers=headers)


def _platform_body(body: Any, version: str, model: str) -> dict[str, Any]:
    """A cloud platform's body (model in the path, `anthropic_version` in the body) as a Messages API body."""
    if not isinstance(body, dict):
        raise _Invalid("There was an error parsing the body of your request")
    if "model" in body:
        raise _Invalid("extraneous key [model] is not permitted")
    if "cache_control" in body:  # automatic caching: documented for the Anthropic API, not these bodies
        raise _Invalid("extraneous key [cache_control] is not permitted")
    if body.get("anthropic_version") != version:
        raise _Invalid(f"anthropic_version: must be {version}, got {body.get('anthropic_version')!r}")
    return {**{k: v for k, v in body.items() if k != "anthropic_version"}, "model": model}


@cache
def _service_account_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


def _jwt_claims(jwt: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: the fake only checks what was asked for."""
    part = jwt.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims if isinstance(claims, dict) else {}


def _event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32), string headers (type 7),
    payload, CRC32 of all before it. botocore.eventstream.EventStreamBuffer reads it back."""
    encoded = b"".join(
        bytes([len(name.encode())])
        + name.encode()
        + b"\x07"
        + struct.pack("!H", len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack("!II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def _chunk_frame(event: dict[str, Any]) -> bytes:
    raw = json.dumps(event, separators=(",", ":")).encode()
    payload = json.dumps({"bytes": base64.b64encode(raw).decode()}).encode()
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return _event_frame(headers, payload)


def _exception_frame(name: str) -> bytes:
    headers = {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"}
    return _event_frame(headers, json.dumps({"message": f"{name} (fake)"}).encode())


def _drop(request: web.Request) -> web.Response:
    # abort() closes the socket without a response; aiohttp then skips writing the one returned here.
    if request.transport is not None:
        request.transport.abort()
    return web.Response()


def _uncached(content: Any) -> Any:
    """Content blocks without their cache breakpoints (Bedrock and Vertex AI put one on the last)."""
    if not isinstance(content, list):
        return content
    return [
        {k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b for b in content
    ]


def _validate(body: Any, paused: list[list[dict[str, Any]]]) -> None:
    if not isinstance(body, dict):
        raise _Invalid("There was an error parsing the body of your request")
    for key in body:
        if key not in ALLOWED_FIELDS:
            raise _Invalid(f"{key}: Extra inputs are not permitted")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise _Invalid(f"{key}: Field required")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _Invalid("max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _Invalid('messages: first message must use the "user" role')
        if role == previous:
            raise _Invalid(
                "messages: roles must alternate between user and assistant,"
                f' but found multiple "{role}" roles in a row'
            )
        previous = role
        content = message.get("content")
        if content in ("", []):
            raise _Invalid(
                f"messages.{i}: all messages must have non-empty content"
                " except for the optional final assistant message"
            )
        for j, block in enumerate(content if isinstance(content, list) else []):
            if isinstance(block, dict) and block.get("type") == "text" and not block.get("text"):
                raise _Invalid(f"messages.{i}.content.{j}.text: text content blocks must be non-empty")
    if previous != "user" and _uncached(messages[-1].get("content")) not in paused:
        raise _Invalid(_PREFILL)  # but a turn the API paused goes on when sent back as it came
    _validate_cache_control(body)
    if "tools" in body:
        _validate_tools(body["tools"])
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _Invalid("metadata: Input should be a valid dictionary")
        for key, value in metadata.items():
            if key != "user_id":
                raise _Invalid(f"metadata.{key}: Extra inputs are not permitted")
            if value is not None and not isinstance(value, str):
                raise _Invalid("metadata.user_id: Input should be a valid string")
            if isinstance(value, str) and len(value) > 256:
                raise _Invalid("metadata.user_id: String should have at most 256 characters")
