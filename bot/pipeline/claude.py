"""Ask Claude through the Messages API; the SDK's failures become our few error types.

    ClaudeError
     ├── ClaudeBusy            rate limited (429) or overloaded (529), after the SDK's retries
     ├── ClaudeUnavailable     server errors (5xx), timeouts, dropped connections (mid-stream too)
     ├── ClaudeRejected        the request itself was refused (400, 413, 422)
     └── ClaudeMisconfigured   the key, its permissions or the model id (401, 403, 404)

Each carries the HTTP status and request id for logs, never the SDK's message text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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

    An exception from `on_text` (the reader pressed Stop, say) leaves the stream at once, which closes
    the connection so that no more tokens are generated.
    """
    try:
        async with claude.messages.stream(
            model=model,
            max_tokens=max_tokens,
            system=prompt.system,
            messages=prompt.messages,
            metadata={"user_id": user_hash},
        ) as stream:
            async for text in stream.text_stream:
                await on_text(text)
            final = await stream.get_final_message()
    except anthropic.APIStatusError as exc:
        raise _classify(exc) from None
    except anthropic.APIConnectionError:  # timeouts included
        raise ClaudeUnavailable() from None
    except httpx2.TransportError:  # a stream that stalls or drops after its headers
        raise ClaudeUnavailable() from None
    return ClaudeAnswer(
        stop_reason=final.stop_reason,
        input_tokens=final.usage.input_tokens,
        output_tokens=final.usage.output_tokens,
    )


def _classify(exc: anthropic.APIStatusError) -> ClaudeError:
    """By the API's error type when it names one (SSE errors arrive on a 200), else by status."""
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("error")
    error_class = _BY_ERROR_TYPE.get(str(detail.get("type"))) if isinstance(detail, dict) else None
    if error_class is None:
        status = exc.status_code
        if status in (429, 529):
            error_class = ClaudeBusy
        elif status in (401, 403, 404):
            error_class = ClaudeMisconfigured
        elif status >= 500:
            error_class = ClaudeUnavailable
        else:
            error_class = ClaudeRejected
    return error_class(exc.status_code, exc.request_id)
