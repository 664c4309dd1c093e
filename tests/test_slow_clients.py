"""HTTP mode under slow or oversized clients: a connection that dawdles over its headers or its body is
closed within seconds, and a body past the limit is refused, all through the server `serve` runs.

The timeouts are made small here through the server's own parameters; every wait below is only a guard
against a hang (a connection held open fails the test), never a measure of speed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.app import build_app, build_claude_client, build_slack_client
from bot.config import Settings
from bot.http_intake import EVENTS_PATH, HttpLimits, start_http
from tests.conftest import bot_env

SECRET = "test-signing-secret"
LIMITS = HttpLimits(header_timeout_seconds=0.3, body_timeout_seconds=0.3, max_body_bytes=64 * 1024)
GUARD = 5.0  # seconds: far past the limits above, far short of aiohttp's hour-long keep-alive


@pytest.fixture
async def http_port(slack, claude) -> AsyncIterator[int]:
    settings = Settings.from_env(bot_env(slack, claude, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET))
    claude_client, slack_client = build_claude_client(settings), build_slack_client(settings)
    app = build_app(settings, slack_client, claude_client)
    runner = await start_http(app, SECRET, host="127.0.0.1", port=0, limits=LIMITS)
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
        await claude_client.close()
        await slack_client.session.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open at GUARD."""
    try:
        async with asyncio.timeout(GUARD):
            return await reader.read()
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {GUARD}s") from None


def head(content_length: int) -> bytes:
    return (
        f"POST {EVENTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Slack-Request-Timestamp: 1700000000\r\nX-Slack-Signature: v0={'0' * 64}\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


async def test_a_connection_that_sends_half_its_headers_is_closed(http_port):
    reader, writer = await connect(http_port)
    writer.write(head(100)[:40])  # the request line and part of a header, then nothing
    await writer.drain()

    assert await read_until_closed(reader) == b""  # closed without an answer
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed(http_port):
    reader, writer = await connect(http_port)
    assert await read_until_closed(reader) == b""
    writer.close()


async def test_a_connection_that_sends_half_its_body_gets_408_and_is_closed(http_port):
    reader, writer = await connect(http_port)
    writer.write(head(100) + b'{"type": "event_')  # 16 of the 100 bytes promised
    await writer.drain()

    answer = await read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    writer.close()


async def test_a_body_past_the_limit_is_refused_with_413_before_it_is_read(http_port):
    reader, writer = await connect(http_port)
    writer.write(head(LIMITS.max_body_bytes + 1))  # promises too much, and sends none of it
    await writer.drain()

    answer = await read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    writer.close()


async def test_a_chunked_body_past_the_limit_is_refused_with_413(http_port):
    reader, writer = await connect(http_port)
    request = (
        f"POST {EVENTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Slack-Request-Timestamp: 1700000000\r\nX-Slack-Signature: v0={'0' * 64}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 16 * 1024
    writer.write(request + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)))
    await writer.drain()

    answer = await read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    writer.close()


async def test_an_idle_connection_after_an_answer_is_closed(http_port):
    reader, writer = await connect(http_port)
    writer.write(head(2) + b"{}")  # unsigned: 401, and the connection could be kept alive
    await writer.drain()

    answer = await read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
    writer.close()
