"""The libraries' URL caches, emptied as each request ends (called from `Pipeline.__call__`).

aiohttp turns every URL it is given into a `yarl.URL`, and yarl keeps module-level LRU caches of what it
parsed and built (`encode_url`, `pre_encoded_url`, `build_pre_encoded_url`, `from_parts`, and the host
caches `yarl.cache_clear()` covers); `urllib.parse.urlsplit` (behind `urlparse`) keeps the last 128 it
split. So a file's `url_private` (whose path is the file's name) and a command's `response_url` (a
capability: it can post to that person for 30 minutes) would outlive the request. No constructor of
`yarl.URL` bypasses the caches and slack_sdk hands aiohttp plain strings, so they are emptied instead.
They are performance caches only: the next request parses its few URLs again.
"""

from __future__ import annotations

import urllib.parse
from types import ModuleType
from typing import Protocol, TypeGuard

from yarl import _parse, _url  # where yarl keeps its caches (its public cache_clear covers hosts only)

__all__ = ["clear_url_caches"]

_MODULES_WITH_URL_CACHES: tuple[ModuleType, ...] = (_url, _parse, urllib.parse)


class _Cache(Protocol):
    def cache_info(self) -> object: ...
    def cache_clear(self) -> None: ...


def _is_cache(value: object) -> TypeGuard[_Cache]:
    return hasattr(value, "cache_info") and callable(getattr(value, "cache_clear", None))


# Every functools cache those modules hold, found once by name (a scan of their namespaces per request
# cost ~40 µs) and looked up by name each time, since yarl's `cache_configure` rebinds a name to a new one.
_CACHES: tuple[tuple[ModuleType, str], ...] = tuple(
    (module, name)
    for module in _MODULES_WITH_URL_CACHES
    for name, value in vars(module).items()
    if _is_cache(value)
)


def clear_url_caches() -> None:
    """Empty every functools cache those modules hold."""
    for module, name in _CACHES:
        cache = getattr(module, name, None)
        if _is_cache(cache):
            cache.cache_clear()
