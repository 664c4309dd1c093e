"""Per-person limits, counted in State (so every replica counts the same person once) under a keyed hash
of their ids, each count expiring with its window: requests per minute (USER_REQUESTS_PER_MINUTE) and
tokens per UTC day (USER_TOKENS_PER_DAY)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.state import State, StateKeys

WINDOW_SECONDS = 60.0
DAY_SECONDS = 86_400


class UserRateLimit:
    def __init__(self, state: State, keys: StateKeys, per_minute: int) -> None:
        self._state, self._keys, self._per_minute = state, keys, per_minute

    async def allow(self, team_id: str, user_id: str) -> bool:
        """Count a request by this person; False when they are over the limit for this minute."""
        key = f"rate:{self._keys.of(team_id, user_id)}"
        return await self._state.add(key, 1, WINDOW_SECONDS) <= self._per_minute


class UserTokenBudget:
    """Every token Claude reports for a person's answers (input, cache reads and writes, output), summed
    under `tokens:<hash>` until the end of the UTC day, when the count expires and everyone starts again.

    An answer is let in while the person's count is under the budget, and counted when it ends (finished
    or not), so the answer that crosses the budget finishes and the next is refused. `per_day` None: off,
    and nothing is kept."""

    def __init__(
        self, state: State, keys: StateKeys, per_day: int | None, clock: Callable[[], float] = time.time
    ) -> None:
        self._state, self._keys, self._per_day, self._clock = state, keys, per_day, clock

    def _key(self, team_id: str, user_id: str) -> str:
        return f"tokens:{self._keys.of(team_id, user_id)}"

    async def allow(self, team_id: str, user_id: str) -> bool:
        """False when this person has used today's budget."""
        if self._per_day is None:
            return True
        used = await self._state.get(self._key(team_id, user_id))
        return int(used or 0) < self._per_day

    async def spend(self, team_id: str, user_id: str, tokens: int) -> None:
        if self._per_day is None or tokens <= 0:
            return
        await self._state.add(self._key(team_id, user_id), tokens, self.seconds_left_today())

    def seconds_left_today(self) -> float:
        """Until the next midnight UTC: the count's time limit, set when a day's first answer is counted."""
        return DAY_SECONDS - self._clock() % DAY_SECONDS
