"""Configuration: defaults, and one clear line naming the variable when something is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.config import DEFAULT_MODEL, ConfigError, Settings

BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "ANTHROPIC_API_KEY": "k"}


def test_defaults():
    settings = Settings.from_env(BASE)
    assert settings.socket_mode
    assert settings.port == 3000
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.claude_model == DEFAULT_MODEL
    assert settings.slash_command == "/claude"
    assert settings.log_level == "INFO"
    assert settings.claude_max_retries == 2
    assert settings.workers == 1 and settings.redis_url is None
    assert settings.max_concurrent_answers is None  # follows Claude's rate limits


def test_several_workers_with_redis():
    settings = Settings.from_env({**BASE, "WORKERS": "4", "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert settings.workers == 4


def test_enterprise_controls_default_to_the_safe_side():
    settings = Settings.from_env(BASE)
    assert settings.access.allowed_workspaces is None and settings.access.direct_messages
    assert not settings.access.external_users and not settings.access.guests
    assert settings.outbound.redact_secrets and not settings.outbound.redact_personal
    assert not settings.outbound.send_files
    assert settings.backend.kind == "anthropic" and settings.backend.inference_geo is None


def test_enterprise_controls_are_read():
    settings = Settings.from_env(
        {
            **BASE,
            "ALLOWED_WORKSPACES": "T0001, E0001",
            "DENIED_USERS": "U0BAD",
            "DIRECT_MESSAGES": "off",
            "ALLOW_GUESTS": "true",
            "REDACT_PERSONAL_DATA": "all",
            "SEND_FILES": "on",
            "CLAUDE_INFERENCE_GEO": "us",
        }
    )
    assert settings.access.allowed_workspaces == {"T0001", "E0001"}
    assert settings.access.denied_users == {"U0BAD"}
    assert not settings.access.direct_messages and settings.access.guests
    assert settings.outbound.redact_personal == {"email", "phone", "card", "iban", "national_id"}
    assert settings.outbound.send_files
    assert settings.backend.inference_geo == "us"


def test_cloud_backends_need_no_anthropic_key():
    env = {k: v for k, v in BASE.items() if k != "ANTHROPIC_API_KEY"}
    bedrock = Settings.from_env({**env, "CLAUDE_BACKEND": "bedrock", "AWS_REGION": "eu-west-1"})
    assert bedrock.anthropic_api_key is None and bedrock.backend.aws_region == "eu-west-1"
    vertex = Settings.from_env(
        {
            **env,
            "CLAUDE_BACKEND": "Vertex",
            "CLOUD_ML_REGION": "europe-west1",
            "ANTHROPIC_VERTEX_PROJECT_ID": "p1",
        }
    )
    assert (vertex.backend.kind, vertex.backend.vertex_region, vertex.backend.vertex_project_id) == (
        "vertex",
        "europe-west1",
        "p1",
    )


def test_http_mode_when_only_a_signing_secret_is_set():
    env = {**BASE, "SLACK_SIGNING_SECRET": "s"}
    del env["SLACK_APP_TOKEN"]
    assert not Settings.from_env(env).socket_mode


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SLACK_BOT_TOKEN": ""}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxp-user-token"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_APP_TOKEN": "xoxb-wrong"}, "SLACK_APP_TOKEN"),
        ({"SLACK_APP_TOKEN": ""}, "SLACK_APP_TOKEN"),
        ({"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY"),
        # Sent in a header on every call: a look-alike letter or a broken paste fails each one later.
        ({"ANTHROPIC_API_KEY": "sk-ant-api03-аbc"}, "ANTHROPIC_API_KEY"),  # a Cyrillic а
        ({"SLACK_BOT_TOKEN": "xoxb-1-2 xoxb-3-4"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_APP_TOKEN": "xapp-1-\u200b2"}, "SLACK_APP_TOKEN"),
        ({"SLACK_SIGNING_SECRET": "abc def"}, "SLACK_SIGNING_SECRET"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"SLACK_API_URL": "slack.com/api"}, "SLACK_API_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"CLAUDE_MAX_TOKENS": "0"}, "CLAUDE_MAX_TOKENS"),
        ({"CONTEXT_BUDGET_TOKENS": "many"}, "CONTEXT_BUDGET_TOKENS"),
        ({"SLASH_COMMAND": "claude"}, "SLASH_COMMAND"),
        ({"ALLOWED_WORKSPACES": "T1,acme"}, "ALLOWED_WORKSPACES"),
        ({"DENIED_CHANNELS": "U123"}, "DENIED_CHANNELS"),
        ({"ALLOWED_USERS": "C123"}, "ALLOWED_USERS"),
        ({"DIRECT_MESSAGES": "maybe"}, "DIRECT_MESSAGES"),
        ({"ALLOW_GUESTS": "2"}, "ALLOW_GUESTS"),
        ({"REDACT_PERSONAL_DATA": "email,shoe_size"}, "REDACT_PERSONAL_DATA"),
        ({"SEND_FILES": "files_api"}, "SEND_FILES"),
        ({"MAX_FILE_BYTES": "0"}, "MAX_FILE_BYTES"),
        ({"CLAUDE_BACKEND": "openai"}, "CLAUDE_BACKEND"),
        ({"ALLOW_RETAINED_MODELS": "sometimes"}, "ALLOW_RETAINED_MODELS"),
        ({"WORKERS": "2"}, "WORKERS"),  # several processes share state only through Redis
        ({"WORKERS": "0", "REDIS_URL": "redis://localhost"}, "WORKERS"),
        ({"REDIS_URL": "redis://localhost:99999/0"}, "REDIS_URL"),  # redis-py would crash at start
        ({"REDIS_URL": "redis://:secret@localhost:port/0"}, "REDIS_URL"),
        ({"ANSWER_LEASE_SECONDS": "1"}, "ANSWER_LEASE_SECONDS"),
        ({"MAX_CONCURRENT_ANSWERS": "0"}, "MAX_CONCURRENT_ANSWERS"),
        ({"CLAUDE_INFERENCE_GEO": "U S"}, "CLAUDE_INFERENCE_GEO"),
        (
            {"CLAUDE_BACKEND": "bedrock", "CLAUDE_INFERENCE_GEO": "us", "AWS_REGION": "us-east-1"},
            "CLAUDE_INFERENCE_GEO",
        ),
        ({"CLAUDE_BACKEND": "bedrock"}, "AWS_REGION"),
        ({"CLAUDE_BACKEND": "vertex", "ANTHROPIC_VERTEX_PROJECT_ID": "p"}, "CLOUD_ML_REGION"),
        ({"CLAUDE_BACKEND": "vertex", "CLOUD_ML_REGION": "us-east5"}, "ANTHROPIC_VERTEX_PROJECT_ID"),
    ],
)
def test_bad_variable_is_named(change, variable):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, **change})
    assert str(caught.value).startswith(f"{variable}:")


@pytest.mark.parametrize(
    "change",
    [
        {"CLAUDE_MODEL": "claude-fable-5-2"},
        {"CLAUDE_MODEL": "Claude-Mythos-Preview"},
        {"CLAUDE_MODEL": "claude-mythos-6"},  # a new member of a retained family fails closed
        {
            "CLAUDE_BACKEND": "bedrock",
            "AWS_REGION": "us-east-1",
            "CLAUDE_MODEL": "anthropic.claude-fable-5-v1:0",
        },
        {
            "CLAUDE_BACKEND": "bedrock",
            "AWS_REGION": "us-east-1",
            "CLAUDE_MODEL": "us.anthropic.claude-mythos-5-1",
        },
        {
            "CLAUDE_BACKEND": "vertex",
            "CLOUD_ML_REGION": "global",
            "ANTHROPIC_VERTEX_PROJECT_ID": "p",
            "CLAUDE_MODEL": "claude-fable-5@20260101",
        },
        {"CLAUDE_MODEL": "claude-fable-5-1", "ALLOW_RETAINED_MODELS": "off"},
    ],
)
def test_a_retained_model_is_refused_in_one_line_naming_it(change):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, **change})
    line = str(caught.value)
    assert line.startswith(f"CLAUDE_MODEL: {change['CLAUDE_MODEL']} is ")
    assert "retains for 30 days" in line and "set ALLOW_RETAINED_MODELS=on" in line and "\n" not in line


def test_a_retained_model_runs_only_when_the_operator_allows_it():
    settings = Settings.from_env({**BASE, "CLAUDE_MODEL": "claude-fable-5-2", "ALLOW_RETAINED_MODELS": "on"})
    assert settings.claude_model == "claude-fable-5-2" and settings.allow_retained_models
    assert not Settings.from_env(BASE).allow_retained_models
    # allowing them changes nothing for a model that is not retained
    assert Settings.from_env({**BASE, "ALLOW_RETAINED_MODELS": "on"}).claude_model == DEFAULT_MODEL


def test_secrets_are_not_echoed_in_errors():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "SLACK_BOT_TOKEN": "xoxp-secret-value"})
    assert "secret-value" not in str(caught.value)


def run_bot(env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_variable_exits_with_one_line_and_no_traceback(tmp_path):
    result = run_bot({"SLACK_APP_TOKEN": "xapp-1", "ANTHROPIC_API_KEY": "k"}, tmp_path)
    assert result.returncode != 0
    assert result.stderr == "configuration error: SLACK_BOT_TOKEN: required but not set\n"
    assert result.stdout == ""


def test_a_retained_model_stops_the_bot_with_one_line(tmp_path):
    result = run_bot({**BASE, "CLAUDE_MODEL": "claude-mythos-5-2"}, tmp_path)
    assert result.returncode != 0
    assert result.stderr == (
        "configuration error: CLAUDE_MODEL: claude-mythos-5-2 is Claude Mythos 5.2, whose inputs and outputs "
        "Anthropic retains for 30 days, which breaks zero retention; choose another model or set "
        "ALLOW_RETAINED_MODELS=on\n"
    )
    assert result.stdout == ""


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=xoxb-from-dotenv\nSLACK_APP_TOKEN=xapp-1\nPORT=3000\n")
    result = run_bot({"PORT": "not-a-port", "ANTHROPIC_API_KEY": "k"}, tmp_path)
    assert result.stderr.startswith("configuration error: PORT:")  # SLACK_BOT_TOKEN came from .env
