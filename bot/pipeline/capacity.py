"""How many answers may be under way at once (`ClaudeCapacity`): as many as Claude's rate limits allow now,
up to a ceiling that bounds memory.

Every Anthropic API response says what the organisation has left: `anthropic-ratelimit-{requests,
input-tokens,output-tokens}-{limit,remaining,reset}`, token buckets that refill continuously and are full
again at `-reset` (RFC 3339). A turn is given while the estimate of each bucket, refilled since it was
read and less what the turns not yet answered will spend, covers one more request; a burst within that
goes straight through, the rest wait in order. A 429 or 529 pauses new turns until its `retry-after`
(retries the SDK makes wait for it too, see `bot.pipeline.claude`) and halves how many may run at once;
each answer that starts widens it again by one. Bedrock and Vertex AI send no such headers: there only
the ceiling, 429s and 529s count. Per process: several processes share Claude's limits and learn of each
other through the headers and 429s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

log = logging.getLogger(__name__)

DEFAULT_CEILING = 256  # with no MAX_CONCURRENT_ANSWERS: bounds what waiting answers hold in memory
NARROW_EVERY = 1.0  # seconds
LONGEST_RESET = 120.0  # seconds; a reset further off than that is a clock out of step, not a real limit
# `tokens-*` repeats whichever of the two is most restrictive, so it adds nothing here.
DIMENSIONS = ("requests", "input-tokens", "output-tokens")


@dataclass(slots=True)
class _Bucket:
    """One rate limit as a response stated it: `remaining` at `seen`, full (`limit`) at `full_at`."""

    limit: float
    remaining: float
    seen: float  # monotonic seconds
    full_at: float

    def at(self, now: float) -> float:
        if now >= self.full_at or self.full_at <= self.seen:
            return max(self.limit, self.remaining)
        refilled = (self.limit - self.remaining) * (now - self.seen) / (self.full_at - self.seen)
        return self.remaining + max(0.0, refilled)

    def when(self, amount: float) -> float | None:
        """When the bucket holds `amount`, if refilling alone gets it there."""
        if amount > self.limit:
            return None
        if amount <= self.remaining or self.full_at <= self.seen:
            return self.seen
        rate = (self.limit - self.remaining) / (self.full_at - self.seen)
        return self.seen + (amount - self.remaining) / rate


@dataclass(slots=True)
class _Turn:
    reported: bool = False  # Claude has answered its request (so the headers count it)


_current: ContextVar[_Turn | None] = ContextVar("claude_turn", default=None)


class ClaudeCapacity:
    """`async with capacity.turn():` around everything an answer holds; `would_wait()` first, cheaply, to
    show that it waits. `observe` and `used` take what each Claude response says (`ask_claude` calls them)."""

    def __init__(self, ceiling: int | None = None) -> None:
        self.ceiling = ceiling or DEFAULT_CEILING
        self.width = self.ceiling  # how many may run at once now: halved by 429/529, +1 per answer
        self.paused_until = 0.0  # monotonic
        self._narrowed = -NARROW_EVERY
        self._buckets: dict[str, _Bucket] = {}
        self._average_input = 0.0  # tokens per request, as answers report them
        self._average_output = 0.0
        self._active = 0  # turns held
        self._unreported = 0  # turns held whose request Claude has not yet answered
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    # --- turns ---

    def would_wait(self) -> bool:
        return bool(self._waiters) or not self._may_start(time.monotonic())

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self.would_wait():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._schedule()
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release(_Turn())  # given as it was cancelled: hand it on
                else:
                    if waiter in self._waiters:  # `_wake` drops cancelled ones it meets
                        self._waiters.remove(waiter)
                    self._wake()  # the next one may fit where this one did not
                raise
        else:
            self._take()
        turn = _Turn()
        token = _current.set(turn)
        try:
            yield
        finally:
            _current.reset(token)
            self._release(turn)

    def _take(self) -> None:
        self._active += 1
        self._unreported += 1

    def _release(self, turn: _Turn) -> None:
        self._active -= 1
        if not turn.reported:
            self._unreported -= 1
        self._wake()

    def _may_start(self, now: float) -> bool:
        if self._active >= min(self.width, self.ceiling) or now < self.paused_until:
            return False
        for name, bucket in self._buckets.items():
            need = self._need(name)
            # With nothing running, a need no refill can meet is a wrong estimate: Claude will say.
            if bucket.at(now) < need and (self._active or bucket.when(need) is not None):
                return False
        return True

    def _cost(self, name: str) -> tuple[float, int]:
        """What one more request spends of a bucket, and how many running turns will still spend it."""
        if name == "requests":
            return 1.0, self._unreported
        if name == "input-tokens":
            return self._average_input, self._unreported
        return self._average_output, self._active  # output tokens are spent while answers stream

    def _need(self, name: str) -> float:
        """How full a bucket must be for one more request, beside what running turns will spend."""
        cost, pending = self._cost(name)
        return pending * cost + max(cost, 1.0)

    def _wake(self) -> None:
        now = time.monotonic()
        while self._waiters and self._may_start(now):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)
        self._schedule()

    def _schedule(self) -> None:
        """Wake the waiters when the pause ends or the buckets have refilled, if nothing else does first."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters or self._active >= min(self.width, self.ceiling):
            return  # an answer ending wakes them
        now = time.monotonic()
        at = self.paused_until
        for name, bucket in self._buckets.items():
            when = bucket.when(self._need(name))
            if when is None:
                if self._active:
                    return  # only answers that end (and report) can free it
                continue
            at = max(at, when)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, at - now) + 0.001, self._wake)

    # --- what Claude says ---

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """One HTTP response from Claude (each attempt, retries included): its rate-limit headers, and for
        429/529 its `retry-after`."""
        now = time.monotonic()
        turn = _current.get()
        answered = 200 <= status < 300
        for name in DIMENSIONS:
            bucket = _bucket(headers, name, now)
            if bucket is None:
                continue
            previous = self._buckets.get(name)
            if name == "requests" and previous is not None and answered and turn and not turn.reported:
                # Responses can arrive out of order: never believe more is left than the last estimate,
                # less this request, which it did not count yet.
                bucket.remaining = max(0.0, min(bucket.remaining, previous.at(now) - 1))
            self._buckets[name] = bucket
        if answered:
            if turn is not None and not turn.reported:
                turn.reported = True
                self._unreported -= 1
            self.width = min(self.ceiling, self.width + 1)
        elif status in (429, 529):
            wait = _retry_after(headers)
            if wait is not None:
                self.paused_until = max(self.paused_until, now + wait)
            if now - self._narrowed >= NARROW_EVERY:  # one overload, seen by many requests, halves once
                self.width = max(1, min(self.width, self._active) // 2)
                self._narrowed = now
            log.info(
                "Claude answered %d: %s, at most %d answers at once for now",
                status,
                f"new answers wait {wait:.1f} s" if wait is not None else "no retry-after",
                self.width,
            )
        self._wake()

    def used(self, input_tokens: int, output_tokens: int) -> None:
        """What one answer spent, for the estimate of what the next will."""
        if not self._average_input and not self._average_output:
            self._average_input, self._average_output = float(input_tokens), float(output_tokens)
        else:
            self._average_input += (input_tokens - self._average_input) / 8
            self._average_output += (output_tokens - self._average_output) / 8

    async def pause_over(self) -> None:
        """Return once new requests may go (a retry waits for the pause another request's 429 set)."""
        while (left := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(left)


def _bucket(headers: Mapping[str, str], name: str, now: float) -> _Bucket | None:
    prefix = f"anthropic-ratelimit-{name}-"
    remaining = _number(headers.get(prefix + "remaining"))
    if remaining is None:
        return None
    limit = _number(headers.get(prefix + "limit"))
    reset = headers.get(prefix + "reset")
    full_in = 60.0  # the limits are per minute
    if reset:
        try:
            full_in = datetime.fromisoformat(reset).timestamp() - time.time()
        except ValueError:
            pass
    full_in = min(max(full_in, 0.0), LONGEST_RESET)
    return _Bucket(max(limit or remaining, remaining), remaining, now, now + full_in)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, as the SDK reads them: `retry-after-ms`, then `retry-after` (seconds)."""
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None and milliseconds > 0:
        return min(milliseconds / 1000, LONGEST_RESET)
    seconds = _number(headers.get("retry-after"))
    if seconds is not None and seconds > 0:
        return min(seconds, LONGEST_RESET)
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 and number == number and number != float("inf") else None
