"""Where Claude runs: the Anthropic API (default), Amazon Bedrock or Google Vertex AI, each through the
anthropic SDK's own client (the extras bring boto3 and google-auth), with the model id each one expects
and a sentence on whose terms apply.

Credentials are the platforms' own: ANTHROPIC_API_KEY; the AWS chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role) or AWS_BEARER_TOKEN_BEDROCK; Google application default
credentials (GOOGLE_APPLICATION_CREDENTIALS). The SDK clients read them; `build_claude_client` only checks
at start that they can be found, so that a missing one stops the bot with one line naming it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Literal, TypeAlias, TypedDict

import httpx2
from anthropic import AsyncAnthropic, AsyncAnthropicBedrock, AsyncAnthropicVertex, DefaultAioHttpClient

from bot.config import BackendSettings, ConfigError, Settings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials as GoogleCredentials


ClaudeClient: TypeAlias = AsyncAnthropic | AsyncAnthropicBedrock | AsyncAnthropicVertex

# The request body's version on the cloud platforms. The SDK would send its own API version (2026-10-21),
# which "Claude on Amazon Bedrock (legacy)" warns ARN-versioned models reject with a 400; AWS's "Inference
# using Anthropic Messages API" and Anthropic's "Claude on Vertex AI" pages name these values.
BODY_VERSIONS = {"bedrock": "bedrock-2023-05-31", "vertex": "vertex-2023-10-16"}
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# Model ids, from platform.claude.com/docs/en/build-with-claude/claude-on-amazon-bedrock-legacy and
# .../claude-on-vertex-ai (tables seen 2026-11), and the AWS model cards:
#   first-party               Bedrock                                      Vertex AI
#   claude-sonnet-4-5-20250929 anthropic.claude-sonnet-4-5-20250929-v1:0    claude-sonnet-4-5@20250929
#   claude-sonnet-4-6          anthropic.claude-sonnet-4-6                  claude-sonnet-4-6
#   claude-opus-4-6            anthropic.claude-opus-4-6-v1 (the exception) claude-opus-4-6
#   claude-fable-5             anthropic.claude-fable-5                     claude-fable-5
# so a dated id gains "-v1:0" on Bedrock and "@date" on Vertex, an undated one only Bedrock's "anthropic.".
# An id already in the platform's form passes unchanged: Bedrock ids, cross-region inference profiles
# ("us.", "eu.", "global.anthropic…") and ARNs; Vertex ids with "@". Several Bedrock models are served
# on demand only through an inference profile: set CLAUDE_MODEL to one (us.anthropic.claude-sonnet-5-5).
_DATED = re.compile(r"(claude-[a-z0-9-]+?)-(\d{8})")
_BEDROCK_EXCEPTIONS = {"claude-opus-4-6": "anthropic.claude-opus-4-6-v1"}
_BEDROCK_FORM = re.compile(r"(anthropic\.|[a-z-]+\.anthropic\.|arn:aws)")


@cache
def claude_model_id(kind: str, model: str) -> str:
    """The model id `kind` expects for the first-party id `model` (CLAUDE_MODEL)."""
    dated = _DATED.fullmatch(model)
    if kind == "bedrock" and not _BEDROCK_FORM.match(model):
        if model in _BEDROCK_EXCEPTIONS:
            return _BEDROCK_EXCEPTIONS[model]
        return f"anthropic.{model}-v1:0" if dated else f"anthropic.{model}"
    if kind == "vertex" and dated and "@" not in model:
        return f"{dated[1]}@{dated[2]}"
    return model


def build_claude_client(settings: Settings) -> ClaudeClient:
    """Call from a running event loop. Raises ConfigError, naming the variable, when the backend's
    library or credentials are missing."""
    backend = settings.backend
    options = _ClientOptions(
        timeout=settings.claude_timeout_seconds,
        max_retries=settings.claude_max_retries,
        # The SDK over aiohttp rather than httpx2's anyio transport: a third less CPU per streamed answer.
        http_client=DefaultAioHttpClient(),
        open_telemetry=False,  # spans could carry prompts if an environment variable asked for content
    )
    client: ClaudeClient
    if backend.kind == "bedrock":
        client = AsyncAnthropicBedrock(
            aws_region=backend.aws_region, base_url=backend.bedrock_base_url, **options
        )
        if client.api_key is None:  # no AWS_BEARER_TOKEN_BEDROCK: requests are signed with AWS credentials
            _check_aws_credentials(backend)
    elif backend.kind == "vertex":
        client = AsyncAnthropicVertex(
            region=backend.vertex_region or "",
            project_id=backend.vertex_project_id or "",
            credentials=_google_credentials(),
            base_url=backend.vertex_base_url,
            **options,
        )
    else:
        client = AsyncAnthropic(
            api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url, **options
        )
    return client


class _ClientOptions(TypedDict):
    timeout: float
    max_retries: int
    http_client: httpx2.AsyncClient
    open_telemetry: Literal[False]


def describe_backend(settings: Settings) -> str:
    """One sentence for people: where the model runs and whose retention terms apply."""
    backend = settings.backend
    model = claude_model_id(backend.kind, settings.claude_model)
    if backend.kind == "bedrock":
        return (
            f"Claude ({model}) runs on Amazon Bedrock in the AWS region {backend.aws_region}"
            f"{_bedrock_profile_note(model)}. Amazon's Bedrock terms govern what is kept there; "
            "Anthropic's zero data retention does not cover Bedrock."
        )
    if backend.kind == "vertex":
        region = "Google's global endpoint" if backend.vertex_region == "global" else backend.vertex_region
        return (
            f"Claude ({model}) runs on Google Cloud Vertex AI in {region}. Google Cloud's terms govern "
            "what is kept there; Anthropic's zero data retention does not cover Vertex AI."
        )
    geo = f", with inference in the {backend.inference_geo} geography" if backend.inference_geo else ""
    return (
        f"Claude ({model}) runs on the Anthropic API{geo}. Anthropic's terms apply, including zero data "
        "retention if this organization's agreement with Anthropic provides it."
    )


def where(settings: Settings) -> str:
    """For the start-up log line: backend, region and model (ids and names only)."""
    backend = settings.backend
    model = claude_model_id(backend.kind, settings.claude_model)
    region = {
        "bedrock": backend.aws_region,
        "vertex": backend.vertex_region,
        "anthropic": backend.inference_geo or "default",
    }[backend.kind]
    return f"backend={backend.kind} region={region} model={model}"


def _bedrock_profile_note(model: str) -> str:
    if model.startswith("global."):
        return " (a global inference profile: requests may be served in any AWS region)"
    if re.match(r"[a-z-]+\.anthropic\.", model):
        return (
            " (a cross-region inference profile: requests may be served in other regions of that geography)"
        )
    return ""


def _check_aws_credentials(backend: BackendSettings) -> None:
    """The SDK signs each request with boto3's credential chain; find out now whether it has any."""
    import boto3  # type: ignore[import-untyped]  # here: only a Bedrock bot pays for loading it
    import botocore.exceptions  # type: ignore[import-untyped]

    try:
        credentials = boto3.Session(region_name=backend.aws_region).get_credentials()
    except botocore.exceptions.BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        raise ConfigError(
            f"AWS_PROFILE: boto3 could not load credentials ({exc.__class__.__name__})"
        ) from None
    if credentials is None:
        raise ConfigError(
            "AWS_ACCESS_KEY_ID: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or AWS_BEARER_TOKEN_BEDROCK"
        )


def _google_credentials() -> GoogleCredentials:
    """Application default credentials, loaded now (a local file or the metadata server); the SDK
    fetches and refreshes the access token on the first request."""
    import google.auth  # here: only a Vertex bot pays for loading it

    try:
        credentials, _project = google.auth.default(scopes=[GOOGLE_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise ConfigError(
            "GOOGLE_APPLICATION_CREDENTIALS: no usable Google application default credentials "
            f"({exc.__class__.__name__}); point it at a credentials file or run on Google Cloud"
        ) from None
    return credentials
