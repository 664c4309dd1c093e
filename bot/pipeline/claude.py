"""Ask Claude through the Messages API (on the Anthropic API, Bedrock or Vertex AI); the SDK's failures
become our few error types.

    ClaudeError
     ├── ClaudeBusy            rate limited (429) or overloaded (529), after the SDK's retries
     ├── ClaudeUnavailable     server errors (5xx), timeouts, dropped connections (mid-stream too)
     ├── ClaudeRejected        the request itself was refused (400, 413, 422)
     └── ClaudeMisconfigured   the key or credentials, their permissions, or the model id (401, 403, 404)

Each carries the HTTP status and request id for logs, never the SDK's message text, and its class the
sentence the asker is told (`bot.pipeline.said`). Bedrock and Vertex
errors arrive as the same SDK classes; Bedrock's own mid-stream exceptions are mapped by name below.

Given `limits` (`bot.pipeline.capacity.ClaudeCapacity`), every HTTP response, each of the SDK's retries
included, reports its status and headers (the rate limits, `retry-after`) through SDK middleware, and a
retry waits for any pause those set; an overload or throttle mid-stream and each answer's usage are
reported too.

With WEB_SEARCH on, Claude gets Anthropic's web search server tool (`web_search_tool`): the searches run
on Anthropic's side within the same request; their queries and results stream past here unread, and
only the cited sources' URLs and titles are kept, for the answer's own message.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import anthropic
import botocore.exceptions  # type: ignore[import-untyped]
import google.auth.exceptions
import httpx2
from anthropic import APIRequest, AsyncAnthropicBedrock, AsyncAPIResponse, AsyncCallNext, Middleware, omit
from anthropic.types import CacheControlEphemeralParam, MessageParam, MetadataParam, RawMessageStreamEvent

from bot.backends import BODY_VERSIONS, ClaudeClient, claude_model_id
from bot.config import BackendSettings, WebSearchSettings
from bot.pipeline.prompt import Prompt
from bot.pipeline.said import VisibleError


class ClaudeError(VisibleError):
    def __init__(self, status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(f"{self.__class__.__name__} status={status} request_id={request_id}")
        self.status = status
        self.request_id = request_id


class ClaudeBusy(ClaudeError):
    sentence = "Claude is busy right now. Please try again in a minute."


class ClaudeUnavailable(ClaudeError):
    sentence = "I couldn't reach Claude just now. Please try again in a minute."


class ClaudeRejected(ClaudeError):
    sentence = (
        "Claude couldn't take this conversation, perhaps because it is too long. "
        "Try a shorter question or a new thread."
    )


class ClaudeMisconfigured(ClaudeError):
    sentence = "I can't reach Claude because of how I'm set up. Please tell whoever runs this app."


class RateLimits(Protocol):
    """What `ask_claude` tells of Claude's responses (see `bot.pipeline.capacity`)."""

    def observe(self, status: int, headers: Mapping[str, str]) -> None: ...

    def used(self, input_tokens: int, output_tokens: int) -> None: ...

    async def pause_over(self) -> None: ...


@dataclass(slots=True)
class Usage:
    """The tokens Claude reported for one request, kept up to date as the stream goes, so that an answer
    cut short (Stop, an error, the deadline) still counts what was reported: `message_start`'s usage,
    then `message_delta`'s, whose counts are cumulative (as the SDK's `MessageDeltaUsage` says)."""

    model: str  # the model asked (CLAUDE_MODEL, or the channel's own)
    input_tokens: int = 0  # not read from or written to the cache
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int | None = None  # of cache_write_tokens; None: not broken down by TTL
    web_searches: int = 0  # web search tool calls (usage.server_tool_use), billed per search

    def update(self, reported: Mapping[str, Any]) -> None:
        """Take the counts one event reports; later counts replace earlier ones, a missing one keeps it."""
        for name, field in _USAGE_FIELDS:
            value = reported.get(name)
            if isinstance(value, int):
                setattr(self, field, value)
        breakdown = reported.get("cache_creation")
        if isinstance(breakdown, Mapping) and isinstance(breakdown.get("ephemeral_1h_input_tokens"), int):
            self.cache_write_1h_tokens = breakdown["ephemeral_1h_input_tokens"]
        server_tools = reported.get("server_tool_use")
        if isinstance(server_tools, Mapping) and isinstance(server_tools.get("web_search_requests"), int):
            self.web_searches = server_tools["web_search_requests"]

    @property
    def total(self) -> int:
        """Every token reported: input, cache reads and writes, output (what USER_TOKENS_PER_DAY counts)."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


_USAGE_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)


@dataclass(frozen=True, slots=True)
class Source:
    """A web page Claude cited (a `web_search_result_location` citation): shown under the answer."""

    url: str
    title: str | None


@dataclass(frozen=True, slots=True)
class ClaudeOutcome:
    """How Claude's answer ended (its text went to `on_text` as it came), the tokens it used and the web
    pages it cited, each once, in the order first cited."""

    stop_reason: str | None
    usage: Usage
    sources: tuple[Source, ...] = ()


# The current web search tool on the Anthropic API; Vertex AI documents only the first version.
WEB_SEARCH_TOOL = "web_search_20260318"
VERTEX_WEB_SEARCH_TOOL = "web_search_20250305"


def web_search_tool(kind: str, settings: WebSearchSettings) -> dict[str, Any]:
    """The web search tool's definition. `allowed_callers: ["direct"]`: Claude alone calls it, never code
    it writes (dynamic filtering runs code, which zero data retention does not cover). No web fetch:
    publishers may log the pages fetched."""
    tool: dict[str, Any] = {"type": WEB_SEARCH_TOOL, "name": "web_search", "max_uses": settings.max_uses}
    if kind == "vertex":  # its one version has no code callers; Google documents no allowed_callers
        tool["type"] = VERTEX_WEB_SEARCH_TOOL
    else:
        tool["allowed_callers"] = ["direct"]
    if settings.allowed_domains:
        tool["allowed_domains"] = list(settings.allowed_domains)
    if settings.blocked_domains:
        tool["blocked_domains"] = list(settings.blocked_domains)
    return tool


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
    # Bedrock's event-stream exceptions (botocore's bedrock-runtime `ResponseStream`), raised mid-stream
    "throttlingException": ClaudeBusy,
    "serviceUnavailableException": ClaudeUnavailable,
    "internalServerException": ClaudeUnavailable,
    "modelStreamErrorException": ClaudeUnavailable,
    "modelTimeoutException": ClaudeUnavailable,
    "validationException": ClaudeRejected,
}


async def ask_claude(
    claude: ClaudeClient,
    prompt: Prompt,
    *,
    backend: BackendSettings,
    model: str,
    max_tokens: int,
    user_hash: str,
    on_text: Callable[[str], Awaitable[None]],
    limits: RateLimits | None = None,
    usage: Usage | None = None,
    cache_ttl: str = "5m",
    web_search: WebSearchSettings | None = None,
    on_search: Callable[[], Awaitable[None]] | None = None,
) -> ClaudeOutcome:
    """Stream Claude's answer, awaiting `on_text` for each piece as it is generated; `usage`, if given, holds
    the tokens reported so far even when this raises.

    The SDK sends the request (auth, retries, errors before the stream). The Anthropic API and Vertex AI
    answer with server-sent events, read here with one `json.loads` each: about a fifth of the CPU of the
    SDK's typed `messages.stream` helper. Bedrock answers in AWS's binary event-stream, which the SDK
    decodes into typed events; both feed `_read_events`. An exception from `on_text` (the reader pressed
    Stop, say) leaves the stream at once, which closes the connection so that no more tokens are generated.

    The prompt is cached for `cache_ttl` (CLAUDE_CACHE_TTL), so that the next question in the conversation
    reads what it repeats (the system prompt and every earlier turn) from the cache (`cached`).

    With `web_search` enabled, Claude may search the web (`web_search_tool`); `on_search` is awaited as
    each search starts, told nothing of it (its query is content).
    """
    if limits is not None:
        claude = _reporting(claude, limits)
    usage = Usage(model) if usage is None else usage
    model_id = claude_model_id(backend.kind, model)
    version = BODY_VERSIONS.get(backend.kind)
    extra_body = {"anthropic_version": version} if version else None
    metadata: MetadataParam = {"user_id": user_hash}
    geo = backend.inference_geo or omit  # the Anthropic API's data residency; None on the cloud platforms
    request: dict[str, Any] = {
        "model": model_id,
        "max_tokens": max_tokens,
        "system": prompt.system,
        "messages": prompt.messages,
        "metadata": metadata,
        "inference_geo": geo,
        "extra_body": extra_body,
        **cached(backend.kind, prompt.messages, cache_ttl),
    }
    if web_search is not None and web_search.enabled:
        request["tools"] = [web_search_tool(backend.kind, web_search)]
    try:
        if isinstance(claude, AsyncAnthropicBedrock):
            stream = await claude.messages.create(**request, stream=True)
            async with stream:
                request_id = stream.response.headers.get("x-amzn-requestid")
                outcome = await _read_events(_as_dicts(stream), on_text, request_id, usage, on_search)
        else:
            async with claude.messages.with_streaming_response.create(**request, stream=True) as response:
                request_id = response.headers.get("request-id")
                outcome = await _read_events(
                    _server_sent(response.iter_lines()), on_text, request_id, usage, on_search
                )
        if limits is not None:
            limits.used(usage.input_tokens, usage.output_tokens)
        return outcome
    except ClaudeBusy:  # overloaded or throttled after HTTP 200: no headers, but as telling as a 529
        if limits is not None:
            limits.observe(529, {})
        raise
    except anthropic.APIStatusError as exc:  # its headers were reported by `_Reporter`, as every attempt's
        error = _classify(exc.body, exc.status_code, exc.request_id)
        if limits is not None and isinstance(error, ClaudeBusy) and exc.status_code < 300:
            limits.observe(529, {})  # Bedrock's throttle or overload mid-stream, raised by the SDK
        raise error from None
    except anthropic.APIConnectionError:  # timeouts included
        raise ClaudeUnavailable() from None
    except (httpx2.TransportError, aiohttp.ClientError):  # a stream that stalls or drops after its headers
        raise ClaudeUnavailable() from None
    # Credentials are resolved when a request is signed, outside the SDK's error classes: Google's token
    # endpoint refused ours or could not be reached; boto3 could not resolve or refresh AWS credentials.
    except google.auth.exceptions.RefreshError:
        raise ClaudeMisconfigured() from None
    except google.auth.exceptions.TransportError:
        raise ClaudeUnavailable() from None
    except botocore.exceptions.BotoCoreError:
        raise ClaudeMisconfigured() from None


def cached(kind: str, messages: list[MessageParam], ttl: str) -> dict[str, Any]:
    """The request's prompt caching: one breakpoint on the last block of the last message, so that the
    whole prompt is cached and the next question, which repeats all of it but its new turns, reads it.

    On the Anthropic API that is automatic caching, the top-level `cache_control` (SDK 2.15): the request
    is otherwise unchanged, and the breakpoint moves forward with the conversation. Bedrock's and Vertex
    AI's bodies document only breakpoints on blocks, so there the last block carries it (the last message
    becomes a list of blocks). Either way a later request finds the earlier entry by looking back up to
    20 blocks from its breakpoint: a follow-up adds two turns (the answer and the question). No breakpoint
    on the system prompt: it is a string, and it stays one; it is part of every cached prefix anyway,
    and alone it is mostly under the minimum that can be cached (1,024 tokens and more). Whatever varies
    between questions (the viewed channel, a note that changes) is therefore a miss for that question,
    not a wrong answer; `bot.pipeline.prompt` keeps it from varying where it can."""
    control: CacheControlEphemeralParam = {"type": "ephemeral"}
    if ttl == "1h":  # "5m" is the default: the request need not say it
        control["ttl"] = "1h"
    if kind not in BODY_VERSIONS:
        return {"cache_control": control}
    if not messages:
        return {}
    last = messages[-1]
    content = last["content"]
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
    )
    blocks[-1]["cache_control"] = control
    return {"messages": [*messages[:-1], {**last, "content": blocks}]}


class _Reporter(Middleware):
    """Runs once per HTTP attempt inside the SDK's retry loop, so retried 429s are seen too."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        if request.retries_taken:  # another request's 429 may ask for longer than this one's
            await self.limits.pause_over()
        response = await call_next(request)
        self.limits.observe(response.status_code, response.headers)
        return response


# A client with the reporter, made once per (client, limits): copying a client costs ~40 µs.
_REPORTING: weakref.WeakKeyDictionary[ClaudeClient, tuple[RateLimits, ClaudeClient]] = (
    weakref.WeakKeyDictionary()
)


def _reporting(claude: ClaudeClient, limits: RateLimits) -> ClaudeClient:
    known = _REPORTING.get(claude)
    if known is None or known[0] is not limits:
        known = (limits, claude.with_middleware(_Reporter(limits)))
        _REPORTING[claude] = known
    return known[1]


def opaque_user_id(team_id: str, user_id: str) -> str:
    """Claude's metadata.user_id: stable per Slack user, reveals no name or id."""
    return hashlib.sha256(f"slack:{team_id}:{user_id}".encode()).hexdigest()


async def _server_sent(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        if line.startswith("data:"):  # `event:` names repeat the data's own "type"; blank lines end an event
            yield json.loads(line[5:])


async def _as_dicts(
    events: AsyncIterator[RawMessageStreamEvent],
) -> AsyncIterator[dict[str, Any]]:
    # The SDK skips pings and raises an `error` event (or a Bedrock exception frame) as APIStatusError.
    async for event in events:
        yield event.to_dict()


async def _read_events(
    events: AsyncIterator[dict[str, Any]],
    on_text: Callable[[str], Awaitable[None]],
    request_id: str | None,
    usage: Usage,
    on_search: Callable[[], Awaitable[None]] | None = None,
) -> ClaudeOutcome:
    """The Messages API's stream events: text deltas go to `on_text`, usage into `usage`; the end gives the
    outcome.

    Web search, when on: a `server_tool_use` block starts a search (`on_search`), its query follows as
    `input_json_delta`s, and a `web_search_tool_result` block holds the results or an `error_code`; both
    are skipped whole, so that nothing of them is shown or logged (a failed search is Claude's to answer
    around). Citations arrive as `citations_delta`s on the text blocks, whose text deltas are the text
    alone: only the cited pages' URLs and titles are taken. Text after a search starts a new paragraph
    when text came before it (the blocks around a search are separate thoughts; cited blocks in one
    sentence are not separated)."""
    stop_reason: str | None = None
    sources: dict[str, Source] = {}  # by URL, in the order first cited
    wrote = searched = False  # text so far; a search since the last text
    async for event in events:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            delta_kind = delta.get("type")
            if delta_kind == "text_delta" and delta.get("text"):
                text = delta["text"]
                if searched and wrote and not text[:1].isspace():
                    text = "\n\n" + text
                searched, wrote = False, True
                await on_text(text)
            elif delta_kind == "citations_delta":
                cited = delta.get("citation") or {}
                url = cited.get("url")
                if cited.get("type") == "web_search_result_location" and isinstance(url, str) and url:
                    title = cited.get("title")
                    sources.setdefault(url, Source(url, title if isinstance(title, str) and title else None))
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "server_tool_use" and block.get("name") == "web_search":
                searched = True
                if on_search is not None:
                    await on_search()
        elif kind == "message_start":
            usage.update((event.get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            usage.update(event.get("usage") or {})
        elif kind == "message_stop":
            return ClaudeOutcome(stop_reason, usage, tuple(sources.values()))
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
        elif status >= 500 or status in (408, 424):  # Bedrock: model timeout (408), model failure (424)
            error_class = ClaudeUnavailable
        else:
            error_class = ClaudeRejected
    return error_class(status, request_id)
