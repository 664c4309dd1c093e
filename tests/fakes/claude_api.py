"""Loopback fake of the Anthropic Messages API (JSON and SSE) for the real AsyncAnthropic client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

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
_PREFILL = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)


@dataclass
class ClaudeRequest:
    body: dict[str, Any]
    headers: dict[str, str]  # lower-cased names
    path: str = "/v1/messages"


@dataclass
class _Failure:
    kind: Literal["status", "midstream", "drop", "hang"]
    status: int = 500
    error_type: str = "api_error"
    headers: dict[str, str] = field(default_factory=dict)
    after_chunks: int | None = None


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
        self._replies: deque[tuple[str, str]] = deque()
        self._failures: deque[_Failure] = deque()
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()  # releases hung handlers so shutdown does not wait for them
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        super().__init__(app)

    async def close(self) -> None:
        self._closing.set()  # releases hung requests
        await super().close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- scripting ---

    def reply(self, text: str, *, stop_reason: str = "end_turn") -> None:
        self._replies.append((text, stop_reason))

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        error_type: str | None = None,
        retry_after_ms: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """The SDK ignores `retry-after-ms: 0` (needs > 0) and backs off ~0.5 s: pass 1 to retry at once."""
        headers = {}
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        if should_retry is not None:
            headers["x-should-retry"] = "true" if should_retry else "false"
        kind = error_type or ERROR_TYPES.get(status, "api_error")
        self._failures.extend(_Failure("status", status, kind, headers) for _ in range(times))

    def fail_midstream(
        self, after_chunks: int, *, error_type: str = "overloaded_error", times: int = 1
    ) -> None:
        status = _STATUS_BY_TYPE.get(error_type, 500)  # used when the request is not streaming
        self._failures.extend(
            _Failure("midstream", status, error_type, after_chunks=after_chunks) for _ in range(times)
        )

    def drop_connection(self, *, after_chunks: int | None = None, times: int = 1) -> None:
        self._failures.extend(_Failure("drop", after_chunks=after_chunks) for _ in range(times))

    def hang(self, times: int = 1) -> None:
        self._failures.extend(_Failure("hang") for _ in range(times))

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
        if failure is not None:
            if failure.kind == "hang":
                await self._closing.wait()
                return _drop(request)
            if failure.kind == "status" or (failure.kind == "midstream" and not streaming):
                return _error(failure.status, failure.error_type, headers=failure.headers)
            if failure.kind == "drop" and (failure.after_chunks is None or not streaming):
                return _drop(request)
        try:
            _validate(body)
        except _Invalid as err:
            return _error(400, "invalid_request_error", str(err))
        text, stop_reason = self._replies.popleft() if self._replies else (self.responder(body), "end_turn")
        if streaming:
            return await self._stream(request, body, text, stop_reason, failure)
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        message = _message(body, [{"type": "text", "text": text}] if text else [], stop_reason, text)
        return web.json_response(message, headers={"request-id": _id("req")})

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        text: str,
        stop_reason: str,
        failure: _Failure | None,
    ) -> web.StreamResponse:
        headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        resp = web.StreamResponse(headers={**headers, "request-id": _id("req")})
        await resp.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())

        start = _message(body, [], None, "")
        await send("message_start", {"type": "message_start", "message": start})
        block = {"type": "text", "text": ""}
        await send("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        await send("ping", {"type": "ping"})
        size = max(1, self.chunk_chars)
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        cut = failure.after_chunks if failure is not None else None
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        try:
            for i, chunk in enumerate(chunks[:cut]):
                if i and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                delta = {"type": "text_delta", "text": chunk}
                await send("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        except (ConnectionResetError, asyncio.CancelledError):  # aiohttp cancels a handler whose client left
            async with self._arrived:
                self.abandoned += 1
                self._arrived.notify_all()
            raise
        if failure is not None and failure.kind == "drop":
            return _drop(request)
        if failure is not None:  # midstream: the API reports overload etc. as an SSE event after HTTP 200
            error = {"type": failure.error_type, "message": _ERROR_MESSAGES.get(failure.error_type, "Error")}
            await send("error", {"type": "error", "error": error})
        else:
            await send("content_block_stop", {"type": "content_block_stop", "index": 0})
            end = {"stop_reason": stop_reason, "stop_sequence": None}
            usage = {"output_tokens": _tokens(text)}
            await send("message_delta", {"type": "message_delta", "delta": end, "usage": usage})
            await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


def _id(prefix: str) -> str:
    return f"{prefix}_fake{uuid.uuid4().hex[:20]}"


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


def _drop(request: web.Request) -> web.Response:
    # abort() closes the socket without a response; aiohttp then skips writing the one returned here.
    if request.transport is not None:
        request.transport.abort()
    return web.Response()


def _validate(body: Any) -> None:
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
    if previous != "user":
        raise _Invalid(_PREFILL)
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
