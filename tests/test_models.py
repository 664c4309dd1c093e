"""bot.models: the one list of models Anthropic retains inputs and outputs for, in every backend's id form,
whole families failing closed."""

from __future__ import annotations

import pytest

from bot.backends import claude_model_id
from bot.models import (
    NOT_RETAINED,
    RETAINED_MODELS,
    first_party_id,
    refusal,
    retained,
    retained_name,
    retention_notice,
)

KNOWN = [
    "claude-fable-5",
    "claude-fable-5-1",
    "claude-fable-5-2",
    "claude-mythos-5",
    "claude-mythos-5-1",
    "claude-mythos-5-2",
    "claude-mythos-preview",
]
NOT_RETAINED_MODELS = [
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-haiku-5-5",
    "claude-sonnet-4-5-20250929",
    "anthropic.claude-sonnet-5-5-v1:0",
    "us.anthropic.claude-opus-5-5",
    "claude-sonnet-4-5@20250929",
]


@pytest.mark.parametrize("model", KNOWN)
def test_the_models_anthropic_names_are_retained(model):
    assert model in RETAINED_MODELS
    assert retained(model)


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("CLAUDE-FABLE-5-2", "claude-fable-5-2"),
        ("  claude-mythos-5  ", "claude-mythos-5"),
        ("claude-fable-5-1-20260101", "claude-fable-5-1"),
        ("claude-fable-5-latest", "claude-fable-5"),
        # Bedrock: model ids, cross-region and global inference profiles, ARNs
        ("anthropic.claude-fable-5-v1:0", "claude-fable-5"),
        ("anthropic.claude-fable-5-1-20260101-v1:0", "claude-fable-5-1"),
        ("us.anthropic.claude-mythos-5-1-v1:0", "claude-mythos-5-1"),
        ("global.anthropic.claude-mythos-5-2", "claude-mythos-5-2"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-fable-5-2",
            "claude-fable-5-2",
        ),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-mythos-preview-v1:0",
            "claude-mythos-preview",
        ),
        # Vertex AI: a version after "@", or the whole resource path
        ("claude-fable-5@20261109", "claude-fable-5"),
        (
            "projects/p/locations/global/publishers/anthropic/models/claude-mythos-5@20260101",
            "claude-mythos-5",
        ),
    ],
)
def test_every_backends_form_of_a_known_model_is_retained(model, base):
    assert first_party_id(model) == base
    assert retained(model)
    assert retained_name(model) == RETAINED_MODELS[base]


@pytest.mark.parametrize("model", KNOWN)
@pytest.mark.parametrize("kind", ["bedrock", "vertex"])
def test_the_ids_the_bot_sends_to_a_cloud_platform_are_retained_too(kind, model):
    assert retained(claude_model_id(kind, model))
    assert retained(claude_model_id(kind, f"{model}-20260101"))


@pytest.mark.parametrize(
    "model",
    [
        "claude-fable-6",
        "claude-fable-5-3-20270101",
        "claude-mythos-6-preview",
        "Claude-Mythos-Next",
        "us.anthropic.claude-fable-7-v1:0",
        "claude-fable-9@20270101",
        "claude_fable_6",
        "fable-6",
    ],
)
def test_any_other_member_of_the_families_fails_closed(model):
    assert retained(model)
    assert retained_name(model) in ("a Claude Fable model", "a Claude Mythos model")


@pytest.mark.parametrize("model", NOT_RETAINED_MODELS)
def test_other_models_are_not_retained(model):
    assert not retained(model)
    assert retention_notice(model) is None


def test_an_exception_frees_only_the_member_it_names_and_never_a_listed_model():
    """NOT_RETAINED is empty today; an exception Anthropic states is listed there, by first-party id."""
    assert NOT_RETAINED == frozenset()
    exceptions = frozenset({"claude-fable-6", "claude-fable-5"})
    assert not retained("claude-fable-6", exceptions=exceptions)
    assert not retained("us.anthropic.claude-fable-6-v1:0", exceptions=exceptions)
    assert not retained("claude-fable-6@20270101", exceptions=exceptions)
    assert retained("claude-fable-7", exceptions=exceptions)  # the rest of the family still fails closed
    assert retained("claude-fable-5", exceptions=exceptions)  # a model Anthropic names stays retained


def test_the_refusal_and_the_notice_name_the_model_and_the_30_days():
    line = refusal("us.anthropic.claude-fable-5-1-v1:0")
    assert line.startswith("us.anthropic.claude-fable-5-1-v1:0 is Claude Fable 5.1, ")
    assert "30 days" in line and "ALLOW_RETAINED_MODELS=on" in line and "\n" not in line

    notice = retention_notice("claude-mythos-5")
    assert notice is not None
    assert notice.startswith(
        "Claude Mythos 5 (`claude-mythos-5`): Anthropic keeps this model's inputs and outputs"
    )
    assert "for 30 days" in notice and "zero data retention does not hold" in notice

    unlisted = retention_notice("claude-fable-8")
    assert unlisted is not None
    assert unlisted.startswith(
        "A Claude Fable model (`claude-fable-8`), treated as retained like its family: "
    )
