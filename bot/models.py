"""Which Claude models keep the promise: the one list of models Anthropic retains inputs and outputs for.

Some models require Anthropic to retain inputs and outputs for 30 days (misuse detection) and are refused
to zero data retention organizations with a 400 (platform.claude.com model pages, "Model-specific data
retention requirements"). Whole families are treated as retained (fail closed), so that a new model of
theirs is refused too until this list says otherwise. Config refuses such a CLAUDE_MODEL (and per-channel
model) unless ALLOW_RETAINED_MODELS=on; then /claude policy says so.

To update: add a model Anthropic names as retained to RETAINED_MODELS; add a family to RETAINED_FAMILIES;
and only when Anthropic states that a member of a retained family is NOT retained, add its first-party
id to NOT_RETAINED with the source. Ids are matched in every backend's form (Bedrock, Vertex AI).
"""

from __future__ import annotations

import re

RETENTION_DAYS = 30

# Models Anthropic says retain inputs and outputs, by first-party id, with the name people know.
# Fable 5 and 5.1, Mythos 5 and 5.1: the model pages; Fable 5.2 (2026-11-09): third-party reports;
# Mythos 5.2 and the preview: in the SDK's model list, and in the same family.
RETAINED_MODELS: dict[str, str] = {
    "claude-fable-5": "Claude Fable 5",
    "claude-fable-5-1": "Claude Fable 5.1",
    "claude-fable-5-2": "Claude Fable 5.2",
    "claude-mythos-5": "Claude Mythos 5",
    "claude-mythos-5-1": "Claude Mythos 5.1",
    "claude-mythos-5-2": "Claude Mythos 5.2",
    "claude-mythos-preview": "Claude Mythos Preview",
}

# Any model whose id contains one of these words is retained, known or not (fail closed).
RETAINED_FAMILIES: dict[str, str] = {"fable": "Claude Fable", "mythos": "Claude Mythos"}

# Exceptions: members of a retained family that Anthropic states are NOT retained, by first-party id
# (as in RETAINED_MODELS), each with a comment naming where Anthropic says so. Empty: none is known.
NOT_RETAINED: frozenset[str] = frozenset()

# What surrounds the first-party id in the cloud platforms' forms, for example
#   arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-fable-5-1-v1:0
#   global.anthropic.claude-mythos-5   anthropic.claude-fable-5-20260101-v1:0
#   projects/p/locations/global/publishers/anthropic/models/claude-fable-5@20260101
_PLATFORM_PREFIX = re.compile(r"^(?:[a-z0-9-]+\.)?anthropic\.")
_PLATFORM_SUFFIX = re.compile(r"(?:@.*|-v\d+(?::\d+)?|:\d+)$")
_DATE_SUFFIX = re.compile(r"-(?:\d{8}|latest)$")


def first_party_id(model: str) -> str:
    """The first-party id (`claude-fable-5-1`) inside any backend's form of it, lower-cased."""
    name = model.strip().lower().rsplit("/", 1)[-1]  # an ARN's or a Vertex resource path's last part
    name = _PLATFORM_PREFIX.sub("", name)
    name = _PLATFORM_SUFFIX.sub("", name)
    return _DATE_SUFFIX.sub("", name)


def retained(model: str, *, exceptions: frozenset[str] = NOT_RETAINED) -> bool:
    """Whether Anthropic retains this model's inputs and outputs (CLAUDE_MODEL, or a cloud platform's id)."""
    base = first_party_id(model)
    if base in RETAINED_MODELS:
        return True
    if base in exceptions:
        return False
    whole = model.lower()
    return any(family in whole for family in RETAINED_FAMILIES)


def retained_name(model: str) -> str:
    """How people know a retained model: "Claude Fable 5.1", or "a Claude Mythos model" when not listed."""
    known = RETAINED_MODELS.get(first_party_id(model))
    if known is not None:
        return known
    whole = model.lower()
    family = next((name for word, name in RETAINED_FAMILIES.items() if word in whole), None)
    return f"a {family} model" if family else "a retained model"


def refusal(model: str) -> str:
    """Why a retained model is refused at start, for Config's one line (after the variable's name)."""
    return (
        f"{model.strip()} is {retained_name(model)}, whose inputs and outputs Anthropic retains for "
        f"{RETENTION_DAYS} days, which breaks zero retention; choose another model or set "
        "ALLOW_RETAINED_MODELS=on"
    )


def retention_notice(model: str) -> str | None:
    """For /claude policy: None, or the plain sentence that Anthropic keeps this model's conversations."""
    if not retained(model):
        return None
    name = retained_name(model)
    if name.startswith("a "):  # a family member not listed yet: retained like the rest of its family
        name = f"A{name[1:]} (`{model.strip()}`), treated as retained like its family"
    else:
        name = f"{name} (`{model.strip()}`)"
    return (
        f"{name}: Anthropic keeps this model's inputs and outputs (what is sent to Claude and its answers) "
        f"for {RETENTION_DAYS} days, so zero data retention does not hold for it."
    )
