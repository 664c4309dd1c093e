"""The Claude backend is chosen by configuration: the Anthropic API, Amazon Bedrock or Google Vertex AI,
each reached through the SDK's own client (AsyncAnthropicBedrock, AsyncAnthropicVertex) at fake Claude."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bot.backends import build_claude_client, claude_model_id, describe_backend, where
from bot.config import Settings
from bot.pipeline.claude import ClaudeBusy, ClaudeMisconfigured, ClaudeUnavailable
from tests.conftest import CHANNEL, mention

AWS_KEY = "AKIAFAKEFAKEFAKEFAKE"
BEDROCK = {"CLAUDE_BACKEND": "bedrock", "AWS_REGION": "eu-west-1"}
VERTEX = {
    "CLAUDE_BACKEND": "vertex",
    "CLOUD_ML_REGION": "europe-west1",
    "ANTHROPIC_VERTEX_PROJECT_ID": "p-123",
}
PROFILE_ARN = "arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/a1"
VERTEX_PATH = "/v1/projects/p-123/locations/europe-west1/publishers/anthropic/models/"


def backend(overrides: dict[str, str], retries: int = 0):
    return pytest.mark.parametrize(
        "bot_overrides", [{**overrides, "CLAUDE_MAX_RETRIES": str(retries)}], indirect=True
    )


@pytest.fixture(autouse=True)
def cloud_credentials(monkeypatch, tmp_path, claude):
    """What the platforms' own credential chains find: static AWS keys, and a service account key file
    whose access tokens come from fake Claude's OAuth endpoint. Nothing of the developer's is read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(claude.google_credentials("p-123")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("NO_GCE_CHECK", "true")


async def ask_and_get_reply(bot, ts: str) -> str:
    await bot.send_event(mention("<@U0BOT> hello", ts=ts))
    await bot.finished(count=len(bot.slack.calls_to("reactions.remove")) + 1)
    return "\n".join(bot.replies(CHANNEL, ts))


# --- each backend's request shape, end to end ---


@backend(BEDROCK)
async def test_bedrock_answers_a_mention_over_aws_event_stream(bot):
    bot.claude.chunk_chars = 4  # several event-stream frames
    bot.claude.reply("Hello from Bedrock.", stop_reason="max_tokens")

    text = await ask_and_get_reply(bot, "10.000001")

    assert text == "Hello from Bedrock.\n\n_(The answer was cut off at its length limit.)_"
    (request,) = bot.claude.requests
    assert request.path == "/model/anthropic.claude-sonnet-5-5/invoke-with-response-stream"
    assert request.body["anthropic_version"] == "bedrock-2023-05-31"
    assert not {"model", "stream", "inference_geo"} & request.body.keys()
    assert len(request.body["metadata"]["user_id"]) >= 32
    assert request.body["messages"][-1]["role"] == "user"
    assert request.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={AWS_KEY}/"
    ) and request.headers["authorization"].split(",")[0].endswith("/eu-west-1/bedrock/aws4_request")
    assert "x-amz-date" in request.headers


@backend({**BEDROCK, "CLAUDE_MODEL": "claude-sonnet-4-5-20250929"})
async def test_bedrock_gets_a_dated_model_in_its_own_form(bot):
    assert await ask_and_get_reply(bot, "11.000001") == "Hello from fake Claude."
    (request,) = bot.claude.requests
    assert request.path == "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream"


@backend({**BEDROCK, "CLAUDE_MODEL": PROFILE_ARN})
async def test_bedrock_inference_profile_arn_passes_unchanged(bot):
    assert await ask_and_get_reply(bot, "12.000001") == "Hello from fake Claude."
    (request,) = bot.claude.requests
    assert request.path == f"/model/{PROFILE_ARN}/invoke-with-response-stream"


async def test_bedrock_api_key_is_sent_as_a_bearer_token(monkeypatch, claude):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")  # the SDK reads it for the client
    client = build_claude_client(settings_for(**BEDROCK, ANTHROPIC_BEDROCK_BASE_URL=claude.base_url))
    try:
        await client.messages.create(
            model="anthropic.claude-sonnet-5-5",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"anthropic_version": "bedrock-2023-05-31"},
        )
    finally:
        await client.close()
    (request,) = claude.requests
    assert request.path == "/model/anthropic.claude-sonnet-5-5/invoke"  # the fake's non-streaming route
    assert request.headers["authorization"] == "Bearer bedrock-api-key"


@backend(VERTEX)
async def test_vertex_answers_a_mention_with_a_google_access_token(bot):
    bot.claude.chunk_chars = 4
    bot.claude.reply("Hello from Vertex.")

    assert await ask_and_get_reply(bot, "20.000001") == "Hello from Vertex."
    assert await ask_and_get_reply(bot, "20.000002") == "Hello from fake Claude."

    first, second = bot.claude.requests
    assert first.path == VERTEX_PATH + "claude-sonnet-5-5:streamRawPredict"
    assert first.body["anthropic_version"] == "vertex-2023-10-16"
    assert first.body["stream"] is True
    assert not {"model", "inference_geo"} & first.body.keys()
    assert len(first.body["metadata"]["user_id"]) >= 32
    assert (
        first.headers["authorization"] == second.headers["authorization"] == "Bearer ya29.fake-vertex-token"
    )
    assert bot.claude.tokens_issued == 1  # the token is kept until it expires


@backend({**VERTEX, "CLAUDE_MODEL": "claude-haiku-4-5-20251001"})
async def test_vertex_gets_a_dated_model_in_its_own_form(bot):
    assert await ask_and_get_reply(bot, "21.000001") == "Hello from fake Claude."
    (request,) = bot.claude.requests
    assert request.path == VERTEX_PATH + "claude-haiku-4-5@20251001:streamRawPredict"


@pytest.mark.parametrize("bot_overrides", [{"CLAUDE_INFERENCE_GEO": "eu"}], indirect=True)
async def test_anthropic_api_sends_the_configured_inference_geo(bot):
    assert await ask_and_get_reply(bot, "30.000001") == "Hello from fake Claude."
    (request,) = bot.claude.requests
    assert request.path == "/v1/messages"
    assert request.body["inference_geo"] == "eu"
    assert request.body["model"] == "claude-sonnet-5-5" and request.body["stream"] is True
    assert "anthropic_version" not in request.body  # a header on the Anthropic API
    assert request.headers["authorization"] == "Bearer test-key"


async def test_anthropic_api_sends_no_inference_geo_unless_configured(bot):
    assert await ask_and_get_reply(bot, "31.000001") == "Hello from fake Claude."
    (request,) = bot.claude.requests
    assert "inference_geo" not in request.body


# --- failures read as on the Anthropic API ---


@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        (lambda c: c.fail(429, times=3, retry_after_ms=1), ClaudeBusy),
        (lambda c: c.fail(503, times=3, retry_after_ms=1), ClaudeUnavailable),
        (lambda c: c.fail(424), ClaudeUnavailable),  # ModelErrorException: the model failed, not the request
        (lambda c: c.fail(403), ClaudeMisconfigured),
    ],
    ids=["throttled", "service_unavailable", "model_error", "access_denied"],
)
@backend(BEDROCK, retries=2)
async def test_bedrock_failure_before_the_stream_is_the_usual_sentence(bot, inject, expected):
    inject(bot.claude)

    assert await ask_and_get_reply(bot, "40.000001") == f":warning: {expected.sentence}"
    assert bot.claude.requests[0].path.endswith("/invoke-with-response-stream")
    assert await ask_and_get_reply(bot, "40.000002") == "Hello from fake Claude."


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", ClaudeBusy),  # an Anthropic `error` event inside a chunk
        ("throttlingException", ClaudeBusy),  # Bedrock's own exception frames
        ("modelStreamErrorException", ClaudeUnavailable),
    ],
)
@backend(BEDROCK)
async def test_bedrock_failure_mid_stream_keeps_the_partial_answer_with_a_note(bot, error_type, expected):
    bot.claude.chunk_chars = 5
    bot.claude.reply("First words, then more words that never arrive.")
    bot.claude.fail_midstream(after_chunks=2, error_type=error_type)

    text = await ask_and_get_reply(bot, "41.000001")
    assert text == f"First word\n\n_(Cut off: {expected.sentence})_"


@backend(BEDROCK)
async def test_bedrock_connection_dropped_mid_stream_is_unavailable(bot):
    bot.claude.chunk_chars = 5
    bot.claude.reply("First words, then more words that never arrive.")
    bot.claude.drop_connection(after_chunks=2)

    text = await ask_and_get_reply(bot, "42.000001")
    assert text == f"First word\n\n_(Cut off: {ClaudeUnavailable.sentence})_"


@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        (lambda c: c.fail(429, times=3, retry_after_ms=1), ClaudeBusy),  # Google's RESOURCE_EXHAUSTED
        (lambda c: c.fail(529, times=3, retry_after_ms=1), ClaudeBusy),  # the model's overloaded_error
        (lambda c: c.fail(404), ClaudeMisconfigured),  # Google's NOT_FOUND: no such model in that region
    ],
    ids=["quota", "overloaded", "model_not_found"],
)
@backend(VERTEX, retries=2)
async def test_vertex_failure_before_the_stream_is_the_usual_sentence(bot, inject, expected):
    inject(bot.claude)
    assert await ask_and_get_reply(bot, "50.000001") == f":warning: {expected.sentence}"
    assert bot.claude.requests[0].path.endswith(":streamRawPredict")


@backend(VERTEX)
async def test_vertex_error_mid_stream_keeps_the_partial_answer_with_a_note(bot):
    bot.claude.chunk_chars = 5
    bot.claude.reply("First words, then more words that never arrive.")
    bot.claude.fail_midstream(after_chunks=2)

    text = await ask_and_get_reply(bot, "50.000002")
    assert text == f"First word\n\n_(Cut off: {ClaudeBusy.sentence})_"


@backend(VERTEX)
async def test_vertex_credentials_refused_by_google_are_a_setup_problem(bot):
    bot.claude.refuse_grants = True

    assert await ask_and_get_reply(bot, "51.000001") == f":warning: {ClaudeMisconfigured.sentence}"
    assert bot.claude.requests == []  # nothing was sent without a token


# --- model ids, the start-up line and the policy sentence ---


@pytest.mark.parametrize(
    ("kind", "model", "expected"),
    [
        ("anthropic", "claude-sonnet-5-5", "claude-sonnet-5-5"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
        ("bedrock", "claude-sonnet-5-5", "anthropic.claude-sonnet-5-5"),
        ("bedrock", "claude-fable-5", "anthropic.claude-fable-5"),
        ("bedrock", "claude-sonnet-4-5-20250929", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("bedrock", "claude-haiku-4-5-20251001", "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("bedrock", "claude-opus-4-6", "anthropic.claude-opus-4-6-v1"),
        ("bedrock", "anthropic.claude-sonnet-4-6", "anthropic.claude-sonnet-4-6"),
        ("bedrock", "us.anthropic.claude-sonnet-5-5", "us.anthropic.claude-sonnet-5-5"),
        ("bedrock", "global.anthropic.claude-opus-4-6-v1", "global.anthropic.claude-opus-4-6-v1"),
        ("bedrock", PROFILE_ARN, PROFILE_ARN),
        ("vertex", "claude-sonnet-5-5", "claude-sonnet-5-5"),
        ("vertex", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5@20250929"),
        ("vertex", "claude-opus-4-1@20250805", "claude-opus-4-1@20250805"),
    ],
)
def test_model_id_mapping(kind, model, expected):
    assert claude_model_id(kind, model) == expected


def settings_for(**env: str) -> Settings:
    return Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", **env})


def test_the_start_up_line_names_backend_region_and_model():
    where_it_runs = where(settings_for(**BEDROCK, CLAUDE_MODEL="claude-opus-5"))
    assert where_it_runs == "backend=bedrock region=eu-west-1 model=anthropic.claude-opus-5"


def test_policy_sentence_names_the_platform_and_whose_terms_apply():
    anthropic = describe_backend(settings_for(ANTHROPIC_API_KEY="k", CLAUDE_INFERENCE_GEO="us"))
    bedrock = describe_backend(settings_for(**BEDROCK, CLAUDE_MODEL="global.anthropic.claude-sonnet-5-5"))
    vertex = describe_backend(settings_for(**VERTEX))

    assert "Anthropic API" in anthropic and "us geography" in anthropic and "zero data retention" in anthropic
    assert "Amazon Bedrock" in bedrock and "eu-west-1" in bedrock and "any AWS region" in bedrock
    assert "zero data retention does not cover Bedrock" in bedrock
    assert "Vertex AI in europe-west1" in vertex and "zero data retention does not cover Vertex AI" in vertex
    assert "p-123" not in vertex  # no project ids for people


# --- a backend that cannot work stops the bot at start, with one line naming the variable ---


def run_bot(env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_APP_TOKEN": "xapp-1",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {**BEDROCK, "AWS_EC2_METADATA_DISABLED": "true"},
            "startup error: AWS_ACCESS_KEY_ID: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or AWS_BEARER_TOKEN_BEDROCK\n",
        ),
        (
            {**BEDROCK, "AWS_PROFILE": "nowhere"},
            "startup error: AWS_PROFILE: boto3 could not load credentials (ProfileNotFound)\n",
        ),
        (
            {**VERTEX, "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json"},
            "startup error: GOOGLE_APPLICATION_CREDENTIALS: no usable Google application default credentials "
            "(DefaultCredentialsError); point it at a credentials file or run on Google Cloud\n",
        ),
    ],
    ids=["bedrock_without_credentials", "bedrock_unknown_profile", "vertex_without_credentials"],
)
def test_backend_without_credentials_exits_at_start_with_one_line(tmp_path, env, line):
    result = run_bot(env, tmp_path)
    assert result.returncode == 1
    assert result.stderr == line
    assert result.stdout == ""
