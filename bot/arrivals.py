"""What arrived and was acknowledged, dispatched in arrival order a few at a time (`Arrivals`): each
start runs Bolt's dispatch up to the first Slack call (about a millisecond), so under a burst the
event loop reads its sockets between every DISPATCH_BATCH starts, and the acks of what is still
arriving wait for at most that many. Socket Mode's client and HTTP mode's intake both start their
dispatches here; a stopping process waits for them (`settled`), as Slack never sends an acked event
again."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from typing import Any

# Measured at 200 at once over Socket Mode: ack p99 28-90 ms when all started in one turn, 8-20 ms
# with 16; first words at 60 at once the same within the noise between runs (benchmarks).
DISPATCH_BATCH = 16

Start = Callable[[], Coroutine[Any, Any, Any]]


class Arrivals:
    def __init__(self, batch: int = DISPATCH_BATCH) -> None:
        self._batch = batch
        self._arrived: collections.deque[Start] = collections.deque()
        self._dispatcher: asyncio.Future[None] | None = None
        self._running: set[asyncio.Future[Any]] = set()

    def add(self, start: Start) -> None:
        """Run `start()` in a task of its own, after what arrived before it."""
        self._arrived.append(start)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch())

    async def _dispatch(self) -> None:
        while self._arrived:
            for _ in range(min(self._batch, len(self._arrived))):
                running = asyncio.ensure_future(self._arrived.popleft()())
                self._running.add(running)
                running.add_done_callback(self._running.discard)
            await asyncio.sleep(0)

    async def settled(self) -> None:
        """Once all that was added has been dispatched, and the listeners those dispatches started (Bolt
        runs an event's listener in a task of its own) have taken their first step."""
        while self._arrived or self._running:
            dispatching = {self._dispatcher} if self._dispatcher and not self._dispatcher.done() else set()
            await asyncio.wait(self._running | dispatching)
        await asyncio.sleep(0)
