"""ExpiringMap: ids and flags kept between requests in this process, each for a time limit, bounded in
number. What the bot keeps between requests, in full, is listed in one place: `bot.pipeline`'s docstring."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    def __init__(self, ttl_seconds: float, max_items: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_items
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, now: float | None = None) -> V | None:
        self._expire(time.monotonic() if now is None else now)
        item = self._items.get(key)
        return None if item is None else item[1]

    def put(self, key: K, value: V, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._expire(now)
        self._items.pop(key, None)
        if len(self._items) >= self._max:
            self._items.popitem(last=False)
        self._items[key] = (now + self._ttl, value)

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self, now: float) -> None:
        while self._items and next(iter(self._items.values()))[0] <= now:
            self._items.popitem(last=False)
