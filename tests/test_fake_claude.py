"""Checks that FakeClaude speaks the Messages API well enough for the real AsyncAnthropic client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam

from tests.fakes.claude_api import FakeClaude

MODEL = "claude-sonnet-5-5"
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeClaude]:
    async with FakeClaude() as fake:
        yield fake


def make_client(fake: FakeClaude, *, max_retries: int = 0, timeout: float = 5.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="test", max_retries=max_retries, timeout=timeout
    )


async def test_stream_arrives_in_several_deltas(fake: FakeClaude) -> None:
    fake.reply("The quick brown fox jumps over the lazy dog, twice over.", stop_reason="max_tokens")
    client = make_client(fake)
    try:
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            deltas = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    finally:
        await client.close()
    assert len(deltas) == 3
    assert "".join(deltas) == "The quick brown fox jumps over the lazy dog, twice over."
    assert final.stop_reason == "max_tokens"
    assert final.content[0].type == "text"
    assert final.content[0].text == "".join(deltas)
    assert final.usage.output_tokens > 0
    (request,) = await fake.wait_for_requests()
    assert request.body["stream"] is True


async def test_first_token_is_reported_once_per_answer_just_before_it_is_written(fake: FakeClaude) -> None:
    """The benchmarks count the time from a request to this report as Claude's, not the bot's."""
    fake.reply("The quick brown fox jumps over the lazy dog, twice over.")
    seen: list[tuple[str, int]] = []
    deltas: list[str] = []
    fake.on_first_token = lambda body: seen.append((body["model"], len(deltas)))
    client = make_client(fake)
    try:
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            async for text in stream.text_stream:
                deltas.append(text)
    finally:
        await client.close()
    assert seen == [(MODEL, 0)]
    assert len(deltas) == 3


async def test_create_returns_message(fake: FakeClaude) -> None:
    fake.responder = lambda body: f"echo {body['messages'][-1]['content']}"
    client = make_client(fake)
    try:
        message = await client.messages.create(
            model=MODEL, max_tokens=100, system="Be brief.", messages=HELLO
        )
        count = await client.messages.count_tokens(model=MODEL, messages=HELLO)
    finally:
        await client.close()
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo Hello"
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert count.input_tokens >= 1
    requests = await fake.wait_for_requests(2)
    assert requests[0].body["system"] == "Be brief."
    assert requests[0].headers["authorization"] == "Bearer test"
    assert requests[1].path == "/v1/messages/count_tokens"


async def test_overloaded_once_is_retried(fake: FakeClaude) -> None:
    # retry-after-ms must be > 0 for the SDK to honour it; 0 falls back to its ~0.5 s backoff.
    fake.fail(529, times=1, retry_after_ms=1)
    client = make_client(fake, max_retries=2)
    try:
        message = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    finally:
        await client.close()
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from fake Claude."
    assert len(fake.requests) == 2


async def test_overloaded_beyond_retries_raises(fake: FakeClaude) -> None:
    fake.fail(529, times=3, retry_after_ms=1)
    client = make_client(fake, max_retries=2)
    try:
        with pytest.raises(anthropic.OverloadedError) as info:
            await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    finally:
        await client.close()
    assert info.value.status_code == 529
    assert info.value.request_id is not None
    assert len(fake.requests) == 3


async def test_should_retry_false_stops_retries(fake: FakeClaude) -> None:
    fake.fail(500, should_retry=False)
    client = make_client(fake, max_retries=2)
    try:
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    finally:
        await client.close()
    assert len(fake.requests) == 1


async def test_error_midstream_after_partial_text(fake: FakeClaude) -> None:
    fake.reply("x" * 100)
    fake.fail_midstream(after_chunks=2)
    client = make_client(fake, max_retries=2)
    received: list[str] = []
    try:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
                async for text in stream.text_stream:
                    received.append(text)
    finally:
        await client.close()
    # The SDK picks the class by HTTP status (200 here): a bare APIStatusError, not OverloadedError.
    assert info.value.type == "overloaded_error"
    assert info.value.status_code == 200
    assert "".join(received) == "x" * 40
    assert len(fake.requests) == 1  # an SSE error after HTTP 200 is never retried


async def test_dropped_connection(fake: FakeClaude) -> None:
    fake.drop_connection()
    client = make_client(fake)
    try:
        with pytest.raises(anthropic.APIConnectionError):
            await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    finally:
        await client.close()


async def test_dropped_connection_midstream(fake: FakeClaude) -> None:
    fake.reply("y" * 100)
    fake.drop_connection(after_chunks=1)
    client = make_client(fake)
    received: list[str] = []
    try:
        # Once the body is streaming the SDK no longer wraps transport errors in APIConnectionError.
        with pytest.raises(httpx2.RemoteProtocolError):
            async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
                async for text in stream.text_stream:
                    received.append(text)
    finally:
        await client.close()
    assert received == ["y" * 20]


async def test_stream_stalling_after_headers_raises_raw_read_timeout(fake: FakeClaude) -> None:
    fake.first_token_delay = 0.5
    client = make_client(fake, timeout=0.1)
    try:
        with pytest.raises(httpx2.ReadTimeout):
            async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
                await stream.get_final_message()
    finally:
        await client.close()


async def test_delays_pace_the_stream(fake: FakeClaude) -> None:
    fake.reply("a" * 60)
    fake.first_token_delay, fake.chunk_delay = 0.05, 0.02
    client = make_client(fake)
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            deltas = [text async for text in stream.text_stream]
        elapsed = loop.time() - start
    finally:
        await client.close()
    assert deltas == ["a" * 20] * 3
    assert elapsed >= 0.09


async def test_hang_times_out(fake: FakeClaude) -> None:
    fake.hang()
    client = make_client(fake, timeout=0.2)
    try:
        with pytest.raises(anthropic.APITimeoutError):
            await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    finally:
        await client.close()


async def test_close_releases_hung_request() -> None:
    fake = FakeClaude()
    await fake.start()
    fake.hang()
    client = make_client(fake)
    try:
        call = asyncio.create_task(client.messages.create(model=MODEL, max_tokens=100, messages=HELLO))
        await fake.wait_for_requests()
        await fake.close()
        with pytest.raises(anthropic.APIConnectionError):
            await call
    finally:
        await client.close()


async def test_unknown_field_rejected(fake: FakeClaude) -> None:
    client = make_client(fake)
    try:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(
                model=MODEL, max_tokens=100, messages=HELLO, extra_body={"data_retention": "none"}
            )
    finally:
        await client.close()
    assert "data_retention: Extra inputs are not permitted" in str(info.value)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([*HELLO, {"role": "assistant", "content": "Hi"}], "must end with a user message"),
        ([*HELLO, *HELLO], "roles must alternate between user and assistant"),
        (
            [{"role": "user", "content": [{"type": "text", "text": ""}]}],
            "text content blocks must be non-empty",
        ),
        ([{"role": "user", "content": ""}], "non-empty content"),
        ([], "at least one message"),
    ],
)
async def test_invalid_conversation_rejected(
    fake: FakeClaude, messages: list[MessageParam], expected: str
) -> None:
    client = make_client(fake)
    try:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(model=MODEL, max_tokens=100, messages=messages)
    finally:
        await client.close()
    assert expected in str(info.value)


async def test_metadata_user_id_recorded(fake: FakeClaude) -> None:
    client = make_client(fake)
    try:
        await client.messages.create(
            model=MODEL, max_tokens=100, messages=HELLO, metadata={"user_id": "abc123"}
        )
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(
                model=MODEL,
                max_tokens=100,
                messages=HELLO,
                metadata=cast(Any, {"user_id": "abc", "name": "x"}),
            )
    finally:
        await client.close()
    requests = await fake.wait_for_requests(2)
    assert requests[0].body["metadata"] == {"user_id": "abc123"}


async def test_wait_for_requests_times_out(fake: FakeClaude) -> None:
    with pytest.raises(AssertionError, match="expected 1 Claude requests, got 0"):
        await fake.wait_for_requests(timeout=0.05)


async def test_every_response_tells_the_rate_limits_and_an_exhausted_one_is_a_429(fake: FakeClaude) -> None:
    fake.set_rate_limits(requests=2, per_seconds=60.0)
    client = make_client(fake)
    try:
        first = await client.messages.with_raw_response.create(model=MODEL, max_tokens=10, messages=HELLO)
        await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    finally:
        await client.close()
    assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    for name in ("input-tokens", "output-tokens", "tokens"):
        assert f"anthropic-ratelimit-{name}-remaining" in first.headers
    headers = refused.value.response.headers
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert int(headers["retry-after"]) >= 1
    assert fake.rate_limited == 1


async def test_the_input_token_limit_counts_cache_writes_but_not_cache_reads(fake: FakeClaude) -> None:
    """As the API counts it for most models: a prompt read from the cache spends none of the limit."""
    fake.set_rate_limits(input_tokens=3_000, per_seconds=3600.0)
    long = [{"role": "user", "content": "the same long context, word for word " * 300}]  # ~2,800 tokens
    client = make_client(fake)
    try:
        for _ in range(3):  # written to the cache once, then read from it
            await client.messages.create(
                model=MODEL, max_tokens=10, messages=long, extra_body={"cache_control": {"type": "ephemeral"}}
            )
        with pytest.raises(anthropic.RateLimitError):  # what is not cached counts
            other = [{"role": "user", "content": "another long context, word for word " * 300}]
            await client.messages.create(model=MODEL, max_tokens=10, messages=other)
    finally:
        await client.close()
    assert fake.rate_limited == 1


async def test_a_scripted_429_carries_retry_after_and_no_limits_means_no_headers(fake: FakeClaude) -> None:
    fake.set_rate_limits(requests=None)
    fake.fail(429, retry_after=7)
    client = make_client(fake)
    try:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    finally:
        await client.close()
    headers = refused.value.response.headers
    assert headers["retry-after"] == "7"
    assert not [name for name in headers if name.startswith("anthropic-ratelimit-")]
