"""Per-person rate limit: how many requests each person made in the current minute, counted in State (so
every replica counts the same person once) under a keyed hash of their ids; the count expires with it."""

from __future__ import annotations

from bot.state import State, StateKeys

WINDOW_SECONDS = 60.0


class UserRateLimit:
    def __init__(self, state: State, keys: StateKeys, per_minute: int) -> None:
        self._state, self._keys, self._per_minute = state, keys, per_minute

    async def allow(self, team_id: str, user_id: str) -> bool:
        """Count a request by this person; False when they are over the limit for this minute."""
        key = f"rate:{self._keys.of(team_id, user_id)}"
        return await self._state.add(key, 1, WINDOW_SECONDS) <= self._per_minute
