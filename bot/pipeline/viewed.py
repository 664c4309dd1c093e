"""Which channel the user of an agent thread is viewing, as Slack's assistant-thread events last said:
a channel id or none, by (DM, thread), for a day at most, in State under a keyed hash of the thread so
that every replica knows it. The agent surface writes it; the pipeline looks it up as it reads the
thread, so that a question is in the pipeline (and a stopping process waits for it) from the start."""

from __future__ import annotations

from bot.state import State, StateKeys

VIEWED_TTL_SECONDS = 24 * 3600.0


class ViewedChannels:
    def __init__(self, state: State, keys: StateKeys) -> None:
        self._state, self._keys = state, keys

    def _key(self, channel: str, thread_ts: str) -> str:
        return f"viewed:{self._keys.of(channel, thread_ts)}"

    async def get(self, channel: str, thread_ts: str) -> str | None:
        return await self._state.get(self._key(channel, thread_ts)) or None

    async def put(self, channel: str, thread_ts: str, viewing: str | None) -> None:
        await self._state.put(self._key(channel, thread_ts), viewing or "", VIEWED_TTL_SECONDS)
