"""Files shared in the conversation, fetched from Slack for this request only (when SEND_FILES is on).

Only what Claude reads inline goes, inside the Messages request itself (never the Files API, which zero
data retention does not cover): images as base64 `image` blocks, PDFs as base64 `document` blocks and
plain-text-like files as text `document` blocks. Newest first, at most MAX_FILES a request, each within
MAX_FILE_BYTES. The bytes live in this request's variables only: nothing is written to disk or logged.
Every file not sent gets a short reason, for the one line that tells Claude what was left out.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

import aiohttp
from anthropic.types import DocumentBlockParam, ImageBlockParam
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import OutboundSettings
from bot.pipeline.ask import Ask, FileRef, SlackMessage
from bot.pipeline.tokens import estimate_tokens
from bot.slack_calls import SlackCallFailed, slack_call

log = logging.getLogger(__name__)

# Why a file was left out; Claude is told how many for each reason, never the files' names.
TOO_LARGE = "too large"
UNSUPPORTED = "of an unsupported type"
FAILED = "could not be downloaded"
NOT_IN_SLACK = "not stored in Slack"
EMPTY = "empty"

ImageType = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
PDF = "application/pdf"
TEXT_APPLICATION_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-typescript",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/x-toml",
        "application/x-sh",
        "application/x-shellscript",
        "application/x-python",
        "application/x-python-code",
        "application/x-ruby",
        "application/x-perl",
        "application/x-httpd-php",
        "application/sql",
        "application/graphql",
        "application/x-ndjson",
        "application/csv",
    }
)
# The API refuses an image whose base64 exceeds 5 MiB, so the raw bytes may be three quarters of that.
IMAGE_MAX_BYTES = 5 * 1024 * 1024 * 3 // 4
# All of a request's files together, raw: their base64 (4/3) must leave room within the 32 MB request.
REQUEST_MAX_FILE_BYTES = 20_000_000
PDF_MAX_PAGES = 100  # the API's limit per request
READ_CHUNK = 64 * 1024

# Rough token costs, for the context budget only (the API counts the real ones):
# - an image: Claude scales it to about 1.15 megapixels, about 1,600 tokens, so that is the most it costs;
# - a PDF: each page is sent as its text and as an image, about 3,000 tokens a page; pages are counted
#   from the PDF's page objects or, when those are compressed out of sight, taken as one per 100 kB;
# - a text file: like message text, 4 characters a token.
IMAGE_TOKENS = 1_600
PDF_TOKENS_PER_PAGE = 3_000
PDF_BYTES_PER_PAGE = 100_000
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


@dataclass(frozen=True, slots=True)
class Attached:
    """One file as Claude's content block, with its rough cost in tokens."""

    block: ImageBlockParam | DocumentBlockParam
    tokens: int

    def redacted(self, redact: Callable[[str], str]) -> Attached:
        """A document's title and text redacted as message text is; images and PDF bytes go as they are."""
        if self.block["type"] != "document":
            return self
        document: DocumentBlockParam = {**self.block}
        if document.get("title"):
            document["title"] = redact(str(document["title"]))
        source = document["source"]
        if source["type"] == "text":
            document["source"] = {**source, "data": redact(source["data"])}
        return Attached(document, self.tokens)


@dataclass(frozen=True, slots=True)
class Files:
    """What a request's files came to, by Slack file id: a block to send, or why it was left out."""

    attached: dict[str, Attached] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)


NO_FILES = Files()


def kind_of(mimetype: str) -> str | None:
    """The kind of content block a file becomes: image, pdf or text; None for any other type."""
    mimetype = mimetype.split(";")[0].strip().lower()
    if mimetype in IMAGE_TYPES:
        return "image"
    if mimetype == PDF:
        return "pdf"
    if mimetype.startswith("text/") or mimetype in TEXT_APPLICATION_TYPES:
        return "text"
    if mimetype.startswith("application/") and mimetype.endswith(("+json", "+xml")):
        return "text"
    return None


async def fetch_files(
    slack: AsyncWebClient,
    messages: Sequence[SlackMessage],
    ask: Ask,
    outbound: OutboundSettings,
    *,
    timeout: float,
) -> Files:
    """Download the files people shared in `messages` (oldest first), newest first, within the limits.

    The bot's own messages are skipped (an assistant turn cannot carry files). Slack's reported size
    rules a file out before any download; the body is read only up to the limit. Text and titles are
    redacted later, with the messages, where each file's message stands (`bot.pipeline.prompt`).
    """
    if not outbound.send_files:
        return NO_FILES
    started = time.perf_counter()
    left_out: dict[str, str] = {}
    wanted: list[FileRef] = []
    seen: set[str] = set()
    total = 0
    for message in reversed(messages):
        if ask.bot.wrote(message):
            continue
        for ref in message.files:
            if ref.id in seen:
                continue
            seen.add(ref.id)
            reason = _reason_not_to_fetch(ref, slack, outbound)
            if reason is None and len(wanted) >= outbound.max_files:
                reason = f"beyond the limit of {outbound.max_files} files a question"
            if reason is None and total + ref.size > REQUEST_MAX_FILE_BYTES:
                reason = TOO_LARGE
            if reason is not None:
                left_out[ref.id] = reason
                continue
            wanted.append(ref)
            total += ref.size
    if not wanted:
        _log(ask, {}, left_out, started)
        return Files({}, left_out)
    async with _session(slack) as session:
        fetched = await asyncio.gather(*(_fetch(session, slack, ref, outbound, timeout) for ref in wanted))
    attached: dict[str, Attached] = {}
    for ref, outcome in zip(wanted, fetched, strict=True):
        if isinstance(outcome, Attached):
            attached[ref.id] = outcome
        else:
            left_out[ref.id] = outcome
    _log(ask, attached, left_out, started)
    return Files(attached, left_out)


def _reason_not_to_fetch(ref: FileRef, slack: AsyncWebClient, outbound: OutboundSettings) -> str | None:
    kind = kind_of(ref.mimetype)
    if kind is None:
        return UNSUPPORTED
    if not ref.url_private:
        return FAILED  # deleted, hidden by the plan's limits, or shared from another organization
    if not _slack_hosted(ref.url_private, slack.base_url):
        return NOT_IN_SLACK  # a Google Drive link, say: the bot token must never go there
    if ref.size > _limit(kind, outbound):
        return TOO_LARGE
    return None


def _limit(kind: str, outbound: OutboundSettings) -> int:
    return min(outbound.max_file_bytes, IMAGE_MAX_BYTES) if kind == "image" else outbound.max_file_bytes


def _slack_hosted(url: str, api_url: str) -> bool:
    """Slack's file hosts, or the host of the configured Slack API (a proxy, or the tests' fake)."""
    parsed, api = urlparse(url), urlparse(api_url)
    if (parsed.scheme, parsed.netloc) == (api.scheme, api.netloc):
        return True
    host = parsed.hostname or ""
    return parsed.scheme == "https" and host.endswith((".slack.com", ".slack-gov.com"))


@asynccontextmanager
async def _session(slack: AsyncWebClient) -> AsyncIterator[aiohttp.ClientSession]:
    """The Slack client's own session (one connection pool), or one for this request if it has none."""
    if slack.session is not None and not slack.session.closed:
        yield slack.session
        return
    async with aiohttp.ClientSession() as session:
        yield session


async def _fetch(
    session: aiohttp.ClientSession,
    slack: AsyncWebClient,
    ref: FileRef,
    outbound: OutboundSettings,
    timeout: float,
) -> Attached | str:
    """The file as a content block, or the reason it is left out. Never raises for a failed download."""
    kind = kind_of(ref.mimetype)
    if kind is None or not slack.token:
        return UNSUPPORTED if kind is None else FAILED
    try:
        with slack_call("file download"):
            downloaded = await _download(session, slack, ref, _limit(kind, outbound), timeout)
    except (SlackCallFailed, ValueError):  # ValueError: a URL aiohttp cannot take
        return FAILED
    return downloaded if isinstance(downloaded, str) else _attach(kind, downloaded, ref)


async def _download(
    session: aiohttp.ClientSession, slack: AsyncWebClient, ref: FileRef, limit: int, timeout: float
) -> bytes | str:
    """The file's bytes, read no further than `limit`, or the reason it is left out."""
    async with session.get(
        ref.url_private,
        headers={"Authorization": f"Bearer {slack.token}"},
        timeout=aiohttp.ClientTimeout(total=timeout),
        ssl=slack.ssl if slack.ssl is not None else True,
        proxy=slack.proxy or None,
    ) as response:
        if response.status != 200:
            return FAILED
        served = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if served == "text/html" and not ref.mimetype.lower().startswith("text/html"):
            return FAILED  # Slack's sign-in page: the token lacks files:read, or the file is gone
        if (response.content_length or 0) > limit:
            return TOO_LARGE
        data = bytearray()
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            data += chunk
            if len(data) > limit:
                response.close()  # stop here: the rest is never read
                return TOO_LARGE
    return bytes(data)


def _attach(kind: str, data: bytes, ref: FileRef) -> Attached | str:
    if not data:
        return EMPTY
    if kind == "image":
        media_type = _image_type(data)  # the API checks the bytes against the type, so trust the bytes
        if media_type is None:
            return UNSUPPORTED
        image: ImageBlockParam = {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": _b64(data)},
        }
        return Attached(image, IMAGE_TOKENS)
    title = ref.name
    if kind == "pdf":
        if b"%PDF-" not in data[:1024]:
            return UNSUPPORTED
        pages = len(_PDF_PAGE.findall(data)) or 1 + len(data) // PDF_BYTES_PER_PAGE
        if pages > PDF_MAX_PAGES:
            return TOO_LARGE
        pdf: DocumentBlockParam = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": _b64(data)},
        }
        if title:
            pdf["title"] = title
        return Attached(pdf, pages * PDF_TOKENS_PER_PAGE)
    if b"\x00" in data:
        return UNSUPPORTED  # labelled as text, but binary
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    if not text.strip():
        return EMPTY
    document: DocumentBlockParam = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": text},
    }
    if title:
        document["title"] = title
    return Attached(document, estimate_tokens(text))


def _image_type(data: bytes) -> ImageType | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _log(ask: Ask, attached: dict[str, Attached], left_out: dict[str, str], started: float) -> None:
    if not attached and not left_out:
        return
    log.info(
        "request=%s files attached=%d left_out=%d fetch_ms=%.0f",
        ask.request_id,
        len(attached),
        len(left_out),
        (time.perf_counter() - started) * 1000,
    )
