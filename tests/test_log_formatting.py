"""The Slack client's DEBUG text is never even built: slack_sdk decides whether to format a request's
parameters and a response's body by its logger's own level, and the content-free handler would drop
that text anyway, after it had cost CPU on every call. And starting logs no warning that says nothing."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_app, build_claude_client, build_slack_client
from bot.config import Settings
from bot.logs import configure_logging
from tests.conftest import bot_env
from tests.fakes.claude_api import FakeClaude
from tests.fakes.slack_api import FakeSlack


class Formatted(str):
    """A request value that counts how often it is formatted for a log line (repr); sent as itself."""

    reprs = 0

    def __repr__(self) -> str:
        Formatted.reprs += 1
        return "Formatted()"


@pytest.fixture
def configured_logging() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("DEBUG", io.StringIO())  # our own DEBUG on: the libraries' still off
    Formatted.reprs = 0
    yield
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in saved.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("configured_logging")
async def test_web_api_calls_format_no_debug_text(slack: FakeSlack, claude: FakeClaude) -> None:
    client = build_slack_client(Settings.from_env(bot_env(slack, claude)))
    try:
        await client.api_call("users.info", params={"user": Formatted("U0ALICE")})
    finally:
        assert client.session is not None
        await client.session.close()
    assert [call.params["user"] for call in slack.calls if call.method == "users.info"] == ["U0ALICE"]
    assert Formatted.reprs == 0


def test_building_the_app_logs_no_warning(
    slack: FakeSlack, claude: FakeClaude, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bolt reads SLACK_BOT_TOKEN from the environment besides the client's, then warned that the client's
    wins: the same token, so every process started with a WARNING that said nothing."""
    env = bot_env(slack, claude)
    monkeypatch.setenv("SLACK_BOT_TOKEN", env["SLACK_BOT_TOKEN"])  # as in a deployment
    settings = Settings.from_env(env)
    with caplog.at_level(logging.WARNING):
        build_app(settings, AsyncWebClient(token=settings.slack_bot_token), build_claude_client(settings))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
