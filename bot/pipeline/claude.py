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

import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
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
from bot.state import StateKeys


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
    """The tokens Claude reported for one answer, kept up to date as the stream goes, so that an answer
    cut short (Stop, an error, the deadline) still counts what was reported: `message_start`'s usage,
    then `message_delta`'s, whose counts are cumulative (as the SDK's `MessageDeltaUsage` says); a
    paused turn's further requests (`next_request`) add theirs."""

    model: str  # the model asked (CLAUDE_MODEL, or the channel's own)
    input_tokens: int = 0  # not read from or written to the cache
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int | None = None  # of cache_write_tokens; None: not broken down by TTL
    web_searches: int = 0  # web search tool calls (usage.server_tool_use), billed per search
    _earlier: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # earlier requests'

    def update(self, reported: Mapping[str, Any]) -> None:
        """Take the counts one event reports; later counts replace earlier ones of the same request, a
        missing one keeps it."""
        server_tools = reported.get("server_tool_use")
        breakdown = reported.get("cache_creation")
        counts = [(attribute, reported.get(name)) for name, attribute in _USAGE_FIELDS]
        if isinstance(breakdown, Mapping):
            counts.append(("cache_write_1h_tokens", breakdown.get("ephemeral_1h_input_tokens")))
        if isinstance(server_tools, Mapping):
            counts.append(("web_searches", server_tools.get("web_search_requests")))
        for attribute, value in counts:
            if isinstance(value, int):
                setattr(self, attribute, self._earlier.get(attribute, 0) + value)

    def next_request(self) -> None:
        """The turn goes on in another request (`pause_turn`), whose counts start from zero again."""
        self._earlier = {name: getattr(self, name) or 0 for name in _COUNTED}

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
_COUNTED = (*(name for _, name in _USAGE_FIELDS), "cache_write_1h_tokens", "web_searches")


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
MAX_CONTINUATIONS = 3  # requests that continue one paused turn (`pause_turn`)


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
    decodes into typed events; both are read by `_Turn`. An exception from `on_text` (the reader pressed
    Stop, say) leaves the stream at once, which closes the connection so that no more tokens are generated.

    The prompt is cached for `cache_ttl` (CLAUDE_CACHE_TTL), so that the next question in the conversation
    reads what it repeats (the system prompt and every earlier turn) from the cache (`cached`).

    With `web_search` enabled, Claude may search the web (`web_search_tool`); `on_search` is awaited as
    each search starts, told nothing of it (its query is content). A turn the API pauses (`pause_turn`)
    is sent back to go on, up to MAX_CONTINUATIONS times.
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
    turn = _Turn(on_text, usage, on_search)
    asked = request["messages"]  # with its cache breakpoint, where the platform needs one on a block
    try:
        for continuation in range(MAX_CONTINUATIONS + 1):
            if continuation:  # the API paused the turn: sent back as it came, it goes on where it was
                usage.next_request()
                request["messages"] = [*asked, {"role": "assistant", "content": turn.content}]
            stop_reason = await _request(claude, request, turn)
            if stop_reason != "pause_turn":
                break
        if limits is not None:  # the input-token limit counts what is written to the cache, not what is read
            limits.used(usage.input_tokens + usage.cache_write_tokens, usage.output_tokens)
        return ClaudeOutcome(stop_reason, usage, tuple(turn.sources.values()))
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


def opaque_user_id(keys: StateKeys, team_id: str, user_id: str) -> str:
    """Claude's metadata.user_id: stable per Slack user, reveals no name or id. Keyed, so that holding
    the workspace's ids is not enough to tell who it is, and not the hash that names them in Redis."""
    return keys.of("claude metadata.user_id", team_id, user_id)


async def _request(claude: ClaudeClient, request: dict[str, Any], turn: _Turn) -> str | None:
    """Send one request of the turn and read its stream; returns its stop reason."""
    if isinstance(claude, AsyncAnthropicBedrock):
        stream = await claude.messages.create(**request, stream=True)
        async with stream:
            return await turn.read(_as_dicts(stream), stream.response.headers.get("x-amzn-requestid"))
    async with claude.messages.with_streaming_response.create(**request, stream=True) as response:
        return await turn.read(_server_sent(response.iter_lines()), response.headers.get("request-id"))


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


class _Turn:
    """Claude's turn as the Messages API streams it, over one request or more: text deltas go to `on_text`,
    usage into `usage`, and the content blocks are put together as they came, so that a turn the API
    paused (`pause_turn`, after many searches) can be sent back whole to go on.

    Web search, when on: a `server_tool_use` block starts a search (`on_search`), its query follows as
    `input_json_delta`s, and a `web_search_tool_result` block holds the results or an `error_code`; both
    are never shown or logged (a failed search is Claude's to answer around). Citations arrive as
    `citations_delta`s on the text blocks, whose text deltas are the text alone: only the cited pages'
    URLs and titles are taken. Text after a search starts a new paragraph when text came before it (the
    blocks around a search are separate thoughts; cited blocks in one sentence are not separated)."""

    def __init__(
        self,
        on_text: Callable[[str], Awaitable[None]],
        usage: Usage,
        on_search: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self._on_text, self._usage, self._on_search = on_text, usage, on_search
        self.content: list[dict[str, Any]] = []  # the turn's finished blocks, every request's
        self.sources: dict[str, Source] = {}  # by URL, in the order first cited
        self._wrote = self._searched = False  # text so far; a search since the last text

    async def read(self, events: AsyncIterator[dict[str, Any]], request_id: str | None) -> str | None:
        """One request's stream, to its end; returns its stop reason."""
        stop_reason: str | None = None
        open_blocks: dict[object, tuple[dict[str, Any], list[str]]] = {}  # by index: the block, its pieces
        async for event in events:
            kind = event.get("type")
            if kind == "content_block_delta":
                if (opened := open_blocks.get(event.get("index"))) is None:
                    continue
                block, pieces = opened
                delta = event.get("delta") or {}
                delta_kind = delta.get("type")
                if delta_kind == "text_delta" and delta.get("text"):
                    pieces.append(delta["text"])
                    text = delta["text"]
                    if self._searched and self._wrote and not text[:1].isspace():
                        text = "\n\n" + text
                    self._searched, self._wrote = False, True
                    await self._on_text(text)
                elif delta_kind in ("thinking_delta", "input_json_delta"):
                    pieces.append(delta.get("thinking") or delta.get("partial_json") or "")
                elif delta_kind == "signature_delta":
                    block["signature"] = delta.get("signature")
                elif delta_kind == "citations_delta":
                    cited = delta.get("citation") or {}
                    block["citations"] = [*(block.get("citations") or ()), cited]
                    url = cited.get("url")
                    if cited.get("type") == "web_search_result_location" and isinstance(url, str) and url:
                        title = cited.get("title")
                        title = title if isinstance(title, str) and title else None
                        self.sources.setdefault(url, Source(url, title))
            elif kind == "content_block_start":
                block = dict(event.get("content_block") or {})
                open_blocks[event.get("index")] = (block, [])
                if block.get("type") == "server_tool_use" and block.get("name") == "web_search":
                    self._searched = True
                    if self._on_search is not None:
                        await self._on_search()
            elif kind == "content_block_stop":
                if (opened := open_blocks.pop(event.get("index"), None)) is not None:
                    self._finish(*opened)
            elif kind == "message_start":
                self._usage.update((event.get("message") or {}).get("usage") or {})
            elif kind == "message_delta":
                stop_reason = (event.get("delta") or {}).get("stop_reason")
                self._usage.update(event.get("usage") or {})
            elif kind == "message_stop":
                return stop_reason
            elif kind == "error":  # an error after HTTP 200, such as overloaded mid-stream
                raise _classify(event, 200, request_id)
        raise ClaudeUnavailable(200, request_id)  # the stream ended without message_stop

    def _finish(self, block: dict[str, Any], pieces: list[str]) -> None:
        """A block is whole: its pieces joined into the field they are of; an empty text block is
        dropped (the API refuses one sent back), and so are fields the API left null."""
        kind = block.get("type")
        if kind in ("text", "thinking"):
            block[kind] = (block.get(kind) or "") + "".join(pieces)
            if kind == "text" and not block["text"]:
                return
        elif pieces:  # a tool call's input, as JSON in pieces
            block["input"] = json.loads("".join(pieces))
        self.content.append({name: value for name, value in block.items() if value is not None})


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
