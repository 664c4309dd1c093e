"""Per-channel instructions (CHANNEL_CONFIG): extra system instructions and optionally a model per channel.

Read once at start from a TOML file and validated whole, so a mistake stops the bot with one line rather
than surfacing in some channel later:

    [default]                      # optional: for every conversation without its own entry
    instructions = "Answer briefly."
    [channels.C0123456789]         # a channel's own entry replaces `default` there
    name = "support"               # how logs and /claude policy refer to these instructions
    instructions = "You help the support team."
    model = "claude-haiku-5-5"     # optional; checked against bot.models

The instructions are configuration, not conversation, but they are still the operator's words: errors
and logs name them (`name`, the key), never quote them.
"""

from __future__ import annotations

import datetime
import re
import tomllib
from dataclasses import dataclass, field

from bot.models import retained

MAX_FILE_BYTES = 1_000_000
MAX_INSTRUCTIONS_CHARS = 4_000
MAX_NAME_CHARS = 40
DEFAULT_NAME = "default"

# One token in a log line, and plain text in /claude policy: no spaces, no markup but `.`, `_`, `-`.
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")
# Conversations with a channel of their own: public (C…) and private (G…) channels; a DM (D…) or a
# group DM has no channel entry and gets `default`.
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{8,20}")
_DM_ID = re.compile(r"D[A-Z0-9]{8,20}")
# Anthropic ids, Bedrock ids and ARNs (`:`, `/`), Vertex ids (`@`).
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline are fine in instructions
_TOML_WHERE = re.compile(r"^(?P<problem>.*) \(at (?P<where>line \d+, column \d+|end of document)\)$")

TOP_LEVEL = ("default", "channels")
ENTRY_KEYS = ("name", "instructions", "model")


@dataclass(frozen=True, slots=True)
class ChannelInstructions:
    name: str
    instructions: str = field(repr=False)  # never in a repr that might reach a log
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    default: ChannelInstructions | None = None
    channels: dict[str, ChannelInstructions] = field(default_factory=dict)

    def models(self) -> set[str]:
        """The models the entries name."""
        return {e.model for e in [self.default, *self.channels.values()] if e is not None and e.model}

    def for_channel(self, channel_id: str | None) -> ChannelInstructions | None:
        """A channel's own entry replaces `default` for that channel."""
        if channel_id is not None and channel_id in self.channels:
            return self.channels[channel_id]
        return self.default


def load_channel_config(path: str, *, allow_retained_models: bool) -> ChannelConfig:
    """Read and validate the TOML file; a ValueError says "<file>: <key or line>: <problem>" (Settings
    prefixes CHANNEL_CONFIG)."""
    try:
        return _validate(_read_toml(path), allow_retained_models)
    except _Invalid as exc:
        where, problem = exc.args
        raise ValueError(_one_line(f"{path}: {where}: {problem}")) from None


class _Invalid(Exception):
    """(where, problem): load_channel_config puts the file in front."""


def _validate(data: dict[str, object], allow_retained_models: bool) -> ChannelConfig:
    for key in data:
        if key not in TOP_LEVEL:
            raise _Invalid(_key(key), "unknown table; expected [default] or [channels.<channel id>]")
    default = None
    if "default" in data:
        default = _entry(data["default"], "default", allow_retained_models, name_required=False)
    channels: dict[str, ChannelInstructions] = {}
    raw_channels = data.get("channels", {})
    if not isinstance(raw_channels, dict):
        raise _Invalid("channels", f"must be tables like [channels.C0123456789], got {_kind(raw_channels)}")
    for channel_id, raw in raw_channels.items():
        where = f"channels.{_key(channel_id)}"
        if _DM_ID.fullmatch(channel_id):
            raise _Invalid(
                where, "is a direct message's id; entries are for channels (C… or G…), DMs get [default]"
            )
        if not _CHANNEL_ID.fullmatch(channel_id):
            raise _Invalid(where, "not a Slack channel id (C… or G… then capital letters and digits)")
        channels[channel_id] = _entry(raw, where, allow_retained_models, name_required=True)
    if default is None and not channels:
        raise _Invalid("file", "no [default] and no [channels.<channel id>] entry; nothing to apply")
    return ChannelConfig(default=default, channels=channels)


def _read_toml(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _Invalid("file", f"cannot read it: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _Invalid("file", f"larger than {MAX_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _Invalid(f"line {line}", "not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages end with "(at line N, column M)"; that is the "where" of our line.
        message = str(exc)
        match = _TOML_WHERE.match(message)
        where, problem = (match["where"], match["problem"]) if match else ("file", message)
        raise _Invalid(where, f"not valid TOML: {problem}") from None


def _entry(
    raw: object, where: str, allow_retained_models: bool, *, name_required: bool
) -> ChannelInstructions:
    if not isinstance(raw, dict):
        raise _Invalid(where, f"must be a table (a [{where}] section), got {_kind(raw)}")
    for key in raw:
        if key not in ENTRY_KEYS:
            raise _Invalid(f"{where}.{_key(key)}", "unknown key; expected name, instructions or model")

    name = raw.get("name")
    if name is None:
        if name_required:
            raise _Invalid(
                f"{where}.name", 'required: a short label for logs and /claude policy, like "support"'
            )
        name = DEFAULT_NAME
    elif not isinstance(name, str):
        raise _Invalid(f"{where}.name", f"must be a string, got {_kind(name)}")
    elif not _NAME.fullmatch(name):
        raise _Invalid(
            f"{where}.name",
            f"must be a label of at most {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it appears in logs and /claude policy)",
        )

    instructions = raw.get("instructions")
    if instructions is None:
        raise _Invalid(f"{where}.instructions", "required: the extra system instructions for Claude")
    if not isinstance(instructions, str):
        raise _Invalid(f"{where}.instructions", f"must be a string, got {_kind(instructions)}")
    instructions = instructions.strip()
    # Never quote the text: say what is wrong and how big it is.
    if not instructions:
        raise _Invalid(f"{where}.instructions", "is empty")
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise _Invalid(
            f"{where}.instructions",
            f"{len(instructions):,} characters, more than the {MAX_INSTRUCTIONS_CHARS:,} allowed",
        )
    if _CONTROL.search(instructions):
        raise _Invalid(
            f"{where}.instructions", "contains a control character (only tabs and newlines are allowed)"
        )

    model = raw.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise _Invalid(f"{where}.model", f"must be a string, got {_kind(model)}")
        if not _MODEL.fullmatch(model):
            raise _Invalid(f"{where}.model", "not a model id (letters, digits and . _ : @ / -)")
        if retained(model) and not allow_retained_models:
            raise _Invalid(
                f"{where}.model",
                f"{model} requires Anthropic to retain inputs and outputs for 30 days, which breaks zero "
                "retention; choose another model or set ALLOW_RETAINED_MODELS=on",
            )
    return ChannelInstructions(name=name, instructions=instructions, model=model)


def _key(key: str) -> str:
    """A key as the file spells it, cut short: it names where, and a quoted key could be anything."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", key):
        return key
    shown = key if len(key) <= 40 else key[:40] + "…"
    return '"' + shown.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.date | datetime.time):
        return "a date or time"
    return type(value).__name__


def _one_line(message: str) -> str:
    return " ".join(message.splitlines())
