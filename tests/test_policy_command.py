"""`/claude policy`: any user can see what the bot sends, keeps and to whom, without anything being read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.channel_config import ChannelConfig, ChannelInstructions
from bot.config import Settings
from bot.policy import REDIS_KEYS, policy_summary

BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "ANTHROPIC_API_KEY": "k"}


@pytest.mark.parametrize("word", ["policy", " Policy ", "privacy"])
async def test_policy_is_shown_privately_in_the_ack_and_nothing_is_read(bot, word):
    ack = await bot.send_command(word)

    text = ack["payload"]["text"]
    assert text == policy_summary(bot.settings)
    assert "keeps:* nothing" in text
    assert not bot.claude.requests
    assert not bot.slack.calls_to("users.info") and not bot.slack.calls_to("response_url")


async def test_usage_mentions_the_policy_command(bot):
    ack = await bot.send_command("help")
    assert "/claude policy" in ack["payload"]["text"]


def test_the_default_policy_says_what_is_sent_removed_kept_and_who_may_ask():
    text = policy_summary(Settings.from_env(BASE))
    assert "the thread you mention me in" in text
    assert "secrets (API keys and tokens, private keys, passwords in links)" in text
    assert "email addresses" not in text
    assert "*Files and images:* not sent." in text
    assert "the Anthropic API" in text and "zero data retention" in text
    assert "guests not allowed" in text and "other organizations in shared channels not allowed" in text


def test_the_policy_follows_the_configuration():
    text = policy_summary(
        Settings.from_env(
            {
                **BASE,
                "REDACT_PERSONAL_DATA": "email,card",
                "SEND_FILES": "on",
                "MAX_FILES": "3",
                "MAX_FILE_BYTES": "2000000",
                "CLAUDE_INFERENCE_GEO": "us",
                "DIRECT_MESSAGES": "off",
                "ALLOWED_CHANNELS": "C0ONE",
                "ALLOW_GUESTS": "on",
            }
        )
    )
    assert "card numbers; email addresses" in text
    assert "up to 3 per question, 2 MB each" in text
    assert "with inference in the us geography" in text
    assert "in chosen channels; direct messages off; guests allowed" in text


def test_a_cloud_backend_says_whose_terms_apply():
    env = {k: v for k, v in BASE.items() if k != "ANTHROPIC_API_KEY"}
    bedrock = policy_summary(
        Settings.from_env({**env, "CLAUDE_BACKEND": "bedrock", "AWS_REGION": "eu-central-1"})
    )
    assert "Amazon Bedrock in the AWS region eu-central-1" in bedrock and "Bedrock terms" in bedrock
    vertex = policy_summary(
        Settings.from_env(
            {
                **env,
                "CLAUDE_BACKEND": "vertex",
                "CLOUD_ML_REGION": "europe-west4",
                "ANTHROPIC_VERTEX_PROJECT_ID": "p",
            }
        )
    )
    assert "Vertex AI in europe-west4" in vertex and "Google Cloud's terms" in vertex


def test_the_policy_says_the_viewed_channel_is_checked_and_what_is_kept_between_requests():
    """The viewed channel is read only if you may read it; deactivated accounts are refused; what is
    kept between requests is ids and flags with their time limits."""
    text = policy_summary(Settings.from_env(BASE))
    assert "only if you ask about it and may read it yourself" in text
    assert "deactivated accounts never" in text
    assert "ids, flags and counts with time limits" in text


def test_with_redis_the_policy_names_every_key_kept_there_and_for_how_long():
    text = policy_summary(
        Settings.from_env(
            {
                **BASE,
                "REDIS_URL": "redis://redis:6379/0",
                "ANSWER_LEASE_SECONDS": "30",
                "REQUEST_DEADLINE_SECONDS": "120",
            }
        )
    )
    assert "ids, flags and counts with time limits, in Redis" in text
    assert "this process's memory" not in text
    for key in REDIS_KEYS:
        assert f"`{key.prefix}<hash>` {key.holds}, " in text
    assert "`dedupe:event:<hash>` events answered, 1 h" in text
    assert "`person:<hash>` a person's workspace and org ids, guest and deactivated flags, 5 min" in text
    assert "at most 2 min 30 s" in text  # an answer's claim: the deadline plus one lease
    assert "`lease:<hash>` which process writes it, 30 s, renewed" in text
    assert "only as keyed hashes" in text and "never a person's id or any text" in text
    assert "none needs saving to disk" in text
    assert "redis://" not in text  # where Redis is, is not the asker's business
    assert len(text) < 2_500  # it is read in Slack


def test_without_redis_the_policy_says_it_is_kept_in_this_process():
    text = policy_summary(Settings.from_env(BASE))
    assert "ids, flags and counts with time limits, in this process's memory: recent event ids" in text
    assert "Redis" not in text and "<hash>" not in text
    # Each kind of key, kept here as Redis would keep it.
    for kept in ("commands and shortcuts answered over HTTP (15 minutes)", "a Stop pressed (a minute)"):
        assert kept in text


def test_the_policy_says_a_linked_thread_of_another_conversation_is_answered_privately():
    text = policy_summary(Settings.from_env(BASE))
    assert "only if you may read it; answered to you alone if from another conversation" in text


def test_a_retained_model_is_said_plainly_kept_by_anthropic_for_30_days():
    """Only with ALLOW_RETAINED_MODELS=on does such a model run; then the policy must not read as zero
    retention."""
    text = policy_summary(
        Settings.from_env({**BASE, "CLAUDE_MODEL": "claude-fable-5-1", "ALLOW_RETAINED_MODELS": "on"})
    )
    assert (
        "• *Kept by Anthropic:* Claude Fable 5.1 (`claude-fable-5-1`): Anthropic keeps this model's inputs "
        "and outputs (what is sent to Claude and its answers) for 30 days, so zero data retention does not "
        "hold for it." in text
    )
    assert "keeps:* nothing of what you write" in text  # the app itself still keeps nothing
    assert "Kept by Anthropic" not in policy_summary(Settings.from_env(BASE))
    allowed = policy_summary(Settings.from_env({**BASE, "ALLOW_RETAINED_MODELS": "on"}))
    assert "Kept by Anthropic" not in allowed  # allowing them says nothing while the model is not one


@pytest.mark.parametrize(
    "bot_overrides", [{"CLAUDE_MODEL": "claude-mythos-5", "ALLOW_RETAINED_MODELS": "on"}], indirect=True
)
async def test_the_policy_command_says_so_for_a_retained_model(bot):
    ack = await bot.send_command("policy")

    text = ack["payload"]["text"]
    assert "Anthropic keeps this model's inputs and outputs" in text and "for 30 days" in text
    assert "zero data retention does not hold for it" in text
    assert not bot.claude.requests


def test_a_retained_model_chosen_for_some_channels_is_said_too():
    channels = ChannelConfig(
        default=ChannelInstructions("brief", "Answer briefly."),
        channels={"C0SUPPORT": ChannelInstructions("support", "Help the support team.", "claude-fable-5-2")},
    )
    settings = replace(Settings.from_env({**BASE, "ALLOW_RETAINED_MODELS": "on"}), channel_config=channels)
    text = policy_summary(settings)
    assert (
        "• *Kept by Anthropic, with the support instructions:* Claude Fable 5.2 (`claude-fable-5-2`): "
        "Anthropic keeps this model's inputs and outputs" in text
    )
    assert text.count("Kept by Anthropic") == 1
