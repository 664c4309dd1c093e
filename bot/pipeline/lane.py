"""The way to Claude in arrival order (`ArrivalLane`): a burst's work before the Claude request runs a few
answers at a time, first come first served, instead of all of them at once.

That work is CPU (the access check, the reads, the prompt) between short waits on Slack. Run all at once, a
burst shares the CPU evenly and every answer reaches Claude near the end of the whole burst's work; run a
few at a time, they reach it one after another, so the median waits about half as long and the last no
longer. A few places keep the CPU busy while each waits on Slack. Nobody waits on a slow neighbour for
long: a place is given up when its answer leaves it, or after `hold_seconds` (a 429, a long history).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

WIDTH = 4  # answers before Claude at once: 2, 4 and 8 measured alike, each ahead of no limit
HOLD_SECONDS = 0.25  # the work before Claude takes a few ms; a place held longer stops counting


class ArrivalLane:
    def __init__(self, width: int = WIDTH, hold_seconds: float | None = None) -> None:
        self._places = asyncio.Semaphore(width)  # its waiters are woken in order
        self._hold_seconds = HOLD_SECONDS if hold_seconds is None else hold_seconds

    async def enter(self) -> Callable[[], None]:
        """Wait for a place; returns `leave`, to call once the work before Claude is done (again: no-op)."""
        await self._places.acquire()
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                timer.cancel()
                self._places.release()

        timer = asyncio.get_running_loop().call_later(self._hold_seconds, leave)
        return leave
