"""Write the answer where the Ask said, as mrkdwn in as many messages as it needs, or one short error."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.pipeline.ask import InConversation, Privately, ReplyTarget
from bot.pipeline.claude import ClaudeBusy, ClaudeMisconfigured, ClaudeRejected, ClaudeUnavailable
from bot.pipeline.context import ContextUnavailable
from bot.pipeline.mrkdwn import split_message, to_mrkdwn

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 3_900  # Slack shows long text best below 4,000 characters a message
RESPONSE_URL_USES = 5  # a response_url takes five posts within 30 minutes
TEXT_LIMIT = 39_000  # Slack truncates `text` past 40,000 characters

ERROR_SENTENCES: dict[type[Exception], str] = {
    ClaudeBusy: "Claude is busy right now. Please try again in a minute.",
    ClaudeUnavailable: "I couldn't reach Claude just now. Please try again in a minute.",
    ClaudeRejected: "Claude couldn't take this conversation, perhaps because it is too long. "
    "Try a shorter question or a new thread.",
    ClaudeMisconfigured: "I can't reach Claude because of how I'm set up. Please tell whoever runs this app.",
    ContextUnavailable: "I couldn't read this conversation from Slack. "
    "If it's a private channel, invite me first.",
}
FALLBACK_SENTENCE = "Something went wrong while I was answering. Please try again."
STOP_NOTES = {
    "max_tokens": "_(The answer was cut off at its length limit.)_",
    "refusal": "_(Claude declined to answer this.)_",
}


class ReplyFailed(Exception):
    """Slack refused a post; carries Slack's error code only."""


def finish(text: str, stop_reason: str | None) -> str:
    """Claude's Markdown answer plus a note when it did not end normally."""
    note = STOP_NOTES.get(stop_reason or "")
    return f"{text.rstrip()}\n\n{note}".strip() if note else text


def error_sentence(error: Exception) -> str:
    return next((s for kind, s in ERROR_SENTENCES.items() if isinstance(error, kind)), FALLBACK_SENTENCE)


async def post_reply(slack: AsyncWebClient, target: ReplyTarget, markdown: str) -> int:
    """Post `markdown` as mrkdwn; returns how many messages it took."""
    mrkdwn = to_mrkdwn(markdown) or "_(Claude returned an empty answer.)_"
    match target:
        case InConversation(channel, thread_ts):
            pieces = split_message(mrkdwn, MESSAGE_LIMIT)
            for piece in pieces:
                await _post(slack, channel, thread_ts, piece)
        case Privately(response_url):
            pieces = split_message(mrkdwn, MESSAGE_LIMIT)
            if len(pieces) > RESPONSE_URL_USES:
                pieces = split_message(mrkdwn, TEXT_LIMIT)[:RESPONSE_URL_USES]
            for piece in pieces:
                await _respond(response_url, piece)
    return len(pieces)


async def post_error(slack: AsyncWebClient, target: ReplyTarget, error: Exception) -> None:
    """One short sentence for the person who asked; a failure to post it is only logged."""
    sentence = f":warning: {error_sentence(error)}"
    try:
        match target:
            case InConversation(channel, thread_ts):
                await _post(slack, channel, thread_ts, sentence)
            case Privately(response_url):
                await _respond(response_url, sentence)
    except ReplyFailed as exc:
        log.warning("error reply failed: %s", exc)


async def _post(slack: AsyncWebClient, channel: str, thread_ts: str | None, text: str) -> None:
    try:
        # No unfurling: Slack would fetch every link in the answer and show previews nobody asked for.
        await slack.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=text, unfurl_links=False, unfurl_media=False
        )
    except SlackApiError as exc:
        raise ReplyFailed(f"chat.postMessage {exc.response.get('error', 'unknown')}") from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise ReplyFailed(f"chat.postMessage {exc.__class__.__name__}") from None


async def _respond(response_url: str, text: str) -> None:
    try:
        response = await AsyncWebhookClient(response_url).send(text=text, response_type="ephemeral")
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise ReplyFailed(f"response_url {exc.__class__.__name__}") from None
    if response.status_code != 200:
        raise ReplyFailed(f"response_url status {response.status_code}")
