"""Fuzzing the front door: whatever Slack (or something pretending to be Slack) sends, the bot acknowledges
it, raises nothing, logs no unhandled exception, shows no traceback or exception name in Slack, and
finishes every answer it starts (the working reaction or status line is cleared, streams are stopped, a
"working on it" note is followed by the answer).

Each test shares one running bot (the `bot` fixture) across its Hypothesis examples and hands it payloads
through `AsyncApp.async_dispatch`, as the Socket Mode handler does. The listener tasks Bolt starts for a
payload are awaited before the example's checks, so nothing of one example still runs in the next.

Payloads come three ways: realistic ones with one to three top-level fields deleted, added or replaced
(`corrupted`); realistic ones with up to three fields anywhere deleted, given a wrong type or replaced by
text (`mutants`), which reach deep into the pipeline; and, for events, every field drawn at once. Slash
commands are drawn field by field, each value a string or missing. A few fields are fuzzed only within
what Bolt itself can take, because Bolt reads them before any of the bot's code runs (see `BOLT_READS`,
`INTERACTIVE_PROTECTED` and `bolt_fails_before_the_bot`). What the fuzzing found is kept as plain cases
at the end.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import itertools
import json
import logging
import re
import tempfile
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from slack_bolt.context.assistant.async_assistant_utilities import AsyncAssistantUtilities
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import is_assistant_event
from slack_bolt.response import BoltResponse

from bot.guards import why_ignored
from bot.pipeline import claude as claude_module
from bot.pipeline import context as context_module
from bot.pipeline import reply as reply_module
from bot.pipeline import said as said_module
from bot.pipeline.progress import WORKING_NOTE, WORKING_REACTION
from bot.surfaces import assistant, shortcuts, slash_command
from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, DM, bot_said, said

# Hypothesis keeps caches (and would keep its example database) under .hypothesis in the working
# directory; this project writes nothing there, so they go to the temporary directory instead.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "claude-slack-hypothesis")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # writes no .hypothesis directory into the project
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LISTENER_TIMEOUT = 10.0  # seconds for every listener of one payload to end; a hang fails the example

TEAM = "T0TEAM"
ROOT, EARLIER, QUESTION = "1700000000.000100", "1700000000.000200", "1700000000.000300"
DM_THREAD = "1700000000.000500"
NEW_TS = "1700000000.000600"

# --- what must never reach Slack -------------------------------------------------------------------


def _is_exception(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _exception_names() -> set[str]:
    names = {name for name, value in vars(builtins).items() if _is_exception(value)}
    for module in (claude_module, context_module, reply_module, said_module):
        names |= {name for name, value in vars(module).items() if _is_exception(value)}
    names |= {"SlackApiError", "SlackRequestError", "ClientError", "ClientConnectorError", "InvalidURL"}
    names |= {"APIStatusError", "APIConnectionError", "APITimeoutError", "JSONDecodeError"}
    # Plain words that our own sentences may use, even where a class shares the name.
    return names - {"Exception", "Warning"}


FORBIDDEN = re.compile(
    r"Traceback|Error code|\b(?:" + "|".join(sorted(map(re.escape, _exception_names()))) + r")\b"
)
# An unexpected exception in the pipeline, or a request the (validating) fake Claude refused as malformed.
WRONG_SENTENCES = (
    said_module.FALLBACK_SENTENCE,
    claude_module.ClaudeRejected.sentence,
    claude_module.ClaudeMisconfigured.sentence,
)


def innocent(text: str) -> bool:
    """Fuzzed text must not itself quote a forbidden word: private answers quote the question."""
    return FORBIDDEN.search(text) is None


# --- strategies -------------------------------------------------------------------------------------

WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Bolt reads `user`, `channel`, `team` and `enterprise` (of the event, and of interactive payloads) while
# building the request, and raises TypeError when one is a number or a boolean
# (slack_bolt/request/internals.py, extract_user_id and friends), before any of the bot's code runs.
# Slack sends strings or objects there, so those fields get only the wrong types Bolt can digest.
BOLT_READS = st.one_of(
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FRAGMENTS = [
    f"<@{BOT_USER}>",
    f"<@{BOT_USER}|claude>",
    f"<@{ALICE}>",
    "<@W0ENTERPRISE>",
    "<@",
    "<@>",
    "<@U0BOT",
    "<#C0GENERAL|general>",
    "<#C0GENERAL>",
    "<!here>",
    "<!channel>",
    "&lt;&gt;&amp;",
    "```",
    "```python\n",
    "> ",
    "*bold* _it_ ~s~",
    "\n",
    "   ",
    "\u200b",
    "\u2060",
    "\u202e",
    "🙂",
    "👩🏽‍💻",
    "ﷺ",
    "\x00",
    "help",
    "summarize this channel",
    "what about the current conversation?",
    "# heading\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n",
]
SHORT_TEXT = st.text(max_size=60)
HUGE_TEXT = st.builds(
    lambda piece, size: (piece * size)[:size],
    st.sampled_from(["x", "é", "🙂", f"<@{BOT_USER}> ", "line\n", "```\n", "<@U0ALICE> "]),
    st.integers(5_000, 45_000),
)
TEXT = st.one_of(
    SHORT_TEXT,
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), SHORT_TEXT), min_size=1, max_size=8).map("".join),
    HUGE_TEXT,
).filter(innocent)
TS = st.one_of(
    st.sampled_from([ROOT, EARLIER, QUESTION, DM_THREAD, NEW_TS, "0", "1.1", "9999999999.999999"]),
    st.from_regex(r"\A-?[0-9]{1,20}(\.[0-9]{0,9})?\Z"),
    st.text(max_size=20),
)
USER = st.one_of(
    st.sampled_from([ALICE, BOB, BOT_USER, "W0ENTERPRISE", "U0STRANGER", ""]), st.text(max_size=12)
)
CHANNELS = st.one_of(
    st.sampled_from([CHANNEL, DM, "D0OTHER", "G0PRIVATE", "C0EMPTY", ""]), st.text(max_size=12)
)
EVENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "app_mention",
            "message",
            "app_home_opened",
            "assistant_thread_started",
            "assistant_thread_context_changed",
            "agent_session_stopped",
            "reaction_added",
            "future_event_nobody_knows",
        ]
    ),
    st.text(max_size=20),
)
SUBTYPES = st.one_of(
    st.sampled_from(
        [
            "file_share",
            "message_changed",
            "message_deleted",
            "bot_message",
            "thread_broadcast",
            "me_message",
            "channel_join",
        ]
    ),
    st.text(max_size=12),
)


def maybe_wrong(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, WRONG)


FILE = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe_wrong(st.text(max_size=10)),
        "name": maybe_wrong(TEXT),
        "mimetype": st.sampled_from(["image/png", "text/plain", "application/pdf"]),
        "url_private": st.just("http://127.0.0.1:1/files/x"),
        "size": WRONG,
    },
)
ATTACHMENT = st.fixed_dictionaries(
    {}, optional={"text": maybe_wrong(TEXT), "fallback": TEXT, "color": st.text(max_size=6)}
)
BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["rich_text", "section", "markdown", "nonsense"])},
    optional={"block_id": st.text(max_size=6), "text": maybe_wrong(TEXT), "elements": WRONG},
)
ASSISTANT_THREAD = st.fixed_dictionaries(
    {},
    optional={
        "user_id": maybe_wrong(USER),
        "channel_id": maybe_wrong(CHANNELS),
        "thread_ts": maybe_wrong(TS),
        "context": maybe_wrong(
            st.fixed_dictionaries(
                {}, optional={"channel_id": maybe_wrong(CHANNELS), "team_id": maybe_wrong(st.just(TEAM))}
            )
        ),
    },
)
# What each event field may be: right, oddly right, or of the wrong type.
EVENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": maybe_wrong(EVENT_TYPES),
    "user": st.one_of(USER, BOLT_READS),
    "text": maybe_wrong(TEXT),
    "ts": maybe_wrong(TS),
    "event_ts": maybe_wrong(TS),
    "thread_ts": maybe_wrong(TS),
    "channel": st.one_of(CHANNELS, BOLT_READS),
    "channel_type": maybe_wrong(
        st.one_of(st.sampled_from(["im", "channel", "group", "mpim", "app_home"]), st.text(max_size=8))
    ),
    "subtype": maybe_wrong(SUBTYPES),
    "bot_id": maybe_wrong(st.sampled_from(["B0BOT", "B0OTHER", ""])),
    "team": maybe_wrong(st.sampled_from([TEAM, "T0OTHER", "E0ENTERPRISE", ""])),
    "user_team": maybe_wrong(st.sampled_from([TEAM, "T0OTHER", ""])),
    "files": maybe_wrong(st.lists(FILE, max_size=3)),
    "attachments": maybe_wrong(st.lists(ATTACHMENT, max_size=3)),
    "blocks": maybe_wrong(st.lists(BLOCK, max_size=3)),
    "tab": maybe_wrong(st.sampled_from(["messages", "home", "about"])),
    "assistant_thread": maybe_wrong(ASSISTANT_THREAD),
    "streaming_message_ts": maybe_wrong(st.lists(TS, max_size=2)),
    "message": maybe_wrong(st.fixed_dictionaries({}, optional={"text": TEXT, "ts": TS, "user": USER})),
}
# All fields drawn at once: each present or not, right or wrong.
ANY_EVENT = st.fixed_dictionaries({}, optional=EVENT_FIELDS)


def _realistic_events() -> st.SearchStrategy[dict[str, Any]]:
    person = {
        "user": st.sampled_from([ALICE, BOB]),
        "ts": st.just(NEW_TS),
        "text": TEXT,
        "team": st.just(TEAM),
    }
    in_dm = {"channel": st.just(DM), "channel_type": st.just("im")}
    thread = {
        "user_id": st.just(ALICE),
        "channel_id": st.just(DM),
        "thread_ts": st.just(DM_THREAD),
        "context": st.just({"channel_id": CHANNEL, "team_id": TEAM, "enterprise_id": None}),
    }
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("app_mention"), "channel": st.just(CHANNEL), **person}),
        st.fixed_dictionaries(
            {
                "type": st.just("app_mention"),
                "channel": st.just(CHANNEL),
                "thread_ts": st.just(ROOT),
                **person,
            }
        ),
        st.fixed_dictionaries({"type": st.just("message"), **in_dm, **person}),
        st.fixed_dictionaries(
            {"type": st.just("message"), "thread_ts": st.just(DM_THREAD), **in_dm, **person}
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("message"),
                "subtype": st.just("file_share"),
                "files": st.lists(FILE, min_size=1, max_size=2),
                **in_dm,
                **person,
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("message"),
                "subtype": st.just("message_changed"),
                "channel": st.just(DM),
                "channel_type": st.just("im"),
                "ts": st.just(NEW_TS),
                "message": st.fixed_dictionaries(
                    {"user": st.just(ALICE), "text": TEXT, "ts": st.just(QUESTION)}
                ),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["assistant_thread_started", "assistant_thread_context_changed"]),
                "assistant_thread": st.fixed_dictionaries(thread),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("app_home_opened"),
                "user": st.just(ALICE),
                "channel": st.just(DM),
                "tab": st.sampled_from(["messages", "home"]),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("agent_session_stopped"),
                "channel": st.just(DM),
                "user": st.just(ALICE),
                "thread_ts": st.just(DM_THREAD),
                "streaming_message_ts": st.lists(TS, max_size=2),
            }
        ),
        st.fixed_dictionaries({"type": st.just("future_event_nobody_knows"), "user": st.just(ALICE)}),
    ).map(lambda event: {"event_ts": NEW_TS, **event})


# --- mutations of realistic payloads ----------------------------------------------------------------

Path = tuple[Any, ...]


def _paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _touches(path: Path, protected: frozenset[Path]) -> bool:
    """Whether changing `path` would change a protected path, an ancestor or a descendant of one."""
    return any(path[: len(p)] == p or p[: len(path)] == path for p in protected)


@st.composite
def mutants(
    draw: st.DrawFn,
    valid: st.SearchStrategy[Any],
    *,
    protected: frozenset[Path] = frozenset(),
    bolt_reads: frozenset[Path] = frozenset(),
) -> Any:
    """A realistic payload with up to three fields deleted, given a wrong type or replaced by text."""
    payload = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(0, 3))):
        paths = [path for path in _paths(payload) if not _touches(path, protected)]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = payload
        for key in path[:-1]:
            parent = parent[key]
        operation = draw(st.sampled_from(["delete", "wrong", "text"]))
        if operation == "delete":
            del parent[path[-1]]
        elif operation == "wrong":
            parent[path[-1]] = draw(BOLT_READS if path in bolt_reads else WRONG)
        else:
            parent[path[-1]] = draw(st.text(max_size=20).filter(innocent))
    return payload


DELETE = object()


@st.composite
def corrupted(
    draw: st.DrawFn,
    valid: st.SearchStrategy[dict[str, Any]],
    fields: dict[str, Any],
    *,
    bolt_reads: frozenset[Path] = frozenset(),
) -> Any:
    """A realistic payload with one to three of its top-level `fields` deleted, added or replaced.

    Fields are picked one by one, so each gets its turn at every kind of wrong value; drawing all fields
    at once (ANY_EVENT) tends to make them all wrong, or all right, together."""
    payload = dict(draw(valid))
    for name in draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True)):
        wrong = BOLT_READS if (name,) in bolt_reads else WRONG
        value = draw(st.one_of(st.just(DELETE), wrong, fields[name]))
        if value is DELETE:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


EVENT_BOLT_READS = frozenset({("user",), ("channel",), ("enterprise",)})
EVENTS = st.one_of(
    corrupted(_realistic_events(), EVENT_FIELDS, bolt_reads=EVENT_BOLT_READS),
    corrupted(_realistic_events(), EVENT_FIELDS, bolt_reads=EVENT_BOLT_READS),
    mutants(_realistic_events(), bolt_reads=EVENT_BOLT_READS),
    ANY_EVENT,
)
# A body-level event id: usually fresh (so the event is not taken for a redelivery), sometimes odd.
EVENT_ID = st.one_of(
    st.just("fresh"), st.just("fresh"), st.just("fresh"), st.none(), WRONG, st.text(max_size=8)
)

# Bolt routes interactive payloads by these, and reads `view.type` and `response_urls` itself (a KeyError,
# TypeError or AttributeError before any listener otherwise; even two proper response_urls entries make it
# fail, slack_bolt/request/async_internals.py:65-68). Slack always sends them well-formed.
INTERACTIVE_PROTECTED = frozenset(
    {("type",), ("callback_id",), ("view", "type"), ("view", "callback_id"), ("response_urls",)}
)
INTERACTIVE_BOLT_READS = frozenset({("team",), ("user",), ("channel",), ("enterprise",)})


def response_urls(slack_url: str) -> st.SearchStrategy[str]:
    """The fake's response_url, or text that cannot be a URL with a host (so nothing is looked up).

    (An unreachable response_url costs the SDK's retry and back-off, most of a second: it is one of the
    plain cases at the end instead.)"""
    return st.one_of(
        st.just(slack_url),
        st.just(slack_url),
        st.text(alphabet=st.characters(exclude_characters="/\\"), max_size=20),
    )


def slash_commands(slack_url: str) -> st.SearchStrategy[dict[str, str]]:
    """Slash command payloads: every value a string or missing."""
    values = {
        "token": st.text(max_size=10),
        "team_id": st.one_of(st.just(TEAM), st.text(max_size=10)),
        "team_domain": st.text(max_size=10),
        "channel_id": CHANNELS,
        "channel_name": st.text(max_size=10),
        # Not the bot's own id: Slack never sends it here, and the bot would ask Claude with no user turn
        # (reported: retention drops a trailing turn of the bot's, leaving no messages at all).
        "user_id": USER.filter(lambda user: user != BOT_USER),
        "user_name": st.text(max_size=10),
        "text": st.one_of(TEXT, st.sampled_from(["", " ", "help", "HELP", "?", "--help", " -h "])),
        "api_app_id": st.text(max_size=6),
        "is_enterprise_install": st.sampled_from(["false", "true", "", "maybe"]),
        "response_url": response_urls(slack_url),
        "trigger_id": st.text(max_size=20),
        "enterprise_id": st.text(max_size=6),
    }
    command = st.one_of(st.just("/claude"), st.just("/claude"), st.sampled_from(["/other", "/Claude"]))
    return st.fixed_dictionaries({"command": command}, optional=values)


def message_actions(slack_url: str) -> st.SearchStrategy[dict[str, Any]]:
    message = st.fixed_dictionaries(
        {"type": st.just("message"), "user": st.sampled_from([ALICE, BOB]), "text": TEXT},
        optional={
            "ts": st.sampled_from([ROOT, QUESTION, NEW_TS]),
            "thread_ts": st.sampled_from([ROOT, NEW_TS]),
        },
    )
    valid = st.fixed_dictionaries(
        {
            "type": st.just("message_action"),
            "callback_id": st.sampled_from([shortcuts.SUMMARIZE_THREAD, shortcuts.ASK_ABOUT_THREAD]),
            "token": st.just("FAKEverificationTOKEN0000"),
            "action_ts": st.just(NEW_TS),
            "team": st.just({"id": TEAM, "domain": "fakeco"}),
            "user": st.just({"id": ALICE, "username": "alice", "team_id": TEAM}),
            "channel": st.sampled_from(
                [{"id": CHANNEL, "name": "general"}, {"id": "C0EMPTY", "name": "empty"}]
            ),
            "is_enterprise_install": st.just(False),
            "enterprise": st.none(),
            "trigger_id": st.one_of(st.just("12.34.fake-trigger"), st.just(""), st.text(max_size=12)),
            "message_ts": st.just(ROOT),
            "message": message,
            "response_url": response_urls(slack_url),
        }
    )
    return mutants(valid, protected=INTERACTIVE_PROTECTED, bolt_reads=INTERACTIVE_BOLT_READS)


def view_submissions(slack_url: str) -> st.SearchStrategy[dict[str, Any]]:
    metadata = st.one_of(
        mutants(
            st.fixed_dictionaries(
                {
                    "team_id": st.just(TEAM),
                    "user_id": st.just(ALICE),
                    "channel_id": st.sampled_from([CHANNEL, "C0EMPTY"]),
                    "thread_ts": st.just(ROOT),
                    "response_url": response_urls(slack_url),
                }
            )
        ).map(json.dumps),
        st.sampled_from(
            ['"abcde"', '{"a":1,"b":2,"c":3,"d":4,"e":5}', "null", "5", "[]", "", "{", "[1,2"]
            + [json.dumps([TEAM, ALICE, CHANNEL, ROOT, slack_url])]  # a list, as modals before named keys had
        ),
        st.text(max_size=20),
    )
    question = st.fixed_dictionaries({"type": st.just("plain_text_input"), "value": maybe_wrong(TEXT)})
    valid = st.fixed_dictionaries(
        {
            "type": st.just("view_submission"),
            "team": st.just({"id": TEAM, "domain": "fakeco"}),
            "user": st.just({"id": ALICE, "username": "alice", "team_id": TEAM}),
            "api_app_id": st.just("A0APP"),
            "trigger_id": st.just("12.34.fake-trigger"),
            "view": st.fixed_dictionaries(
                {
                    "id": st.just("V0FAKE"),
                    "type": st.just("modal"),
                    "callback_id": st.just(shortcuts.ASK_ABOUT_THREAD),
                    "private_metadata": metadata,
                    "state": st.fixed_dictionaries(
                        {
                            "values": st.fixed_dictionaries(
                                {
                                    shortcuts.QUESTION_BLOCK: st.fixed_dictionaries(
                                        {shortcuts.QUESTION_INPUT: question}
                                    )
                                }
                            )
                        }
                    ),
                    "app_installed_team_id": st.just(TEAM),
                }
            ),
            "response_urls": st.just([]),
        }
    )
    return mutants(valid, protected=INTERACTIVE_PROTECTED, bolt_reads=INTERACTIVE_BOLT_READS)


# --- the harness --------------------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, from any logger (Bolt's listener failures, asyncio, ours)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def described(self) -> list[str]:
        return [self.format(record) for record in self.records]


@pytest.fixture
def error_records() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture
def bot_overrides() -> dict[str, str]:
    """Hundreds of examples come from a handful of users; the per-user limit is not under test here."""
    return {"USER_REQUESTS_PER_MINUTE": "1000"}


class Harness:
    def __init__(self, bot: Any, errors: ErrorRecords) -> None:
        self.bot = bot
        self.errors = errors
        self.event_ids = itertools.count(1)
        bot.slack.add_thread(
            CHANNEL,
            [
                said(BOB, "The deploy failed at step 3.", ROOT),
                bot_said("It timed out fetching the image.", EARLIER),
                said(ALICE, f"<@{BOT_USER}> why did it time out?", QUESTION),
            ],
        )
        bot.slack.add_thread(DM, [said(ALICE, "What is a mutex?", DM_THREAD)])
        bot.slack.add_history("C0EMPTY", [])  # exists, but holds nothing; "D0OTHER" and others do not exist
        bot.slack.add_channel("G0PRIVATE")

    async def dispatch(self, body: dict[str, Any]) -> BoltResponse:
        """Dispatch as the Socket Mode handler does, then wait for every listener Bolt started for it."""
        request = AsyncBoltRequest(body=body, mode="socket_mode")
        response, listeners = await _with_tasks_it_starts(self.bot.app.async_dispatch(request))
        if listeners:
            async with asyncio.timeout(LISTENER_TIMEOUT):
                await asyncio.gather(*listeners)
        return response

    async def check(self, body: dict[str, Any], *, status: int = 200) -> tuple[BoltResponse, list[Any]]:
        """Dispatch `body`: it is acknowledged, and all it caused is clean. Returns the response and the
        Slack calls it caused."""
        slack = self.bot.slack
        first_call = len(slack.calls)
        self.errors.records.clear()
        response = await self.dispatch(body)
        assert response.status == status, (response.status, response.body)
        assert not self.errors.records, self.errors.described()
        calls = slack.calls[first_call:]
        for text in [str(response.body or ""), *(shown for call in calls for shown in _shown(call))]:
            assert not FORBIDDEN.search(text), text[:500]
            for sentence in WRONG_SENTENCES:
                assert sentence not in text, text[:500]
        _assert_every_start_finished(slack, calls)
        return response, calls

    def event_body(self, event: Any, event_id: object = "fresh") -> dict[str, Any]:
        body = self.bot.slack.events_api_envelope(event)["payload"]
        if event_id == "fresh":
            body["event_id"] = f"Ev0FUZZ{next(self.event_ids):06d}"
        elif event_id is None:
            del body["event_id"]
        else:
            body["event_id"] = event_id
        return body


@pytest.fixture
def harness(bot: Any, error_records: ErrorRecords) -> Harness:
    return Harness(bot, error_records)


async def _with_tasks_it_starts(
    work: Coroutine[Any, Any, BoltResponse],
) -> tuple[BoltResponse, list[asyncio.Task[Any]]]:
    """Run `work` in this task; returns its result and the tasks it created itself (Bolt's listeners)."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    created: list[asyncio.Task[Any]] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        task = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
        if asyncio.current_task() is me:
            created.append(task)
        return task

    loop.set_task_factory(factory)
    try:
        return await work, created
    finally:
        loop.set_task_factory(previous)


SHOWN_BY = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        "response_url",
        "views.open",
    }
)


def _shown(call: Any) -> list[str]:
    """What a Slack call shows to people."""
    if call.method not in SHOWN_BY:
        return []
    keys = ("text", "markdown_text", "chunks", "blocks", "view")
    return [str(call.params[key]) for key in keys if key in call.params]


def _assert_every_start_finished(slack: Any, calls: list[Any]) -> None:
    # The working reaction is gone from every message it was put on.
    for call in calls:
        if call.method == "reactions.add":
            channel, ts = call.params.get("channel", ""), call.params.get("timestamp", "")
            assert WORKING_REACTION not in slack.reactions(channel, ts), (channel, ts)
    # Every thread status line ends cleared.
    last_status: dict[tuple[str, str], str] = {}
    for call in calls:
        if call.method == "assistant.threads.setStatus":
            key = (call.params.get("channel_id", ""), call.params.get("thread_ts", ""))
            last_status[key] = call.params.get("status", "")
    assert all(status == "" for status in last_status.values()), last_status
    # Every native stream begun is stopped.
    methods = [call.method for call in calls]
    assert methods.count("chat.stopStream") >= methods.count("chat.startStream"), methods
    # A private "working on it" note is followed by the answer (or a sentence saying why there is none).
    private = [call for call in calls if call.method == "response_url"]
    for i, call in enumerate(private):
        if call.params.get("text") == WORKING_NOTE:
            assert any(later.params["_name"] == call.params["_name"] for later in private[i + 1 :]), (
                call.params
            )


def bolt_fails_before_the_bot(body: dict[str, Any]) -> bool:
    """Whether Bolt itself fails on this payload before any of the bot's code runs.

    1. Building the request: Bolt's extract_* helpers (slack_bolt/request/internals.py) take a user,
       channel or team that is a number or a boolean for an object and raise TypeError, wherever they
       look for one (the payload, its event, the event's `message`...). Over Socket Mode that envelope
       is then never acknowledged.
    2. Bolt's conversation-kwargs listener middleware (on by default): for an assistant event
       (assistant_thread_*, or a DM message with a thread_ts) it builds assistant helpers and raises
       ValueError (or AttributeError) when the event has a channel but no usable assistant_thread or
       thread_ts; Bolt logs that at ERROR and answers 500, which Socket Mode does not acknowledge. The
       bot could opt out with AsyncApp(attaching_conversation_kwargs_enabled=False), as it uses none
       of those helpers.

    Slack sends neither; BOLT_READS keeps most such payloads from being drawn at all.
    """
    try:
        request = AsyncBoltRequest(body=body, mode="socket_mode")
    except (TypeError, AttributeError, KeyError):
        return True
    if not is_assistant_event(body) or request.context.channel_id is None:
        return False
    try:
        AsyncAssistantUtilities(payload=body["event"], context=request.context)
    except (ValueError, AttributeError):
        return True
    return False


# --- the properties ------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=1000)
@given(event=EVENTS, event_id=EVENT_ID)
async def test_any_event_is_acknowledged_and_handled_cleanly(harness, event, event_id):
    body = harness.event_body(event, event_id)
    assume(not bolt_fails_before_the_bot(body))
    await harness.check(body)


@settings(FUZZ, max_examples=150)
@given(
    where=st.sampled_from(
        [(CHANNEL, "channel", ROOT), (CHANNEL, "channel", None), (DM, "im", DM_THREAD), (DM, "im", None)]
    ),
    event=st.fixed_dictionaries(
        {
            "type": st.sampled_from(["app_mention", "message"]),
            "user": st.sampled_from([ALICE, BOB]),
            "text": TEXT,
            "ts": st.sampled_from(["1700000000.000400", NEW_TS, "1700000001.000001"]),
        },
        optional={
            "subtype": st.just("file_share"),
            "files": st.lists(FILE, max_size=2),
            "attachments": st.lists(ATTACHMENT, max_size=2),
            "blocks": st.lists(BLOCK, max_size=2),
        },
    ),
)
async def test_well_formed_events_with_any_text_reach_claude_and_finish(harness, where, event):
    """Well-formed events with fuzzed text and extras, so the text goes all the way through to Claude."""
    channel, channel_type, thread_ts = where
    event = {**event, "channel": channel, "channel_type": channel_type}
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    claude_calls = len(harness.bot.claude.requests)

    await harness.check(harness.event_body(event))

    answered = event["text"].strip() and (event["type"] == "app_mention" or channel_type == "im")
    assert why_ignored(event, BOT_USER) is None
    assert len(harness.bot.claude.requests) == claude_calls + bool(answered)


@FUZZ
@given(data=st.data())
async def test_any_slash_command_is_acknowledged_and_handled_cleanly(harness, data):
    url = harness.bot.slack.response_url("cmd")
    payload = data.draw(slash_commands(url))
    assume(not bolt_fails_before_the_bot(payload))
    ours = payload["command"] == "/claude"

    # Bolt answers a command no listener takes with 404 ("unhandled request") and logs a warning.
    response, calls = await harness.check(payload, status=200 if ours else 404)

    if ours:
        assert response.body in (slash_command.WORKING, slash_command.usage("/claude"))  # ack(text=...)
        if response.body == slash_command.WORKING and payload.get("response_url") == url:
            # "Asking Claude…" promised an answer: it (or a sentence saying why not) arrives, once.
            assert [call.params["_name"] for call in calls if call.method == "response_url"] == ["cmd"]


@FUZZ
@given(data=st.data())
async def test_any_message_shortcut_is_acknowledged_and_handled_cleanly(harness, data):
    payload = data.draw(message_actions(harness.bot.slack.response_url("shortcut")))
    assume(not bolt_fails_before_the_bot(payload))
    await harness.check(payload)


@FUZZ
@given(data=st.data())
async def test_any_view_submission_is_acknowledged_and_handled_cleanly(harness, data):
    payload = data.draw(view_submissions(harness.bot.slack.response_url("modal")))
    assume(not bolt_fails_before_the_bot(payload))
    await harness.check(payload)


# --- what the fuzzing found, kept as plain cases ---------------------------------------------------------


def _modal(private_metadata: Any, state: Any) -> dict[str, Any]:
    view = {"type": "modal", "callback_id": shortcuts.ASK_ABOUT_THREAD, "private_metadata": private_metadata}
    return {"type": "view_submission", "user": {"id": ALICE}, "view": {**view, "state": state}}


QUESTION_STATE = {"values": {"question": {"text": {"type": "plain_text_input", "value": "why?"}}}}
THREAD_METADATA = {"team_id": TEAM, "user_id": ALICE, "channel_id": CHANNEL, "thread_ts": ROOT}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"event": {"type": "message", "channel": DM, "subtype": []}}, id="event-subtype-a-list"),
        pytest.param({"event": {"type": "app_mention", "subtype": {"a": 1}}}, id="event-subtype-an-object"),
        pytest.param(_modal("[]", 1.5), id="modal-state-a-number"),
        pytest.param(_modal("[]", {"values": "x"}), id="modal-values-a-string"),
        pytest.param(
            _modal(json.dumps(dict.fromkeys(shortcuts.THREAD_KEYS, 1)), QUESTION_STATE),
            id="modal-metadata-numbers",
        ),
        pytest.param(
            _modal(json.dumps(dict(THREAD_METADATA, response_url=5)), QUESTION_STATE),
            id="modal-response-url-a-number",
        ),
        pytest.param(
            {
                "command": "/claude",
                "text": "hi",
                "user_id": ALICE,
                "response_url": "http://127.0.0.1:1/closed",
            },
            id="slash-command-response-url-unreachable",
        ),
        pytest.param(
            {
                "type": "message_action",
                "callback_id": shortcuts.ASK_ABOUT_THREAD,
                "team": {"id": TEAM},
                "user": {"id": ALICE},
                "channel": {"id": CHANNEL},
                "message": {"ts": ROOT},
                "response_url": "http://127.0.0.1:1/closed",
                # Slack refuses views.open (here: invalid_arguments; live: expired_trigger_id)
                "trigger_id": "",
            },
            id="shortcut-trigger-refused",
        ),
    ],
)
async def test_payloads_that_once_crashed_a_listener(harness, payload):
    if "event" in payload:
        payload = harness.event_body(payload["event"])
    await harness.check(payload)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            {"event": {"type": "app_mention", "user": ALICE, "text": "<@U0BOT> hi \ud83d", "ts": NEW_TS}},
            id="mention",
        ),
        pytest.param(
            {
                "event": {
                    "type": "message",
                    "user": ALICE,
                    "text": "hi \udfff",
                    "ts": NEW_TS,
                    "channel_type": "im",
                }
            },
            id="direct-message",
        ),
        pytest.param({"command": "/claude", "text": "why \ud800", "user_id": ALICE}, id="slash-command"),
    ],
)
async def test_a_lone_surrogate_in_the_text_is_answered_without_an_unhandled_error(harness, payload):
    if "event" in payload:
        payload = harness.event_body(
            {**payload["event"], "channel": DM if "channel_type" in payload["event"] else CHANNEL}
        )
    else:
        payload = {**payload, "response_url": harness.bot.slack.response_url("surrogate")}
    await harness.check(payload)


async def test_the_checks_see_a_listener_that_fails(harness, monkeypatch):
    """The checks above can fail: a listener that raises shows in the error records."""

    async def explode(_ask: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.bot.pipeline, "_answer", explode)
    event = {"type": "app_mention", "user": ALICE, "text": "<@U0BOT> hi", "ts": NEW_TS, "channel": CHANNEL}
    with pytest.raises(AssertionError, match="Failed to run listener function"):
        await harness.check(harness.event_body(event))


def test_the_text_check_catches_exception_names():
    assert not innocent("Traceback (most recent call last):")
    assert not innocent("KeyError: 'text'")
    assert not innocent("Error code: 400")
    assert not innocent("ContextUnavailable")
    assert not innocent("slack_sdk.errors.SlackApiError: The request to the Slack API failed.")
    assert innocent(context_module.ContextUnavailable.sentence)
    assert innocent(said_module.TOO_MANY_REQUESTS.sentence)
    assert innocent(assistant.GREETING)
