"""Settings: the bot's whole configuration, read once from a mapping (the environment)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_SYSTEM_PROMPT = (
    "You are Claude, a helpful assistant answering inside Slack. "
    "Each message from a person starts with their name and a colon. "
    "Answer the last message, using the rest of the conversation as context. "
    "Be concise; use Markdown sparingly (short lists, code blocks) because it is shown in Slack."
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

T = TypeVar("T")


class ConfigError(ValueError):
    """A missing or invalid variable; the message names it and says what is wrong."""


@dataclass(frozen=True, slots=True)
class Settings:
    slack_bot_token: str
    slack_app_token: str | None
    slack_signing_secret: str | None
    port: int
    slack_api_url: str
    anthropic_api_key: str
    anthropic_base_url: str | None
    claude_model: str
    claude_max_tokens: int
    claude_timeout_seconds: float
    claude_max_retries: int
    system_prompt: str
    context_budget_tokens: int
    dm_context_hours: float
    slash_command: str
    log_level: str
    max_concurrent_answers: int
    user_requests_per_minute: int
    request_deadline_seconds: float
    shutdown_grace_seconds: float
    slack_timeout_seconds: float

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        read = _Reader(env)
        app_token = read.optional("SLACK_APP_TOKEN", _prefixed("xapp-"))
        signing_secret = read.optional("SLACK_SIGNING_SECRET", str)
        if app_token is None and signing_secret is None:
            raise ConfigError(
                "SLACK_APP_TOKEN: not set, and neither is SLACK_SIGNING_SECRET; "
                "set the app token for Socket Mode or the signing secret for HTTP mode"
            )
        return cls(
            slack_bot_token=read.required("SLACK_BOT_TOKEN", _prefixed("xoxb-")),
            slack_app_token=app_token,
            slack_signing_secret=signing_secret,
            port=read.or_default("PORT", _int_between(1, 65535), 3000),
            slack_api_url=read.or_default("SLACK_API_URL", _http_url, "https://slack.com/api/"),
            anthropic_api_key=read.required("ANTHROPIC_API_KEY", str),
            anthropic_base_url=read.optional("ANTHROPIC_BASE_URL", _http_url),
            claude_model=read.or_default("CLAUDE_MODEL", str, DEFAULT_MODEL),
            claude_max_tokens=read.or_default("CLAUDE_MAX_TOKENS", _int_between(1, 128_000), 4096),
            claude_timeout_seconds=read.or_default("CLAUDE_TIMEOUT_SECONDS", _number_between(1, 3600), 120.0),
            claude_max_retries=read.or_default("CLAUDE_MAX_RETRIES", _int_between(0, 10), 2),
            system_prompt=read.or_default("CLAUDE_SYSTEM_PROMPT", str, DEFAULT_SYSTEM_PROMPT),
            context_budget_tokens=read.or_default(
                "CONTEXT_BUDGET_TOKENS", _int_between(1_000, 1_000_000), 50_000
            ),
            dm_context_hours=read.or_default("DM_CONTEXT_HOURS", _number_between(0.1, 24 * 90), 24.0),
            slash_command=read.or_default("SLASH_COMMAND", _slash_command, "/claude"),
            log_level=read.or_default("LOG_LEVEL", _one_of(LOG_LEVELS), "INFO"),
            max_concurrent_answers=read.or_default("MAX_CONCURRENT_ANSWERS", _int_between(1, 1000), 20),
            user_requests_per_minute=read.or_default("USER_REQUESTS_PER_MINUTE", _int_between(1, 1000), 10),
            request_deadline_seconds=read.or_default(
                "REQUEST_DEADLINE_SECONDS", _number_between(1, 3600), 300.0
            ),
            shutdown_grace_seconds=read.or_default("SHUTDOWN_GRACE_SECONDS", _number_between(0, 600), 20.0),
            slack_timeout_seconds=read.or_default("SLACK_TIMEOUT_SECONDS", _number_between(1, 300), 15.0),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str, parse: Callable[[str], T]) -> T | None:
        raw = self._env.get(name, "").strip()
        if not raw:
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    def or_default(self, name: str, parse: Callable[[str], T], default: T) -> T:
        """Like `optional`, but an unset variable means `default` (a set zero stays zero)."""
        value = self.optional(name, parse)
        return default if value is None else value

    def required(self, name: str, parse: Callable[[str], T]) -> T:
        value = self.optional(name, parse)
        if value is None:
            raise ConfigError(f"{name}: required but not set")
        return value


def _prefixed(prefix: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.startswith(prefix):
            raise ValueError(f"must start with {prefix}")
        return raw

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _number_between(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {value:g}")
        return value

    return parse


def _http_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL such as https://slack.com/api/")
    return raw


def _slash_command(raw: str) -> str:
    if not raw.startswith("/") or len(raw) > 32 or " " in raw:
        raise ValueError(f"must look like /claude (a slash, no spaces, at most 32 characters), got {raw!r}")
    return raw


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.upper() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw.upper()

    return parse
