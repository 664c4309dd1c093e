"""Fixtures: fake Slack and fake Claude on 127.0.0.1, and the bot wired to them through the real clients."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp

from bot.app import (
    AckFirstSocketModeHandler,
    build_app,
    build_claude_client,
    build_slack_client,
    warm_up,
    watch_in_flight,
)
from bot.arrivals import Arrivals
from bot.config import Settings
from bot.pipeline.answer import Pipeline
from bot.state import State
from tests.fakes.claude_api import FakeClaude
from tests.fakes.slack_api import FakeSlack
from tests.redis_server import RedisServer

BOT_USER = "U0BOT"
ALICE, BOB = "U0ALICE", "U0BOB"
CHANNEL, DM = "C0GENERAL", "D0ALICE"
# A plain @here, @channel or @everyone that Slack would read as one: "_" (italics) ends a word for it.
PLAIN_BROADCAST = re.compile(r"(?<![^\W_])(?<![/.@])@(?:here|channel|everyone)(?![^\W_])", re.IGNORECASE)

OUR_PREFIXES = ("SLACK_", "ANTHROPIC_", "CLAUDE_", "CONTEXT_", "DM_", "PORT", "LOG_LEVEL", "SLASH_COMMAND")
CLOUD_PREFIXES = ("AWS_", "GOOGLE_", "CLOUD_ML_")  # read by boto3 and google-auth for Bedrock and Vertex


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests see only the configuration they pass; the SDKs must not pick up a developer's variables."""
    for name in list(os.environ):
        if name.startswith(OUR_PREFIXES + CLOUD_PREFIXES):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_user_id=BOT_USER) as fake:
        fake.add_user(ALICE, display_name="Alice", real_name="Alice Archer")
        fake.add_user(BOB, display_name="", real_name="Bob Builder")
        yield fake


@pytest.fixture
async def claude() -> AsyncIterator[FakeClaude]:
    async with FakeClaude() as fake:
        yield fake


def bot_env(slack: FakeSlack, claude: FakeClaude, **overrides: str) -> dict[str, str]:
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": claude.base_url,
        "ANTHROPIC_BEDROCK_BASE_URL": claude.base_url,  # read with CLAUDE_BACKEND=bedrock only
        "ANTHROPIC_VERTEX_BASE_URL": claude.vertex_base_url,  # read with CLAUDE_BACKEND=vertex only
        "CLAUDE_MAX_RETRIES": "0",
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value != ""}


@dataclass
class RunningBot:
    app: AsyncApp
    settings: Settings
    slack: FakeSlack
    claude: FakeClaude
    pipeline: Pipeline
    arrivals: Arrivals  # what was acked, on its way to the pipeline: `pipeline.drain` waits for it

    async def send_event(self, event: dict[str, Any], **envelope: Any) -> dict[str, Any]:
        """Deliver an event over Socket Mode; returns the envelope once the bot has acknowledged it."""
        frame = self.slack.events_api_envelope(event, **envelope)
        await self.slack.send_envelope(frame)
        await self.slack.wait_for_ack(frame["envelope_id"])
        return frame

    async def finished(self, count: int = 1) -> None:
        """Wait until `count` answers shown by a reaction are complete: the reaction is removed last."""
        await self.slack.wait_for("reactions.remove", count=count)

    def replies(self, channel: str, thread_ts: str) -> list[str]:
        """The bot's messages in a thread, as they read now."""
        return self.slack.thread_texts(channel, thread_ts)

    async def send_command(self, text: str, **fields: Any) -> dict[str, Any]:
        """Run the slash command over Socket Mode; returns the ack frame."""
        frame = self.slack.slash_command_envelope(self.settings.slash_command, text, **fields)
        await self.slack.send_envelope(frame)
        return await self.slack.wait_for_ack(frame["envelope_id"])


@pytest.fixture
def bot_overrides(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for the `bot` fixture; a test changes them with indirect parametrization."""
    return dict(getattr(request, "param", {}))


@asynccontextmanager
async def running_bot(
    slack: FakeSlack, claude: FakeClaude, overrides: dict[str, str], state: State | None = None
) -> AsyncIterator[RunningBot]:
    """The bot connected to fake Slack over Socket Mode, answering with fake Claude; `state` shared
    with other bots when it is a RedisState."""
    settings = Settings.from_env(bot_env(slack, claude, **overrides))
    slack_client = build_slack_client(settings)
    claude_client = build_claude_client(settings)
    pipeline = Pipeline(settings, slack_client, claude_client, state)
    app = build_app(settings, slack_client, claude_client, pipeline)
    assert settings.slack_app_token is not None
    identity = (await slack_client.auth_test()).data
    assert isinstance(identity, dict)
    await warm_up(app, identity)  # as `serve` does
    watching = watch_in_flight(pipeline, slack_client, identity)
    arrivals = Arrivals()
    handler = AckFirstSocketModeHandler(app, settings.slack_app_token, arrivals)
    connected = slack.socket_connections
    await handler.connect_async()
    await slack.wait_for_socket(count=connected + 1)
    try:
        yield RunningBot(app, settings, slack, claude, pipeline, arrivals)
    finally:
        watching.cancel()
        await handler.close_async()
        await claude_client.close()
        await slack_client.session.close()


@pytest.fixture
async def bot(
    slack: FakeSlack, claude: FakeClaude, bot_overrides: dict[str, str]
) -> AsyncIterator[RunningBot]:
    """The bot connected to fake Slack over Socket Mode, answering with fake Claude."""
    async with running_bot(slack, claude, bot_overrides) as running:
        yield running


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on loopback for the whole run, with no persistence."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def mention(
    text: str, *, ts: str, user: str = ALICE, channel: str = CHANNEL, thread_ts: str | None = None
) -> dict:
    event = {"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def direct_message(
    text: str, *, ts: str, user: str = ALICE, thread_ts: str | None = None, **extra: Any
) -> dict:
    event = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": DM,
        "event_ts": ts,
        "channel_type": "im",
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def said(user: str, text: str, ts: str) -> dict:
    """A person's message as conversations.* returns it."""
    return {"type": "message", "user": user, "text": text, "ts": ts}


def bot_said(text: str, ts: str) -> dict:
    return {"type": "message", "user": BOT_USER, "bot_id": "B0BOT", "text": text, "ts": ts}
