"""Ask Claude through the Messages API; the SDK's failures become our few error types.

    ClaudeError
     ├── ClaudeBusy            rate limited (429) or overloaded (529), after the SDK's retries
     ├── ClaudeUnavailable     server errors (5xx), timeouts, dropped connections (mid-stream too)
     ├── ClaudeRejected        the request itself was refused (400, 413, 422)
     └── ClaudeMisconfigured   the key, its permissions or the model id (401, 403, 404)

Each carries the HTTP status and request id for logs, never the SDK's message text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import anthropic
import httpx2
from anthropic import AsyncAnthropic

from bot.pipeline.retention import Prompt


class ClaudeError(Exception):
    def __init__(self, status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(f"{self.__class__.__name__} status={status} request_id={request_id}")
        self.status = status
        self.request_id = request_id


class ClaudeBusy(ClaudeError):
    pass


class ClaudeUnavailable(ClaudeError):
    pass


class ClaudeRejected(ClaudeError):
    pass


class ClaudeMisconfigured(ClaudeError):
    pass


@dataclass(frozen=True, slots=True)
class ClaudeAnswer:
    stop_reason: str | None
    input_tokens: int
    output_tokens: int


_BY_ERROR_TYPE: dict[str, type[ClaudeError]] = {
    "rate_limit_error": ClaudeBusy,
    "overloaded_error": ClaudeBusy,
    "api_error": ClaudeUnavailable,
    "timeout_error": ClaudeUnavailable,
    "invalid_request_error": ClaudeRejected,
    "request_too_large": ClaudeRejected,
    "authentication_error": ClaudeMisconfigured,
    "permission_error": ClaudeMisconfigured,
    "not_found_error": ClaudeMisconfigured,
}


async def ask_claude(
    claude: AsyncAnthropic,
    prompt: Prompt,
    *,
    model: str,
    max_tokens: int,
    user_hash: str,
    on_text: Callable[[str], Awaitable[None]],
) -> ClaudeAnswer:
    """Stream Claude's answer, awaiting `on_text` for each piece as it is generated.

    The SDK sends the request (auth, retries, errors before the stream); the server-sent events are
    read here with one `json.loads` each, which costs about a fifth of the CPU of the SDK's typed
    `messages.stream` helper. An exception from `on_text` (the reader pressed Stop, say) leaves the
    stream at once, which closes the connection so that no more tokens are generated.
    """
    try:
        async with claude.messages.with_streaming_response.create(
            model=model,
            max_tokens=max_tokens,
            system=prompt.system,
            messages=prompt.messages,
            metadata={"user_id": user_hash},
            stream=True,
        ) as response:
            return await _read_events(response.iter_lines(), on_text, response.headers.get("request-id"))
    except anthropic.APIStatusError as exc:
        raise _classify(exc.body, exc.status_code, exc.request_id) from None
    except anthropic.APIConnectionError:  # timeouts included
        raise ClaudeUnavailable() from None
    except (httpx2.TransportError, aiohttp.ClientError):  # a stream that stalls or drops after its headers
        raise ClaudeUnavailable() from None


async def _read_events(
    lines: AsyncIterator[str], on_text: Callable[[str], Awaitable[None]], request_id: str | None
) -> ClaudeAnswer:
    """The Messages API's server-sent events: text deltas go to `on_text`; the end gives the outcome."""
    input_tokens = output_tokens = 0
    stop_reason: str | None = None
    async for line in lines:
        if not line.startswith("data:"):
            continue  # `event:` names repeat the data's own "type"; blank lines end an event
        event = json.loads(line[5:])
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                await on_text(delta["text"])
        elif kind == "message_start":
            input_tokens = ((event.get("message") or {}).get("usage") or {}).get("input_tokens", 0)
        elif kind == "message_delta":
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            output_tokens = (event.get("usage") or {}).get("output_tokens", 0)
        elif kind == "message_stop":
            return ClaudeAnswer(stop_reason, input_tokens, output_tokens)
        elif kind == "error":  # an error after HTTP 200, such as overloaded mid-stream
            raise _classify(event, 200, request_id)
    raise ClaudeUnavailable(200, request_id)  # the stream ended without message_stop


def _classify(body: object, status: int, request_id: str | None) -> ClaudeError:
    """By the API's error type when it names one (SSE errors arrive on a 200), else by status."""
    detail = body.get("error") if isinstance(body, dict) else None
    error_class = _BY_ERROR_TYPE.get(str(detail.get("type"))) if isinstance(detail, dict) else None
    if error_class is None:
        if status in (429, 529):
            error_class = ClaudeBusy
        elif status in (401, 403, 404):
            error_class = ClaudeMisconfigured
        elif status >= 500:
            error_class = ClaudeUnavailable
        else:
            error_class = ClaudeRejected
    return error_class(status, request_id)
