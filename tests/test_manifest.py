"""The manifest is one Slack accepts, asks for exactly what the bot uses, and subscribes to no channel-wide
message events.

"Create New App → From a manifest" refuses a manifest that breaks Slack's published schema
(slackapi/manifest-schema, `schemas/manifest.schema.2.0.0.json`); a copy lives in `tests/schemas/` so that
the test needs nothing outside the repository. Every field we use is held to it: its type, Slack's length
limits (a shortcut's name at most 24 characters, its description 150, ...) and no field Slack does not know.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifest.yml"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "slack-manifest.schema.2.0.0.json"


def load_manifest() -> dict[str, Any]:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(manifest, dict)
    return manifest


def _regex(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """Slack's schema spells one pattern (the background colour's) `regex`, which JSON Schema ignores."""
    del validator, schema
    if isinstance(instance, str) and not re.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


SlackManifestValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"regex": _regex})


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Every way `manifest` breaks Slack's schema, one line each with where it is."""
    schema = json.loads(SCHEMA.read_text())
    validator = SlackManifestValidator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(manifest), key=lambda error: list(map(str, error.absolute_path)))
    return [f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}" for error in errors]


def test_the_schema_copy_is_slacks_draft_07_schema_and_the_validator_enforces_its_limits():
    schema = json.loads(SCHEMA.read_text())
    SlackManifestValidator.check_schema(schema)
    too_long = load_manifest()
    too_long["features"]["shortcuts"][0]["name"] = "x" * 25
    too_long["display_information"]["background_color"] = "orange"
    assert schema_errors(too_long) == [
        "display_information.background_color: 'orange' does not match '^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$'",
        "features.shortcuts.0.name: 'xxxxxxxxxxxxxxxxxxxxxxxxx' is too long",
    ]


def test_manifest_validates_against_slacks_published_schema():
    assert schema_errors(load_manifest()) == []


def test_the_http_mode_manifest_the_readme_describes_validates_too():
    manifest = load_manifest()
    settings = manifest["settings"]
    settings["socket_mode_enabled"] = False
    settings["event_subscriptions"]["request_url"] = "https://YOUR-HOST/slack/events"
    settings["interactivity"]["request_url"] = "https://YOUR-HOST/slack/events"
    manifest["features"]["slash_commands"][0]["url"] = "https://YOUR-HOST/slack/events"
    assert schema_errors(manifest) == []


def test_the_legacy_assistant_view_manifest_the_readme_describes_validates_too():
    manifest = load_manifest()
    manifest["settings"]["event_subscriptions"]["bot_events"] += [
        "assistant_thread_started",
        "assistant_thread_context_changed",
    ]
    del manifest["features"]["agent_view"]
    manifest["features"]["assistant_view"] = {"assistant_description": "Ask Claude anything."}
    assert schema_errors(manifest) == []


def test_events_are_invocations_only_and_no_channel_wide_message_events():
    assert set(load_manifest()["settings"]["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "message.im",
        "app_home_opened",
        "agent_session_stopped",
    }


def test_scopes_are_exactly_the_ones_used():
    assert set(load_manifest()["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read",
        "channels:history",
        "groups:history",
        "mpim:history",
        "im:history",
        "channels:read",
        "groups:read",
        "mpim:read",
        "chat:write",
        "assistant:write",
        "reactions:write",
        "commands",
        "users:read",
        "files:read",
    }


def test_socket_mode_is_on_and_the_command_is_the_default():
    manifest = load_manifest()
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert [command["command"] for command in manifest["features"]["slash_commands"]] == ["/claude"]
    assert [shortcut["callback_id"] for shortcut in manifest["features"]["shortcuts"]] == [
        "ask_about_thread",
        "summarize_thread",
    ]
    assert "agent_view" in manifest["features"]
