"""Per-user rate limit: how many requests each person made in the last minute (user ids and times only)."""

from __future__ import annotations

import time
from collections import deque

WINDOW_SECONDS = 60.0
MAX_USERS = 100_000


class UserRateLimit:
    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._recent: dict[str, deque[float]] = {}

    def allow(self, user_id: str, now: float | None = None) -> bool:
        """Count a request by `user_id`; False when they are over the limit."""
        now = time.monotonic() if now is None else now
        times = self._recent.setdefault(user_id, deque())
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if len(times) >= self._per_minute:
            return False
        times.append(now)
        if len(self._recent) > MAX_USERS:
            self._forget_idle(now)
        return True

    def _forget_idle(self, now: float) -> None:
        for user_id in [u for u, t in self._recent.items() if not t or t[-1] <= now - WINDOW_SECONDS]:
            del self._recent[user_id]
