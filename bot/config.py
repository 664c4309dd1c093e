"""Settings: the bot's whole configuration, read once from a mapping (the environment)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

from bot.channel_config import ChannelConfig, load_channel_config
from bot.models import retained
from bot.pricing import Prices, parse_prices

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_SYSTEM_PROMPT = (
    "You are Claude, a helpful assistant answering inside Slack. "
    "Each message from a person starts with their name and a colon. "
    "Answer the last message, using the rest of the conversation as context. "
    "Be concise; use Markdown sparingly (short lists, code blocks) because it is shown in Slack."
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
BACKENDS = ("anthropic", "bedrock", "vertex")
PERSONAL_DATA = ("email", "phone", "card", "iban", "national_id")

T = TypeVar("T")


class ConfigError(ValueError):
    """A missing or invalid variable; the message names it and says what is wrong."""


@dataclass(frozen=True, slots=True)
class AccessSettings:
    """Who may use the bot. An allowlist of None lets everyone in who is not denied; a denial wins."""

    allowed_workspaces: frozenset[str] | None = None  # team ids (T…) or Enterprise Grid org ids (E…)
    denied_workspaces: frozenset[str] = frozenset()
    allowed_channels: frozenset[str] | None = None  # C… or G…; DMs are governed by direct_messages
    denied_channels: frozenset[str] = frozenset()
    allowed_users: frozenset[str] | None = None  # U… or W…
    denied_users: frozenset[str] = frozenset()
    direct_messages: bool = True
    external_users: bool = False  # people from other organizations in Slack Connect channels
    guests: bool = False  # restricted and ultra-restricted accounts


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """What may leave Slack for Claude."""

    redact_secrets: bool = True
    redact_personal: frozenset[str] = frozenset()  # a subset of PERSONAL_DATA
    send_files: bool = False
    max_file_bytes: int = 5_000_000
    max_files: int = 5

    @property
    def redacts(self) -> bool:
        return self.redact_secrets or bool(self.redact_personal)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """Where the model runs: the Anthropic API, Amazon Bedrock or Google Vertex AI."""

    kind: str = "anthropic"  # one of BACKENDS
    inference_geo: str | None = None  # the Anthropic API's data residency ("us", "global")
    aws_region: str | None = None
    bedrock_base_url: str | None = None
    vertex_region: str | None = None
    vertex_project_id: str | None = None
    vertex_base_url: str | None = None


@dataclass(frozen=True, slots=True)
class WebSearchSettings:
    """Anthropic's web search server tool (WEB_SEARCH): direct calls only, never web fetch."""

    enabled: bool = False
    max_uses: int = 3  # searches per answer
    allowed_domains: tuple[str, ...] = ()  # at most one of these two lists is given
    blocked_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    slack_bot_token: str
    slack_app_token: str | None
    slack_signing_secret: str | None
    port: int
    slack_api_url: str
    anthropic_api_key: str | None  # required for the Anthropic API backend only
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
    max_concurrent_answers: int | None  # a fixed ceiling; None: follow Claude's rate limits
    user_requests_per_minute: int
    request_deadline_seconds: float
    shutdown_grace_seconds: float
    slack_timeout_seconds: float
    redis_url: str | None = None  # ids-only state shared by every process; unset: this process's memory
    workers: int = 1  # processes `python -m bot` runs on this host
    answer_lease_seconds: float = 15.0  # how long a silent replica's answers stay its own
    claude_cache_ttl: str = "5m"  # prompt caching's TTL: "5m" or "1h"
    allow_retained_models: bool = False  # models Anthropic retains data for (bot.models) only if on
    user_tokens_per_day: int | None = None  # a per-person daily token budget; None: off
    claude_prices: Prices | None = None  # CLAUDE_MODEL's prices (CLAUDE_PRICES); None: bot.pricing's table
    metrics_port: int | None = None  # Socket Mode: where /metrics, /healthz and /readyz are served
    channel_config: ChannelConfig = ChannelConfig()  # per-channel instructions (CHANNEL_CONFIG)
    access: AccessSettings = AccessSettings()
    outbound: OutboundSettings = OutboundSettings()
    backend: BackendSettings = BackendSettings()
    web_search: WebSearchSettings = WebSearchSettings()

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        read = _Reader(env)
        app_token = read.optional("SLACK_APP_TOKEN", _prefixed("xapp-"))
        signing_secret = read.optional("SLACK_SIGNING_SECRET", _secret)
        if app_token is None and signing_secret is None:
            raise ConfigError(
                "SLACK_APP_TOKEN: not set, and neither is SLACK_SIGNING_SECRET; "
                "set the app token for Socket Mode or the signing secret for HTTP mode"
            )
        backend = _backend(read)
        allow_retained = read.or_default("ALLOW_RETAINED_MODELS", _switch, False)
        model = read.or_default("CLAUDE_MODEL", str, DEFAULT_MODEL)
        if retained(model) and not allow_retained:
            from bot.models import refusal  # its wording lives beside the list, for per-channel models too

            raise ConfigError(f"CLAUDE_MODEL: {refusal(model)}")
        channels = read.optional(
            "CHANNEL_CONFIG", lambda path: load_channel_config(path, allow_retained_models=allow_retained)
        )
        redis_url = read.optional("REDIS_URL", _redis_url)
        workers = read.or_default("WORKERS", _int_between(1, 64), 1)
        if workers > 1 and redis_url is None:
            raise ConfigError(
                f"WORKERS: {workers} processes need REDIS_URL to share what they remember; set it or use 1"
            )
        return cls(
            slack_bot_token=read.required("SLACK_BOT_TOKEN", _prefixed("xoxb-")),
            slack_app_token=app_token,
            slack_signing_secret=signing_secret,
            port=read.or_default("PORT", _int_between(1, 65535), 3000),
            slack_api_url=read.or_default("SLACK_API_URL", _http_url, "https://slack.com/api/"),
            anthropic_api_key=(
                read.required("ANTHROPIC_API_KEY", _secret) if backend.kind == "anthropic" else None
            ),
            anthropic_base_url=read.optional("ANTHROPIC_BASE_URL", _http_url),
            claude_model=model,
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
            max_concurrent_answers=read.optional("MAX_CONCURRENT_ANSWERS", _int_between(1, 1000)),
            user_requests_per_minute=read.or_default("USER_REQUESTS_PER_MINUTE", _int_between(1, 1000), 10),
            request_deadline_seconds=read.or_default(
                "REQUEST_DEADLINE_SECONDS", _number_between(1, 3600), 300.0
            ),
            shutdown_grace_seconds=read.or_default("SHUTDOWN_GRACE_SECONDS", _number_between(0, 600), 20.0),
            slack_timeout_seconds=read.or_default("SLACK_TIMEOUT_SECONDS", _number_between(1, 300), 15.0),
            redis_url=redis_url,
            workers=workers,
            answer_lease_seconds=read.or_default("ANSWER_LEASE_SECONDS", _number_between(3, 300), 15.0),
            claude_cache_ttl=read.or_default("CLAUDE_CACHE_TTL", _lower_one_of(("5m", "1h")), "5m"),
            allow_retained_models=allow_retained,
            user_tokens_per_day=read.optional("USER_TOKENS_PER_DAY", _int_between(1, 1_000_000_000)),
            claude_prices=read.optional("CLAUDE_PRICES", parse_prices),
            metrics_port=read.optional("METRICS_PORT", _int_between(1, 65535)),
            channel_config=channels or ChannelConfig(),
            access=_access(read),
            outbound=_outbound(read),
            backend=backend,
            web_search=_web_search(read, backend.kind),
        )


def _access(read: _Reader) -> AccessSettings:
    return AccessSettings(
        allowed_workspaces=read.optional("ALLOWED_WORKSPACES", _ids("TE")),
        denied_workspaces=read.or_default("DENIED_WORKSPACES", _ids("TE"), frozenset()),
        allowed_channels=read.optional("ALLOWED_CHANNELS", _ids("CG")),
        denied_channels=read.or_default("DENIED_CHANNELS", _ids("CG"), frozenset()),
        allowed_users=read.optional("ALLOWED_USERS", _ids("UW")),
        denied_users=read.or_default("DENIED_USERS", _ids("UW"), frozenset()),
        direct_messages=read.or_default("DIRECT_MESSAGES", _switch, True),
        external_users=read.or_default("ALLOW_EXTERNAL_USERS", _switch, False),
        guests=read.or_default("ALLOW_GUESTS", _switch, False),
    )


def _outbound(read: _Reader) -> OutboundSettings:
    if read.optional("SEND_FILES", str) == "files_api":
        raise ConfigError(
            "SEND_FILES: files_api would upload files to Anthropic's Files API, which zero data retention "
            "does not cover; use on (files are sent inside the request) or off"
        )
    return OutboundSettings(
        redact_secrets=read.or_default("REDACT_SECRETS", _switch, True),
        redact_personal=read.or_default("REDACT_PERSONAL_DATA", _personal_data, frozenset()),
        send_files=read.or_default("SEND_FILES", _switch, False),
        max_file_bytes=read.or_default("MAX_FILE_BYTES", _int_between(1, 30_000_000), 5_000_000),
        max_files=read.or_default("MAX_FILES", _int_between(1, 20), 5),
    )


def _web_search(read: _Reader, kind: str) -> WebSearchSettings:
    if not read.or_default("WEB_SEARCH", _switch, False):
        return WebSearchSettings()
    if kind == "bedrock":
        raise ConfigError(
            "WEB_SEARCH: Claude on Bedrock has no web search tool; set WEB_SEARCH=off or use another backend"
        )
    allowed = read.optional("WEB_SEARCH_ALLOWED_DOMAINS", _domains) or ()
    blocked = read.optional("WEB_SEARCH_BLOCKED_DOMAINS", _domains) or ()
    if allowed and blocked:
        raise ConfigError(
            "WEB_SEARCH_ALLOWED_DOMAINS: cannot be used with WEB_SEARCH_BLOCKED_DOMAINS; set one of them"
        )
    return WebSearchSettings(
        enabled=True,
        max_uses=read.or_default("WEB_SEARCH_MAX_USES", _int_between(1, 20), 3),
        allowed_domains=allowed,
        blocked_domains=blocked,
    )


def _domains(raw: str) -> tuple[str, ...]:
    """Comma-separated domains such as example.com or docs.example.com/api (no scheme)."""
    domains = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    odd = [
        d for d in domains if "://" in d or not re.fullmatch(r"[a-z0-9*][a-z0-9.*-]*\.[a-z0-9-]+(/\S*)?", d)
    ]
    if odd:
        raise ValueError(f"expected domains separated by commas, such as example.com, got {', '.join(odd)}")
    return domains


def _backend(read: _Reader) -> BackendSettings:
    kind = read.or_default("CLAUDE_BACKEND", _lower_one_of(BACKENDS), "anthropic")
    geo = read.optional("CLAUDE_INFERENCE_GEO", _inference_geo)
    if geo is not None and kind != "anthropic":
        raise ConfigError(
            f"CLAUDE_INFERENCE_GEO: applies to the Anthropic API only; on {kind} choose the region instead"
        )
    if kind == "bedrock":
        region = read.optional("AWS_REGION", str) or read.optional("AWS_DEFAULT_REGION", str)
        if region is None:
            raise ConfigError("AWS_REGION: required with CLAUDE_BACKEND=bedrock but not set")
        return BackendSettings(
            kind=kind,
            aws_region=region,
            bedrock_base_url=read.optional("ANTHROPIC_BEDROCK_BASE_URL", _http_url),
        )
    if kind == "vertex":
        return BackendSettings(
            kind=kind,
            vertex_region=read.required("CLOUD_ML_REGION", str),
            vertex_project_id=read.required("ANTHROPIC_VERTEX_PROJECT_ID", str),
            vertex_base_url=read.optional("ANTHROPIC_VERTEX_BASE_URL", _http_url),
        )
    return BackendSettings(kind=kind, inference_geo=geo)


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
        return _secret(raw)

    return parse


def _secret(raw: str) -> str:
    """A token or key: sent in a header (or signed with) on every call, where a space, a pasted newline
    or a look-alike letter would fail each one later, not at start."""
    if not (raw.isascii() and raw.isprintable()) or any(char.isspace() for char in raw):
        raise ValueError("holds a space, a line break or a character outside ASCII; paste it again")
    return raw


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


def _redis_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.netloc or parsed.path):
        raise ValueError("must be a redis://, rediss:// or unix:// URL such as redis://localhost:6379/0")
    try:
        _ = parsed.port  # redis-py reads it only at start, where its ValueError would be an uncaught crash
    except ValueError:
        raise ValueError(
            "its port must be a number from 0 to 65535, as in redis://localhost:6379/0"
        ) from None
    return raw


def _http_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL such as https://slack.com/api/")
    return raw


def _slash_command(raw: str) -> str:
    if not raw.startswith("/") or len(raw) > 32 or " " in raw:
        raise ValueError(f"must look like /claude (a slash, no spaces, at most 32 characters), got {raw!r}")
    return raw


def _ids(prefixes: str) -> Callable[[str], frozenset[str]]:
    """A comma-separated list of Slack ids, each starting with one of `prefixes`."""

    def parse(raw: str) -> frozenset[str]:
        ids = frozenset(part.strip() for part in raw.split(",") if part.strip())
        odd = sorted(i for i in ids if not re.fullmatch(f"[{prefixes}][A-Z0-9]{{2,}}", i))
        if odd:
            kinds = " or ".join(f"{p}…" for p in prefixes)
            raise ValueError(f"expected Slack ids separated by commas ({kinds}), got {', '.join(odd)}")
        return ids

    return parse


def _switch(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be on or off (true/false), got {raw!r}")


def _personal_data(raw: str) -> frozenset[str]:
    kinds = frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
    if kinds in ({"all"}, {"on"}):
        return frozenset(PERSONAL_DATA)
    if kinds in ({"none"}, {"off"}):
        return frozenset()
    unknown = sorted(kinds - set(PERSONAL_DATA))
    if unknown:
        raise ValueError(
            f"expected all, none or some of {', '.join(PERSONAL_DATA)}; got {', '.join(unknown)}"
        )
    return kinds


def _inference_geo(raw: str) -> str:
    if not re.fullmatch("[a-z][a-z0-9_-]{1,31}", raw):
        raise ValueError(f"must be a geography such as us or global, got {raw!r}")
    return raw


def _lower_one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw.lower()

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.upper() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw.upper()

    return parse
