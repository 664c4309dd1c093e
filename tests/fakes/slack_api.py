"""Loopback fake of Slack's Web API, response_url and Socket Mode for the real slack_sdk clients."""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import itertools
import json
import random
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes.loopback import LoopbackServer

APP_ID = "A0APP"
VERIFICATION_TOKEN = "FAKEverificationTOKEN0000"
MARKDOWN_LIMIT = 12_000  # markdown_text per call and markdown blocks per message (platform facts §5)
SECTION_LIMIT = 3_000  # a section block's text
BLOCKS_PER_MESSAGE = 50
CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
HELLO = {
    "type": "hello",
    "num_connections": 1,
    "debug_info": {"host": "applink-fake", "build_number": 105, "approximate_connection_time": 18060},
    "connection_info": {"app_id": APP_ID},
}
MICROSECOND = Decimal("0.000001")
Params = dict[str, Any]


@dataclass
class Call:
    method: str
    params: Params
    headers: dict[str, str]  # lower-cased names


@dataclass
class _Stream:
    started: float  # time.monotonic(): Slack ends a stream a fixed time after start, appends don't extend it
    live: bool = True
    stopped_by_user: bool = False


class _ApiError(Exception):
    """Raised by a handler to answer {"ok": false, "error": ...}."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _Fault:
    error: str
    status: int
    retry_after: int | None
    delay: float
    body: str | None = None  # sent as it is, labelled JSON (a proxy's error page, say)


def _err(error: str) -> Params:
    return {"ok": False, "error": error}


def _ts(message: Params) -> Decimal:
    return Decimal(message["ts"])  # not float: 16 significant digits lose precision


def _truthy(value: object) -> bool:
    return str(value).lower() in ("1", "true")


def _json_field(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # form posts carry blocks as JSON text


def _require(params: Params, *names: str) -> None:
    if not all(params.get(name) for name in names):
        raise _ApiError("invalid_arguments")


def _markdown_blocks_text(blocks: Any) -> str | None:
    texts = [b.get("text", "") for b in blocks or [] if isinstance(b, dict) and b.get("type") == "markdown"]
    return "\n".join(texts) if texts else None


def _check_markdown(params: Params) -> None:
    if len(params.get("markdown_text") or "") > MARKDOWN_LIMIT:
        raise _ApiError("msg_too_long")
    if len(_markdown_blocks_text(_json_field(params.get("blocks"))) or "") > MARKDOWN_LIMIT:
        raise _ApiError("msg_blocks_too_long")  # markdown blocks share 12k per message


def _check_blocks(params: Params) -> None:
    """Block Kit's limits for what our bot sends (docs.slack.dev/reference/block-kit): at most 50 blocks,
    section text within 3,000, a context_actions block of 1 to 5 elements, feedback_buttons with a
    positive and a negative button, each with plain_text text (75) and a value (2,000)."""
    blocks = _json_field(params.get("blocks"))
    if blocks is None:
        return
    if not isinstance(blocks, list) or len(blocks) > BLOCKS_PER_MESSAGE:
        raise _ApiError("invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict):
            raise _ApiError("invalid_blocks")
        if block.get("type") == "section":
            text = block.get("text")
            if not isinstance(text, dict) or len(str(text.get("text", ""))) > SECTION_LIMIT:
                raise _ApiError("invalid_blocks")
        if block.get("type") == "context_actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 5:
                raise _ApiError("invalid_blocks")
            for element in elements:
                if isinstance(element, dict) and element.get("type") == "feedback_buttons":
                    _check_feedback_buttons(element)


def _check_feedback_buttons(element: Params) -> None:
    for name in ("positive_button", "negative_button"):
        button = element.get(name)
        if not isinstance(button, dict):
            raise _ApiError("invalid_blocks")
        text, value = button.get("text"), button.get("value")
        if not (
            isinstance(text, dict)
            and text.get("type") == "plain_text"
            and 0 < len(str(text.get("text", ""))) <= 75
            and isinstance(value, str)
            and 0 < len(value) <= 2000
        ):
            raise _ApiError("invalid_blocks")


def _stream_text(params: Params) -> str:
    """The markdown one stream call adds: markdown_text, then the text of its markdown_text chunks."""
    try:
        chunks = _json_field(params.get("chunks") or [])
    except json.JSONDecodeError:
        raise _ApiError("invalid_chunks") from None
    if not isinstance(chunks, list) or not all(
        isinstance(c, dict) and c.get("type") in CHUNK_TYPES for c in chunks
    ):
        raise _ApiError("invalid_chunks")
    texts = [c.get("text") for c in chunks if c["type"] == "markdown_text"]
    if not all(isinstance(t, str) for t in texts):
        raise _ApiError("invalid_chunks")
    text = (params.get("markdown_text") or "") + "".join(texts)
    if len(text) > MARKDOWN_LIMIT:
        raise _ApiError("msg_too_long")
    return text


def _trigger_id(n: int) -> str:
    return f"{n}.{n:010d}.fake{uuid.uuid4().hex}"


async def _read_params(request: web.Request) -> Params:
    params: Params = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.body_exists:
        params.update(await request.post())
    return params


BOT_TOKEN = "xoxb-test"  # the bot's token unless a test names another; the bot's keyed hashes derive from it


class FakeSlack(LoopbackServer):
    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = "xapp-test",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        team_id: str = "T0TEAM",
        page_size: int = 2,
    ) -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.bot_user_id, self.bot_id, self.team_id = bot_user_id, bot_id, team_id
        self.page_size = page_size
        self.latency = 0.0
        self.stream_lifetime = 300.0  # seconds from chat.startStream until Slack stops accepting appends
        self.stream_total_limit = MARKDOWN_LIMIT  # a streamed message's whole text
        self.views: dict[str, Params] = {}  # view id -> view, from views.open/update
        self.calls: list[Call] = []
        self.acks: dict[str, Params] = {}
        self.users: dict[str, Params] = {}
        self.channels: dict[str, Params] = {}
        self.members: dict[str, list[str]] = {}  # channel -> its members' ids, for conversations.members
        self.enterprise_id: str | None = None  # the Enterprise Grid org auth.test names, if any
        self.sockets: list[web.WebSocketResponse] = []
        self._sorted_cache: tuple[tuple[str, ...], list[Params], list[Decimal]] | None = None
        self.socket_connections = 0
        # As Slack does with several connections: each envelope to one of them at random (seeded, so a
        # failure can be replayed), and a redelivery to another one.
        self.spread: random.Random | None = None
        self.delivered_to: dict[str, web.WebSocketResponse] = {}  # envelope_id -> the socket it went to
        # users.info is rate limited (Tier 4); a test may model a flood as "at most this many at once"
        self.users_info_at_once: int | None = None
        self.rate_limited: list[Call] = []  # users.info calls answered 429 past users_info_at_once
        self._users_info_in_flight = 0
        self._threads: dict[tuple[str, str], list[Params]] = {}
        self._history: dict[str, dict[str, Params]] = {}  # channel -> ts -> message
        self._faults: defaultdict[str, deque[_Fault]] = defaultdict(deque)
        self._delays: dict[str, float] = {}
        self._held: dict[str, asyncio.Event] = {}  # method -> set when its held calls may go on
        self._streams: dict[tuple[str, str], _Stream] = {}  # (channel, ts) of a streamed message
        self._stream_refusal: tuple[str, int | None] | None = None  # error, times left (None: always)
        self._reactions: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        self._counter = itertools.count(1)
        self._last_ts = Decimal(0)
        self._changed = asyncio.Condition()
        self._files: dict[str, tuple[bytes, str, bool]] = {}  # file id -> content, mimetype, chunked
        self._handlers: dict[str, Callable[[Params], Params]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": lambda _: {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket-mode"},
            "users.info": self._users_info,
            "conversations.replies": self._replies,
            "conversations.history": self._history_page,
            "conversations.info": lambda p: {"ok": True, "channel": self._channel_info(p.get("channel", ""))},
            "conversations.members": self._members_page,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": lambda _: {"ok": True, "message_ts": self._new_ts()},
            "chat.delete": self._delete,
            "chat.getPermalink": lambda p: {
                "ok": True,
                "channel": p.get("channel", ""),
                "permalink": self.permalink(p.get("channel", ""), p.get("message_ts", "")),
            },
            "chat.startStream": self._start_stream,
            "chat.appendStream": lambda p: self._append_stream(p, stop=False),
            "chat.stopStream": lambda p: self._append_stream(p, stop=True),
            "views.open": self._views_open,
            "views.update": self._views_update,
            "reactions.add": lambda p: self._react(p, add=True),
            "reactions.remove": lambda p: self._react(p, add=False),
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "assistant.threads.setTitle": self._set_title,
        }
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response_url/{name}", self._response_url)
        app.router.add_get("/socket-mode", self._socket)
        app.router.add_get("/files-pri/{team_file}/{name}", self._serve_file)
        super().__init__(app)

    # lifecycle and URLs

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        await super().close()

    @property
    def api_url(self) -> str:
        return self.url("api/")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def response_url(self, name: str = "r1") -> str:
        return self.url(f"response_url/{name}")

    # test setup

    def add_user(
        self,
        user_id: str,
        *,
        display_name: str = "",
        real_name: str = "",
        name: str | None = None,
        is_bot: bool = False,
        team_id: str | None = None,
        **extra: Any,
    ) -> Params:
        team = team_id or self.team_id
        self.users[user_id] = {
            "id": user_id,
            "team_id": team,
            "name": name or (display_name or real_name or user_id).lower().replace(" ", "."),
            "real_name": real_name,
            "is_bot": is_bot,
            **dict.fromkeys(("deleted", "is_admin", "is_owner", "is_app_user"), False),
            **dict.fromkeys(("is_restricted", "is_ultra_restricted"), False),
            "profile": {"display_name": display_name, "real_name": real_name, "team": team},
            **extra,
        }
        return self.users[user_id]

    def add_channel(self, channel_id: str, **fields: Any) -> Params:
        self.channels[channel_id] = {**self._channel_info(channel_id), **fields}
        return self.channels[channel_id]

    def permalink(self, channel: str, ts: str, thread_ts: str | None = None) -> str:
        """A message's link as chat.getPermalink makes it (a reply's names its thread and channel)."""
        link = f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return f"{link}?thread_ts={thread_ts}&cid={channel}" if thread_ts else link

    def set_members(self, channel_id: str, user_ids: list[str]) -> None:
        """Who is in a channel now, as conversations.members answers it (the bot is added, as it must be)."""
        self.members[channel_id] = [self.bot_user_id, *user_ids]

    def add_thread(self, channel: str, messages: list[Params]) -> list[Params]:
        thread = [{"type": "message", **m} for m in messages]
        parent_ts = thread[0]["ts"]
        for message in thread:
            message.setdefault("thread_ts", parent_ts)
        self._threads[(channel, parent_ts)] = thread
        self._history.setdefault(channel, {})[parent_ts] = thread[0]  # same object, so edits show in both
        return thread

    def add_history(self, channel: str, messages: list[Params]) -> None:
        history = self._history.setdefault(channel, {})
        for message in messages:
            history[message["ts"]] = {"type": "message", **message}

    def fail(
        self,
        method: str,
        *,
        error: str = "ratelimited",
        status: int = 200,
        times: int = 1,
        retry_after: int | None = None,
        delay: float = 0.0,
        body: str | None = None,
    ) -> None:
        self._faults[method].extend([_Fault(error, status, retry_after, delay, body)] * times)

    def delay(self, method: str, seconds: float) -> None:
        self._delays[method] = seconds

    def hold(self, method: str) -> None:
        """Calls to `method` wait, recorded but unanswered, until `let_go(method)`."""
        self._held.setdefault(method, asyncio.Event())

    def let_go(self, method: str) -> None:
        if (held := self._held.pop(method, None)) is not None:
            held.set()

    def refuse_streaming(self, error: str = "not_allowed", times: int | None = None) -> None:
        """Make chat.startStream answer `error` (`times=None`: always), as when streaming is unavailable."""
        self._stream_refusal = (error, times)

    def stop_by_user(self, ts: str) -> None:
        """The user pressed stop: the stream ends and later appends or stops answer `stopped_by_user`."""
        stream = next((s for (_, s_ts), s in self._streams.items() if s_ts == ts), None)
        assert stream is not None, f"FakeSlack: no streamed message {ts}"
        self._user_stop(stream)

    # assertions

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def message(self, channel: str, ts: str) -> Params:
        """A copy of the stored message plus `streaming`: whether Slack would still take appends to it."""
        message = self._find(channel, ts)
        assert message is not None, f"FakeSlack: no message {ts} in {channel}"
        stream = self._streams.get((channel, ts))
        return {**message, "streaming": stream is not None and self._live(stream)}

    def thread_texts(self, channel: str, thread_ts: str) -> list[str]:
        """The texts of this bot's messages in a thread, oldest first, as they read now."""
        thread = sorted(self._threads.get((channel, thread_ts), []), key=_ts)
        return [m.get("text", "") for m in thread if m.get("bot_id") == self.bot_id]

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[Params]:
        """Copies of this bot's messages in a thread (or, without `thread_ts`, at the top level of the
        channel), oldest first, with their blocks as stored."""
        if thread_ts is None:
            messages = [m for m in self._history.get(channel, {}).values() if not m.get("thread_ts")]
        else:
            messages = list(self._threads.get((channel, thread_ts), []))
        return [dict(m) for m in sorted(messages, key=_ts) if m.get("bot_id") == self.bot_id]

    def top_level_texts(self, channel: str) -> list[str]:
        """The texts of this bot's top-level messages in a channel or DM, oldest first."""
        messages = sorted(self._history.get(channel, {}).values(), key=_ts)
        return [
            m.get("text", "") for m in messages if m.get("bot_id") == self.bot_id and not m.get("thread_ts")
        ]

    def reactions(self, channel: str, ts: str) -> set[str]:
        return set(self._reactions.get((channel, ts), ()))

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        def what() -> str:
            seen = [c.method for c in self.calls]
            return f"{count} call(s) to {method}, got {seen.count(method)}; calls so far: {seen}"

        await self._wait(lambda: len(self.calls_to(method)) >= count, timeout, what)
        return self.calls_to(method)

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Params:
        await self._wait(
            lambda: envelope_id in self.acks,
            timeout,
            lambda: f"ack of {envelope_id}; acked: {list(self.acks)}",
        )
        return self.acks[envelope_id]

    async def wait_for_socket(self, timeout: float = 5.0, *, count: int = 1) -> None:
        """Wait until `count` connections have been greeted in all and one of them is still open."""
        await self._wait(
            lambda: self.socket_connections >= count and self._live_socket() is not None,
            timeout,
            lambda: f"Socket Mode connection #{count}; so far {self.socket_connections}",
        )

    async def wait_for_live_sockets(self, count: int, timeout: float = 10.0) -> None:
        """Until exactly `count` Socket Mode connections are open (one closes as its replica stops)."""
        await self._wait(
            lambda: sum(not ws.closed for ws in self.sockets) == count,
            timeout,
            lambda: f"{count} live sockets",
        )

    async def _wait(self, ready: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            raise AssertionError(f"FakeSlack: timed out after {timeout}s waiting for {what()}") from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # Socket Mode

    def events_api_envelope(
        self,
        event: Params,
        *,
        event_id: str | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        envelope_id: str | None = None,
    ) -> Params:
        n = next(self._counter)
        authorization = {"enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id}
        payload = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev0FAKE{n:05d}",
            "event_time": int(time.time()),
            "authorizations": [{**authorization, "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
            "event_context": f"4-fakeEventContext{n}",
        }
        return {
            "envelope_id": envelope_id or str(uuid.uuid4()),
            "type": "events_api",
            "accepts_response_payload": False,
            # Slack sends 0 and "" on a first delivery, so Bolt sets x-slack-retry-num: "0" even then
            "retry_attempt": retry_attempt or 0,
            "retry_reason": retry_reason or ("http_timeout" if retry_attempt else ""),
            "payload": payload,
        }

    def slash_command_envelope(
        self,
        command: str = "/claude",
        text: str = "",
        *,
        user_id: str = "U0ALICE",
        channel_id: str = "C0GENERAL",
        response_url: str | None = None,
    ) -> Params:
        n = next(self._counter)
        payload = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": "fakeco",
            "channel_id": channel_id,
            "channel_name": self._channel_info(channel_id)["name"],
            "user_id": user_id,
            "user_name": self.users.get(user_id, {}).get("name", user_id.lower()),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url or self.response_url(f"cmd{n}"),
            "trigger_id": _trigger_id(n),
        }
        return {
            "envelope_id": str(uuid.uuid4()),
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": payload,
        }

    def message_shortcut_envelope(
        self,
        callback_id: str,
        *,
        message: Params,
        channel_id: str = "C0GENERAL",
        user_id: str = "U0ALICE",
        response_url: str | None = None,
    ) -> Params:
        n = next(self._counter)
        payload = {
            "type": "message_action",
            "token": VERIFICATION_TOKEN,
            "action_ts": f"{time.time():.6f}",
            **self._actor(user_id),
            "channel": {"id": channel_id, "name": self._channel_info(channel_id)["name"]},
            "callback_id": callback_id,
            "trigger_id": _trigger_id(n),
            "message_ts": message["ts"],
            "message": message,
            "response_url": response_url or self.response_url(f"shortcut{n}"),
        }
        return self._interactive_envelope(payload, accepts_response_payload=False)

    def view_submission_envelope(
        self,
        callback_id: str,
        *,
        values: Params,
        private_metadata: str | None = None,
        user_id: str = "U0ALICE",
    ) -> Params:
        """A modal's submission; a view opened by views.open with this callback_id lends its id and blocks."""
        n = next(self._counter)
        opened = next((v for v in reversed(self.views.values()) if v.get("callback_id") == callback_id), {})
        view = {
            **self._view({"type": "modal", "callback_id": callback_id}),
            **opened,
            "state": {"values": values},
        }
        if private_metadata is not None:
            view["private_metadata"] = private_metadata
        payload = {
            "type": "view_submission",
            **self._actor(user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "trigger_id": _trigger_id(n),
            "view": view,
            "response_urls": [],
        }
        return self._interactive_envelope(payload, accepts_response_payload=True)

    def block_actions_envelope(
        self,
        *,
        message: Params,
        channel_id: str,
        action: Params,
        user_id: str = "U0ALICE",
    ) -> Params:
        """A click on an element of `message` (as the fake stores it), as Slack's block_actions payload
        carries it: who, where (`container`, with thread_ts in a thread), the whole message, the action."""
        n = next(self._counter)
        container = {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        payload = {
            "type": "block_actions",
            **self._actor(user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": _trigger_id(n),
            "channel": {"id": channel_id, "name": self._channel_info(channel_id)["name"]},
            "message": {k: v for k, v in message.items() if k != "streaming"},
            "state": {"values": {}},
            "response_url": self.response_url(f"action{n}"),
            "actions": [{**action, "action_ts": f"{time.time():.6f}"}],
        }
        return self._interactive_envelope(payload, accepts_response_payload=False)

    def feedback_click_envelope(
        self, *, channel_id: str, ts: str, positive: bool = True, user_id: str = "U0ALICE"
    ) -> Params:
        """A click on the thumbs up (or down) under the stored message `ts`: the action carries the
        feedback_buttons element's action_id, its block's block_id (Slack makes one up when the app gave
        none) and the button's text and value."""
        message = self.message(channel_id, ts)
        found = [
            (block, element)
            for block in message.get("blocks") or []
            if block.get("type") == "context_actions"
            for element in block.get("elements") or []
            if element.get("type") == "feedback_buttons"
        ]
        assert found, f"FakeSlack: message {ts} has no feedback buttons"
        block, element = found[0]
        button = element["positive_button" if positive else "negative_button"]
        action = {
            "type": "feedback_buttons",
            "action_id": element.get("action_id") or f"fake-action-{next(self._counter)}",
            "block_id": block.get("block_id") or f"fake-block-{next(self._counter)}",
            "text": button["text"],
            "value": button["value"],
        }
        return self.block_actions_envelope(
            message=message, channel_id=channel_id, action=action, user_id=user_id
        )

    def assistant_thread_started_envelope(
        self,
        *,
        user_id: str = "U0ALICE",
        channel_id: str = "D0ALICE",
        thread_ts: str | None = None,
        context_channel_id: str | None = "C0GENERAL",
    ) -> Params:
        return self._assistant_envelope(
            "assistant_thread_started", user_id, channel_id, thread_ts, context_channel_id
        )

    def assistant_context_changed_envelope(
        self,
        *,
        user_id: str = "U0ALICE",
        channel_id: str = "D0ALICE",
        thread_ts: str | None = None,
        context_channel_id: str | None = "C0GENERAL",
    ) -> Params:
        return self._assistant_envelope(
            "assistant_thread_context_changed", user_id, channel_id, thread_ts, context_channel_id
        )

    def agent_session_stopped_envelope(
        self, *, channel_id: str, user_id: str, thread_ts: str, streaming_message_ts: list[str]
    ) -> Params:
        """The user pressed stop; send_envelope also stops those streams, as Slack has by then."""
        event = {
            "type": "agent_session_stopped",
            "channel": channel_id,
            "user": user_id,
            "thread_ts": thread_ts,
            "streaming_message_ts": streaming_message_ts,
            "event_ts": self._new_ts(),
        }
        return self.events_api_envelope(event)

    def app_home_opened_envelope(
        self, *, user_id: str = "U0ALICE", channel_id: str = "D0ALICE", tab: str = "messages"
    ) -> Params:
        event = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": channel_id,
            "tab": tab,
            "event_ts": self._new_ts(),
        }
        return self.events_api_envelope(event)

    def _assistant_envelope(
        self, kind: str, user_id: str, channel_id: str, thread_ts: str | None, context_channel_id: str | None
    ) -> Params:
        context = {"channel_id": context_channel_id, "team_id": self.team_id, "enterprise_id": None}
        event = {
            "type": kind,
            "assistant_thread": {
                "user_id": user_id,
                "context": context if context_channel_id else {},  # no context when opened from the DM
                "channel_id": channel_id,
                "thread_ts": thread_ts or self._new_ts(),
            },
            "event_ts": self._new_ts(),
        }
        return self.events_api_envelope(event)

    def _actor(self, user_id: str) -> Params:
        name = self.users.get(user_id, {}).get("name", user_id.lower())
        return {
            "team": {"id": self.team_id, "domain": "fakeco"},
            "user": {"id": user_id, "username": name, "name": name, "team_id": self.team_id},
            "is_enterprise_install": False,
            "enterprise": None,
        }

    @staticmethod
    def _interactive_envelope(payload: Params, *, accepts_response_payload: bool) -> Params:
        return {
            "envelope_id": str(uuid.uuid4()),
            "type": "interactive",
            "accepts_response_payload": accepts_response_payload,
            "payload": payload,
        }

    async def send_envelope(self, envelope: Params, *, avoid: web.WebSocketResponse | None = None) -> None:
        live = [ws for ws in self.sockets if not ws.closed]
        assert live, "FakeSlack: no Socket Mode client is connected"
        live = [ws for ws in live if ws is not avoid] or live
        ws = live[-1] if self.spread is None else self.spread.choice(live)
        if "envelope_id" in envelope:
            self.delivered_to[envelope["envelope_id"]] = ws
        # Slack delivers events only from channels that exist, so later reads of them must not fail
        payload = envelope.get("payload") or {}
        event = payload.get("event") or {}
        channel_field = payload.get("channel")
        for channel in (
            payload.get("channel_id"),
            channel_field.get("id") if isinstance(channel_field, dict) else None,  # interactive payloads
            event.get("channel"),
            (event.get("assistant_thread") or {}).get("channel_id"),
        ):
            if isinstance(channel, str):
                self._history.setdefault(channel, {})
        if event.get("type") == "agent_session_stopped":  # Slack stops the streams before it tells the app
            for ts in event.get("streaming_message_ts") or []:
                if stream := self._streams.get((event.get("channel", ""), ts)):
                    self._user_stop(stream)
        await ws.send_str(json.dumps(envelope))

    async def redeliver(self, envelope: Params, *, attempt: int = 1, reason: str = "timeout") -> Params:
        """Slack's retry of an event: a new envelope with the same event id, to another connection when
        there is one."""
        retry = {
            **envelope,
            "envelope_id": str(uuid.uuid4()),
            "retry_attempt": attempt,
            "retry_reason": reason,
        }
        await self.send_envelope(retry, avoid=self.delivered_to.get(envelope["envelope_id"]))
        return retry

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        await self.send_envelope(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
        )

    def _live_socket(self) -> web.WebSocketResponse | None:
        return next((ws for ws in reversed(self.sockets) if not ws.closed), None)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # autoping answers the client's pings
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({**HELLO, "num_connections": len(self.sockets)})
        self.socket_connections += 1
        await self._notify()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and "envelope_id" in (frame := json.loads(msg.data)):
                    self.acks[frame["envelope_id"]] = frame
                    await self._notify()
        finally:
            self.sockets.remove(ws)
            await self._notify()
        return ws

    # HTTP

    async def _record(self, call: Call) -> _Fault | None:
        self.calls.append(call)
        await self._notify()
        counted = call.method == "users.info" and self.users_info_at_once is not None
        if counted and self._users_info_in_flight >= (self.users_info_at_once or 0):
            self.rate_limited.append(call)
            return _Fault("ratelimited", 429, 0, 0.0)
        self._users_info_in_flight += counted
        latency = self.latency if call.method != "response_url" else 0.0
        try:
            if (held := self._held.get(call.method)) is not None:
                await held.wait()
            if delay := self._delays.get(call.method, 0.0) + latency:
                await asyncio.sleep(delay)
        finally:
            self._users_info_in_flight -= counted
        fault = self._faults[call.method].popleft() if self._faults[call.method] else None
        if fault and fault.delay:
            await asyncio.sleep(fault.delay)
        return fault

    @staticmethod
    def _fault_response(fault: _Fault) -> web.Response:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
        if fault.body is not None:
            return web.Response(text=fault.body, status=fault.status, content_type="application/json")
        return web.json_response(_err(fault.error), status=fault.status, headers=headers)

    @staticmethod
    def _headers(request: web.Request) -> dict[str, str]:
        return {name.lower(): value for name, value in request.headers.items()}

    async def _response_url(self, request: web.Request) -> web.Response:
        params = {**await _read_params(request), "_name": request.match_info["name"]}
        if fault := await self._record(Call("response_url", params, self._headers(request))):
            return self._fault_response(fault)
        return web.Response(text="ok")

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or params.pop("token", "")
        if fault := await self._record(Call(method, params, self._headers(request))):
            if fault.error == "connection_dropped":  # no answer at all: the connection closes
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped by FakeSlack")
            return self._fault_response(fault)
        if (handler := self._handlers.get(method)) is None:
            return web.json_response(_err("unknown_method"))
        if token != (self.app_token if method == "apps.connections.open" else self.bot_token):
            known = token in (self.bot_token, self.app_token)
            return web.json_response(_err("not_allowed_token_type" if known else "invalid_auth"))
        try:
            return web.json_response(handler(params))
        except _ApiError as error:
            return web.json_response(_err(error.error))

    # Web API methods

    def _auth_test(self, _: Params) -> Params:
        return {
            "ok": True,
            "url": "https://fakeco.slack.com/",
            "team": "FakeCo",
            "user": "claude",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
            **({"enterprise_id": self.enterprise_id} if self.enterprise_id else {}),
        }

    def _members_page(self, params: Params) -> Params:
        """conversations.members: ids only, `page_size` a page at most, with Slack's cursor."""
        channel = params.get("channel", "")
        if channel not in self.members and channel not in self.channels and channel not in self._history:
            return _err("channel_not_found")
        if self._channel_info(channel)["is_im"]:
            return _err("method_not_supported_for_channel_type")
        members = self.members.get(channel, [self.bot_user_id])
        try:
            start = int(base64.b64decode(params.get("cursor") or "").decode().removeprefix("next:") or 0)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return _err("invalid_cursor")
        size = min(int(params.get("limit") or 100), self.page_size)
        end = start + size
        next_cursor = base64.b64encode(f"next:{end}".encode()).decode() if end < len(members) else ""
        return {"ok": True, "members": members[start:end], "response_metadata": {"next_cursor": next_cursor}}

    def _users_info(self, params: Params) -> Params:
        user = self.users.get(params.get("user", ""))
        return {"ok": True, "user": user} if user else _err("user_not_found")

    def _channel_info(self, channel_id: str) -> Params:
        if channel_id in self.channels:
            return self.channels[channel_id]
        kind = channel_id[:1]
        return {
            "id": channel_id,
            "name": channel_id.lower(),
            "is_channel": kind == "C",
            "is_group": kind == "G",
            "is_im": kind == "D",
            "is_private": kind in ("G", "D"),
            "is_member": True,
            "context_team_id": self.team_id,
            "shared_team_ids": [self.team_id],
            **dict.fromkeys(("is_mpim", "is_archived", "is_shared", "is_ext_shared", "is_org_shared"), False),
        }

    def _new_ts(self) -> str:
        # the real clock, as in Slack, but strictly increasing so every ts is unique
        self._last_ts = max(Decimal(time.time()).quantize(MICROSECOND), self._last_ts + MICROSECOND)
        return str(self._last_ts)

    def _find(self, channel: str, ts: str) -> Params | None:
        replies = (
            m for (c, _), thread in self._threads.items() if c == channel for m in thread if m["ts"] == ts
        )
        return self._history.get(channel, {}).get(ts) or next(replies, None)

    def _sorted(self, messages: list[Params]) -> tuple[list[Params], list[Decimal]]:
        """Messages oldest first with their ts as numbers, sorted once while they stay the same (a
        5,000-message thread is read in 25 pages: sorting it for each cost more than the bot's work)."""
        key = tuple(m["ts"] for m in messages)
        if self._sorted_cache is None or self._sorted_cache[0] != key:
            ordered = sorted(messages, key=_ts)
            self._sorted_cache = (key, ordered, [_ts(m) for m in ordered])
        return self._sorted_cache[1], self._sorted_cache[2]

    def _page(self, messages: list[Params], params: Params, *, newest_first: bool) -> Params:
        inclusive = _truthy(params.get("inclusive"))
        try:
            oldest = Decimal(params.get("oldest") or 0)
            latest = Decimal(params["latest"]) if params.get("latest") else None
            cursor = params.get("cursor")
            start = Decimal(base64.b64decode(cursor).decode().removeprefix("next_ts:")) if cursor else None
        except (InvalidOperation, binascii.Error, UnicodeDecodeError):
            return _err("invalid_cursor" if params.get("cursor") else "invalid_arguments")
        ordered, keys = self._sorted(messages)  # oldest first
        # The first index past `oldest` and the last before `latest`, each inclusive when asked.
        after, before = (
            (bisect.bisect_left, bisect.bisect_right)
            if inclusive
            else (bisect.bisect_right, bisect.bisect_left)
        )
        low = after(keys, oldest)
        high = len(keys) if latest is None else before(keys, latest)
        if start is not None:  # a cursor names the first message of the next page
            if newest_first:
                high = min(high, bisect.bisect_right(keys, start))
            else:
                low = max(low, bisect.bisect_left(keys, start))
        selected = ordered[low:high][::-1] if newest_first else ordered[low:high]
        size = min(int(params.get("limit") or 1000), self.page_size)
        page, rest = selected[:size], selected[size:]
        if not _truthy(params.get("include_all_metadata")):  # Slack returns metadata only when asked
            page = [{k: v for k, v in m.items() if k != "metadata"} if "metadata" in m else m for m in page]
        next_cursor = base64.b64encode(f"next_ts:{rest[0]['ts']}".encode()).decode() if rest else ""
        return {
            "ok": True,
            "messages": page,
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _replies(self, params: Params) -> Params:
        channel, ts = params.get("channel", ""), params.get("ts", "")
        if channel not in self._history and channel not in self.channels:
            return _err("channel_not_found")
        thread = self._threads.get((channel, ts))
        if thread is None:  # Slack answers a reply's (or a lone message's) ts with just that message
            message = self._find(channel, ts)
            if message is None:
                return _err("thread_not_found")
            thread = [message]
        page = self._page(thread, params, newest_first=False)
        replies = [m for m in thread if m["ts"] != ts]
        if replies and page.get("ok"):  # the parent, when the page holds it, says how far its thread goes
            latest_reply = max((m["ts"] for m in replies), key=Decimal)
            page["messages"] = [
                {**m, "reply_count": len(replies), "latest_reply": latest_reply} if m["ts"] == ts else m
                for m in page["messages"]
            ]
        return page

    def _history_page(self, params: Params) -> Params:
        history = self._history.get(params.get("channel", ""))
        if history is None:
            return _err("channel_not_found")
        return self._page(list(history.values()), params, newest_first=True)

    def _post_message(self, params: Params) -> Params:
        channel = params.get("channel")
        if not channel:
            return _err("channel_not_found")
        if not any(params.get(k) for k in ("text", "blocks", "markdown_text", "attachments")):
            return _err("no_text")
        _check_markdown(params)
        _check_blocks(params)
        message = self._add_bot_message(
            channel,
            params.get("text") or params.get("markdown_text") or "",
            thread_ts=params.get("thread_ts"),
            broadcast=_truthy(params.get("reply_broadcast")),
        )
        for field in ("blocks", "metadata"):
            if params.get(field):
                message[field] = _json_field(params[field])
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _add_bot_message(self, channel: str, text: str, *, thread_ts: str | None, broadcast: bool) -> Params:
        ts = self._new_ts()
        message: Params = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": APP_ID,
            "text": text,
            "ts": ts,
            "team": self.team_id,
            "bot_profile": {"id": self.bot_id, "app_id": APP_ID, "name": "Claude", "team_id": self.team_id},
        }
        history = self._history.setdefault(channel, {})
        if thread_ts:
            message["thread_ts"] = thread_ts
            if (channel, thread_ts) not in self._threads:
                self._threads[(channel, thread_ts)] = [history[thread_ts]] if thread_ts in history else []
            self._threads[(channel, thread_ts)].append(message)
            if broadcast:
                history[ts] = message
        else:
            history[ts] = message  # threaded replies stay out of history, as in Slack
        return message

    def _update(self, params: Params) -> Params:
        channel, ts = params.get("channel", ""), params.get("ts", "")
        message = self._find(channel, ts)
        if message is None:
            return _err("message_not_found")
        _check_markdown(params)
        _check_blocks(params)
        if "markdown_text" in params:
            message["text"] = params["markdown_text"]
        if "text" in params:
            message["text"] = params["text"]
        if "blocks" in params:
            message["blocks"] = _json_field(params["blocks"])
            markdown = _markdown_blocks_text(message["blocks"])
            if markdown is not None and not {"text", "markdown_text"} & params.keys():
                message["text"] = markdown  # the markdown block is then all there is to read
        if "metadata" in params:
            message["metadata"] = _json_field(params["metadata"])
        message["edited"] = {"user": self.bot_user_id, "ts": self._new_ts()}
        return {"ok": True, "channel": channel, "ts": ts, "text": message.get("text", ""), "message": message}

    def _delete(self, params: Params) -> Params:
        channel, ts = params.get("channel", ""), params.get("ts", "")
        self._history.get(channel, {}).pop(ts, None)
        for (thread_channel, _), thread in self._threads.items():
            if thread_channel == channel:
                thread[:] = [m for m in thread if m["ts"] != ts]
        return {"ok": True, "channel": channel, "ts": ts}

    # files: hosted at url_private, served only with the bot token; each download is a "url_private" call

    def add_file(
        self,
        content: bytes,
        mimetype: str,
        name: str,
        *,
        user: str = "U0ALICE",
        size: int | None = None,
        chunked: bool = False,
    ) -> Params:
        """Host a file; returns its object as messages carry it in `files`. `size` is what Slack reports
        (the content's length unless given); `chunked` serves it without a Content-Length."""
        file_id = f"F0FAKE{next(self._counter):05d}"
        self._files[file_id] = (content, mimetype, chunked)
        url = self.url(f"files-pri/{self.team_id}-{file_id}/{name}")
        return {
            "id": file_id,
            "created": int(time.time()),
            "timestamp": int(time.time()),
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rpartition(".")[2] if "." in name else "binary",
            "user": user,
            "user_team": self.team_id,
            "size": len(content) if size is None else size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "url_private": url,
            "url_private_download": f"{url}?download=1",
            "permalink": f"https://fakeco.slack.com/files/{user}/{file_id}/{name}",
            "file_access": "visible",
        }

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["team_file"].rpartition("-")[2]
        if fault := await self._record(Call("url_private", {"file": file_id}, self._headers(request))):
            return self._fault_response(fault)
        if file_id not in self._files:
            return web.Response(status=404, text="Not Found")
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            # Slack answers a missing or wrong token (or one without files:read) with its sign-in page
            return web.Response(text="<html><body>Sign in to FakeCo</body></html>", content_type="text/html")
        content, mimetype, chunked = self._files[file_id]
        if not chunked:
            return web.Response(body=content, content_type=mimetype)
        response = web.StreamResponse(headers={"Content-Type": mimetype})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for start in range(0, len(content), 65_536):
                await response.write(content[start : start + 65_536])
            await response.write_eof()
        except ConnectionResetError:  # the client stopped reading, as it should past its size limit
            pass
        return response

    # native streaming (chat.startStream / appendStream / stopStream)

    def _live(self, stream: _Stream) -> bool:
        return stream.live and time.monotonic() - stream.started <= self.stream_lifetime

    def _user_stop(self, stream: _Stream) -> None:
        if self._live(stream):
            stream.live, stream.stopped_by_user = False, True

    def _start_stream(self, params: Params) -> Params:
        if self._stream_refusal is not None:
            error, times = self._stream_refusal
            if times is not None:
                self._stream_refusal = (error, times - 1) if times > 1 else None
            return _err(error)
        _require(params, "channel", "thread_ts")
        channel: str = params["channel"]
        if channel.startswith(("C", "G")):  # in DMs Slack knows who reads the stream
            for name in ("recipient_user_id", "recipient_team_id"):
                if not params.get(name):
                    return _err(f"missing_{name}")
        text = _stream_text(params)
        if len(text) > self.stream_total_limit:
            return _err("msg_blocks_too_long")
        message = self._add_bot_message(channel, text, thread_ts=params["thread_ts"], broadcast=False)
        self._streams[(channel, message["ts"])] = _Stream(time.monotonic())
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _append_stream(self, params: Params, *, stop: bool) -> Params:
        channel, ts = params.get("channel", ""), params.get("ts", "")
        message = self._find(channel, ts)
        if message is None:
            return _err("message_not_found")
        stream = self._streams.get((channel, ts))
        if stream is not None and stream.stopped_by_user:
            return _err("stopped_by_user")
        if stream is None or not self._live(stream):
            return _err("message_not_in_streaming_state")
        text = _stream_text(params)
        if len(message["text"]) + len(text) > self.stream_total_limit:
            return _err("msg_blocks_too_long")  # rejected whole: the message keeps its text
        if stop:
            _check_blocks(params)  # blocks under the finished message: refused, the stream stays open
        message["text"] += text
        if not stop:
            return {"ok": True, "channel": channel, "ts": ts}
        for field in ("blocks", "metadata"):
            if params.get(field):
                message[field] = _json_field(params[field])
        stream.live = False
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    # views, reactions and assistant threads

    def _view(self, view: Params, view_id: str | None = None) -> Params:
        view_id = view_id or f"V0FAKE{next(self._counter):05d}"
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "clear_on_close": False,
            "notify_on_close": False,
            "external_id": "",
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
            **view,
        }

    def _views_open(self, params: Params) -> Params:
        if not (params.get("trigger_id") or params.get("interactivity_pointer")) or not params.get("view"):
            return _err("invalid_arguments")
        view = self._view(_json_field(params["view"]))
        self.views[view["id"]] = view
        return {"ok": True, "view": view}

    def _views_update(self, params: Params) -> Params:
        if not params.get("view"):
            return _err("invalid_arguments")
        external_id = params.get("external_id")
        view_id = params.get("view_id") or next(
            (v["id"] for v in self.views.values() if external_id and v.get("external_id") == external_id),
            None,
        )
        if view_id not in self.views:
            return _err("not_found")
        old = self.views[view_id]
        view = self._view(_json_field(params["view"]), view_id)
        self.views[view_id] = {**view, "root_view_id": old["root_view_id"], "state": old["state"]}
        return {"ok": True, "view": self.views[view_id]}

    def _react(self, params: Params, *, add: bool) -> Params:
        channel, ts, name = params.get("channel"), params.get("timestamp"), params.get("name")
        if not name:
            return _err("invalid_name")
        if not (channel and ts):
            return _err("no_item_specified")
        names = self._reactions[(channel, ts)]
        if add == (name in names):
            return _err("already_reacted" if add else "no_reaction")
        if add:
            names.add(name)
        else:
            names.discard(name)
        return {"ok": True}

    def _set_status(self, params: Params) -> Params:
        _require(params, "channel_id", "thread_ts")
        if not isinstance(params.get("status"), str):  # "" is how a status is cleared
            return _err("invalid_arguments")
        return {"ok": True}

    def _set_suggested_prompts(self, params: Params) -> Params:
        _require(params, "channel_id", "prompts")
        return {"ok": True}

    def _set_title(self, params: Params) -> Params:
        _require(params, "channel_id", "thread_ts", "title")
        return {"ok": True}
