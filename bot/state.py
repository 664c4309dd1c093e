"""State between requests: ids, counters, flags and leases, each with a time limit, never text.

One small interface with two homes, chosen at start (the pipeline never knows which):

    State
     ├── MemoryState    this process only
     └── RedisState     shared by every process of a deployment (REDIS_URL); while Redis cannot be
                        reached it answers from a MemoryState of its own, warns once per outage, and
                        goes back to Redis by itself when Redis answers again

Keys say what they hold (`dedupe:event:<hash>`) and every key expires. Ids that could name someone
go into keys only through `StateKeys.of`, a keyed hash (HMAC-SHA256), so a dump of Redis names nobody
while every replica of the app, holding the same secret, makes the same keys. Nothing here needs
Redis to persist anything: run it with `--save "" --appendonly no`. What a process asks Redis in one
turn of its event loop goes as one pipeline (`_Batches`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_MEMORY_KEYS = 200_000
MAX_OWED_WRITES = 100_000  # made in this process's memory while Redis was out, to make in Redis when back
OWED_PER_SCRIPT = 2_000  # Redis runs a script to its end before anyone's next command: a short one each
RETRY_SECONDS = 1.0  # while Redis is unreachable, how often a call tries it again
REDIS_TIMEOUT_SECONDS = 2.0
# Connections to Redis per process. Beyond them a command waits for one (up to REDIS_TIMEOUT_SECONDS):
# redis-py's default pool raises instead, which would read as an outage under a burst.
REDIS_CONNECTIONS = 64

Renewal = Literal["renewed", "retaken", "lost"]  # see `State.renew`
# Redis out of reach, or refusing writes as a whole (full with noeviction, a replica after a failover,
# a cluster down): this process's memory serves meanwhile. Any other error reply is a bug, and raised.
_OUTAGES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    OSError,
)
# Refusals redis-py raises as a plain ResponseError: a snapshot that failed to save (MISCONF, with
# stop-writes-on-bgsave-error), too few replicas in sync (NOREPLICAS, with min-replicas-to-write).
_REFUSALS = ("MISCONF", "NOREPLICAS")


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _OUTAGES):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(_REFUSALS)


# Compare-and-set scripts: one round trip, atomic in Redis. A renewal returns 0 lost, 1 renewed, 2 retaken.
_RENEW = (
    "local held = redis.call('GET', KEYS[1]) "
    "if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
    "if held or (KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1) then return 0 end "
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2"
)
_RENEWALS: tuple[Renewal, ...] = ("lost", "renewed", "retaken")
_TIMED = ("put", "enlist", "hold")  # the writes that carry a ttl
# A set whose members expire: a sorted set scored by each member's expiry in Redis's own clock (ms).
_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
_MEMBERS = (
    _NOW_MS
    + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) return redis.call('ZRANGE', KEYS[1], 0, -1)"
)
_ADD = (
    "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) "
    "if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return v"
)
# `State.write_all` in one script, atomic: ARGV holds (kind, value, ttl in ms) for each key in KEYS. A
# transaction holding scripts would cost redis-py a SCRIPT EXISTS round trip before it, every time.
# A 'mine' skips what follows, up to that key's 'release', while the key is held by another.
_WRITE_ALL = (
    _NOW_MS + "local skipping = nil for i, key in ipairs(KEYS) do "
    "local kind, value, ttl = ARGV[3 * i - 2], ARGV[3 * i - 1], tonumber(ARGV[3 * i]) "
    "if skipping then if kind == 'release' and key == skipping then skipping = nil end "
    "elseif kind == 'mine' then local held = redis.call('GET', key) "
    "if held and held ~= value then skipping = key end "
    "elseif kind == 'put' then redis.call('SET', key, value, 'PX', ttl) "
    "elseif kind == 'delete' then redis.call('DEL', key) "
    "elseif kind == 'enlist' then redis.call('ZREMRANGEBYSCORE', key, '-inf', now) "
    "redis.call('ZADD', key, now + ttl, value) "
    "redis.call('PEXPIREAT', key, redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) "
    "elseif kind == 'delist' then redis.call('ZREM', key, value) "
    "elseif kind == 'hold' then local held = redis.call('GET', key) "
    "if not held or held == value then redis.call('SET', key, value, 'PX', ttl) end "
    "elseif kind == 'release' and redis.call('GET', key) == value then redis.call('DEL', key) end "
    "end return 1"
)


@dataclass(frozen=True, slots=True)
class Write:
    """One change in `State.write_all`: put (value, ttl), delete, enlist (member in value, ttl), delist
    (member in value), hold (owner in value, ttl: held again unless another holds it), release (owner
    in value) or mine (owner in value: the writes after it, up to the release of the same key, are made
    only if no one else holds the key)."""

    kind: Literal["put", "delete", "enlist", "delist", "hold", "release", "mine"]
    key: str
    value: str = ""
    ttl: float = 0.0


class State(ABC):
    """Every value is a short string: an id, a number or a flag. Every `ttl` is in seconds."""

    shared = False  # whether other processes see it

    @abstractmethod
    async def claim(self, key: str, ttl: float, owner: str = "1") -> bool:
        """Hold `key` as `owner` for `ttl` if no one holds it; True if we now hold it."""

    @abstractmethod
    async def renew(self, key: str, owner: str, ttl: float, *, unless: str | None = None) -> Renewal:
        """Hold `key` as `owner` for another `ttl`: "renewed"; "lost" if someone else holds it, or it
        is gone and `unless` is there; else "retaken", held again. A key gone from the store asked is
        not another's: Redis restarted empty, or it was put in Redis and this process's memory is asked
        in an outage (or the other way round once Redis is back)."""

    @abstractmethod
    async def release(self, key: str, owner: str) -> None:
        """Let go of `key`, if we hold it."""

    @abstractmethod
    async def add(self, key: str, amount: int, ttl: float) -> int:
        """Add to a counter that expires `ttl` after it was made; returns its new value."""

    @abstractmethod
    async def get(self, key: str) -> str | None: ...

    @abstractmethod
    async def put(self, key: str, value: str, ttl: float) -> None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def get_many(self, keys: list[str]) -> list[str | None]:
        """Several values in one round trip, in the order of `keys`."""

    @abstractmethod
    async def enlist(self, index: str, member: str, ttl: float) -> None:
        """Put `member` (an id) in the set `index` for `ttl`; the set expires with its last member."""

    @abstractmethod
    async def delist(self, index: str, member: str) -> None: ...

    @abstractmethod
    async def members(self, index: str) -> list[str]:
        """The set's members that have not expired."""

    async def write_all(self, writes: Sequence[Write]) -> None:
        """All of `writes`, in order; in Redis at once, in one round trip."""
        skipping: str | None = None
        for write in writes:
            if skipping is not None:
                if write.kind == "release" and write.key == skipping:
                    skipping = None
                continue
            match write.kind:
                case "mine":
                    if (await self.get(write.key)) not in (None, write.value):
                        skipping = write.key
                case "put":
                    await self.put(write.key, write.value, write.ttl)
                case "delete":
                    await self.delete(write.key)
                case "enlist":
                    await self.enlist(write.key, write.value, write.ttl)
                case "delist":
                    await self.delist(write.key, write.value)
                case "hold":
                    await self.renew(write.key, write.value, write.ttl)
                case "release":
                    await self.release(write.key, write.value)

    async def close(self) -> None:
        return None


class MemoryState(State):
    """This process's memory: bounded in size (the oldest key goes first), each key forgotten on time."""

    def __init__(self, max_keys: int = MAX_MEMORY_KEYS) -> None:
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> (expires, value)
        self._sets: dict[str, dict[str, float]] = {}  # index -> member -> expires (a few indexes)
        self._max = max_keys

    def _live(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is not None and item[0] <= time.monotonic():
            del self._items[key]
            return None
        return None if item is None else item[1]

    def _set(self, key: str, value: str, ttl: float) -> None:
        self._items.pop(key, None)
        while len(self._items) >= self._max:
            self._items.popitem(last=False)
        self._items[key] = (time.monotonic() + ttl, value)

    async def claim(self, key: str, ttl: float, owner: str = "1") -> bool:
        if self._live(key) is not None:
            return False
        self._set(key, owner, ttl)
        return True

    async def renew(self, key: str, owner: str, ttl: float, *, unless: str | None = None) -> Renewal:
        held = self._live(key)
        if held not in (None, owner) or (held is None and unless is not None and self._live(unless)):
            return "lost"
        self._set(key, owner, ttl)
        return "renewed" if held == owner else "retaken"

    async def release(self, key: str, owner: str) -> None:
        if self._live(key) == owner:
            del self._items[key]

    async def add(self, key: str, amount: int, ttl: float) -> int:
        current = self._live(key)
        if current is None:
            self._set(key, str(amount), ttl)
            return amount
        value = int(current) + amount
        self._items[key] = (self._items[key][0], str(value))
        return value

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._set(key, value, ttl)

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def get_many(self, keys: list[str]) -> list[str | None]:
        return [self._live(key) for key in keys]

    async def enlist(self, index: str, member: str, ttl: float) -> None:
        now = time.monotonic()
        members = {m: e for m, e in self._sets.get(index, {}).items() if e > now}
        members[member] = now + ttl
        self._sets[index] = members

    async def delist(self, index: str, member: str) -> None:
        self._sets.get(index, {}).pop(member, None)

    async def members(self, index: str) -> list[str]:
        now = time.monotonic()
        return [m for m, expires in self._sets.get(index, {}).items() if expires > now]


class _Batches:
    """Commands asked for in one turn of the event loop, sent to Redis as one pipeline: one connection,
    one write and one read for all of them. Alone, each costs a pooled connection, a write and a read,
    which in a burst of answers was most of a replica's CPU spent on Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, *command: Any) -> Any:
        """`command`'s reply, or its error raised (redis's, or the pipeline's ConnectionError)."""
        reply = asyncio.get_running_loop().create_future()
        self._queued.append((command, reply))
        if len(self._queued) == 1:  # it starts once the tasks running in this turn have queued theirs
            task = asyncio.create_task(self._send_queued())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await reply

    async def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for command, _ in queued:
                    pipe.execute_command(*command)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # the process is closing: nobody waits forever
            for _, reply in queued:
                reply.cancel()
            raise
        except Exception as exc:  # the connection's failure is every command's
            replies = [exc] * len(queued)
        for (_, reply), result in zip(queued, replies, strict=True):
            if reply.done():  # its caller was cancelled
                continue
            if isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)

    async def script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA in the batch; a Redis that does not know the script (restarted) is sent its text."""
        try:
            return await self.run("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await script(keys=keys, args=args)


class RedisState(State):
    """Redis, shared by every process; this process's memory while Redis is out of reach."""

    shared = True

    def __init__(self, url: str, retry_seconds: float = RETRY_SECONDS) -> None:
        self._retry_seconds = retry_seconds
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            decode_responses=True,
        )
        self._redis = aioredis.Redis.from_pool(pool)  # closed with it
        self._batches = _Batches(self._redis)
        self._local = MemoryState()
        # EVALSHA: each call sends the script's digest, not its text.
        self._renew, self._add, self._members, self._write_all = (
            self._redis.register_script(script) for script in (_RENEW, _ADD, _MEMBERS, _WRITE_ALL)
        )
        self._down_since: float | None = None
        self._recoveries = 0  # times Redis was found back: a call tried before the last one is stale
        self._last_try = float("-inf")
        self._owed: deque[tuple[float, Write]] = deque(maxlen=MAX_OWED_WRITES)  # and when each was made
        self._sending_owed: asyncio.Future[None] | None = None

    async def ping(self) -> None:
        """Reach Redis now; raises redis's ConnectionError (or OSError) if it cannot be reached."""
        await self._redis.ping()

    async def _either(
        self,
        shared: Callable[[], Awaitable[T]],
        local: Callable[[], Awaitable[T]],
        owed: Sequence[Write] = (),
    ) -> T:
        """`shared()` in Redis; while Redis is out of reach, `local()` in this process's memory, and
        `owed`, the same change, is made in Redis too once it is back."""
        now = time.monotonic()
        if self._down_since is not None and now - self._last_try < self._retry_seconds:
            self._owe(owed, now)
            return await local()
        self._last_try = now
        recoveries = self._recoveries
        try:
            if self._owing():
                await self._owed_sent()
            result = await shared()
        except Exception as exc:
            if not _is_outage(exc):
                raise
            # Given up on after another call found Redis back: that outage, not a new one.
            if self._down_since is None and recoveries == self._recoveries:
                self._down_since = now
                log.warning(
                    "Redis unreachable or refusing writes (%s): using this process's memory until it is back",
                    exc.__class__.__name__,
                )
            self._owe(owed, now)
            return await local()
        if self._down_since is not None:
            log.warning("Redis reachable again after %.0fs", now - self._down_since)
            self._down_since = None
            self._recoveries += 1
        return result

    def _owing(self) -> bool:
        return bool(self._owed) or (self._sending_owed is not None and not self._sending_owed.done())

    def _owe(self, writes: Sequence[Write], now: float) -> None:
        self._owed.extend((now, write) for write in writes)

    async def _owed_sent(self) -> None:
        """Once what is owed is in Redis; every caller meanwhile waits for the one sending, so that
        nothing asked now reaches Redis before the writes made in the outage."""
        if self._sending_owed is None or self._sending_owed.done():
            self._sending_owed = asyncio.ensure_future(self._send_owed())
        await asyncio.shield(self._sending_owed)

    async def _send_owed(self) -> None:
        """Redis is back: what this process wrote meanwhile (answers claimed, ended, released) goes
        there too, in order, each put for what is left of its time, so that Redis holds no claim of an
        answer that ended in the outage (another replica would take it for an orphan and answer it
        again). A few thousand writes per script: Redis serves no one else while one runs."""
        while self._owed:
            sending = [self._owed.popleft() for _ in range(min(OWED_PER_SCRIPT, len(self._owed)))]
            guarding = _guarding(None, (write for _, write in sending))
            while guarding is not None and self._owed:  # a guarded group goes in one script, whole
                sending.append(self._owed.popleft())
                guarding = _guarding(guarding, [sending[-1][1]])
            now = time.monotonic()
            writes = [
                replace(write, ttl=write.ttl - (now - at)) if write.kind in _TIMED else write
                for at, write in sending
            ]
            try:
                await self._send([w for w in writes if w.kind not in _TIMED or w.ttl > 0])
            except BaseException:
                self._owed.extendleft(reversed(sending))  # still owed, before what was owed meanwhile
                raise

    async def _send(self, writes: Sequence[Write]) -> None:
        if writes:
            changes = [arg for w in writes for arg in (w.kind, w.value, _ms(w.ttl))]
            await self._batches.script(self._write_all, [w.key for w in writes], changes)

    async def claim(self, key: str, ttl: float, owner: str = "1") -> bool:
        async def shared() -> bool:
            return bool(await self._batches.run("SET", key, owner, "NX", "PX", _ms(ttl)))

        return await self._either(shared, lambda: self._local.claim(key, ttl, owner))

    async def renew(self, key: str, owner: str, ttl: float, *, unless: str | None = None) -> Renewal:
        async def shared() -> Renewal:
            keys = [key] if unless is None else [key, unless]
            return _RENEWALS[int(await self._batches.script(self._renew, keys, [owner, _ms(ttl)]))]

        # Owed: a lease renewed here through an outage longer than it is still held once Redis is back.
        held = [Write("hold", key, owner, ttl)]
        return await self._either(shared, lambda: self._local.renew(key, owner, ttl, unless=unless), held)

    async def release(self, key: str, owner: str) -> None:
        await self.write_all([Write("release", key, owner)])

    async def add(self, key: str, amount: int, ttl: float) -> int:
        async def shared() -> int:
            return int(await self._batches.script(self._add, [key], [amount, _ms(ttl)]))

        return await self._either(shared, lambda: self._local.add(key, amount, ttl))

    async def get(self, key: str) -> str | None:
        async def shared() -> str | None:
            value = await self._batches.run("GET", key)
            return None if value is None else str(value)

        return await self._either(shared, lambda: self._local.get(key))

    async def put(self, key: str, value: str, ttl: float) -> None:
        async def shared() -> None:
            await self._batches.run("SET", key, value, "PX", _ms(ttl))

        await self._either(shared, lambda: self._local.put(key, value, ttl))

    async def delete(self, key: str) -> None:
        async def shared() -> None:
            await self._batches.run("DEL", key)

        await self._either(shared, lambda: self._local.delete(key), [Write("delete", key)])

    async def get_many(self, keys: list[str]) -> list[str | None]:
        async def shared() -> list[str | None]:
            if not keys:
                return []
            return [None if v is None else str(v) for v in await self._batches.run("MGET", *keys)]

        return await self._either(shared, lambda: self._local.get_many(keys))

    async def enlist(self, index: str, member: str, ttl: float) -> None:
        await self.write_all([Write("enlist", index, member, ttl)])

    async def delist(self, index: str, member: str) -> None:
        await self.write_all([Write("delist", index, member)])

    async def members(self, index: str) -> list[str]:
        async def shared() -> list[str]:
            return [str(m) for m in await self._batches.script(self._members, [index], [])]

        return await self._either(shared, lambda: self._local.members(index))

    async def write_all(self, writes: Sequence[Write]) -> None:
        await self._either(lambda: self._send(writes), lambda: self._local.write_all(writes), writes)

    async def close(self) -> None:
        """What is owed goes to Redis first, if it is back (answers handed over in an outage reach the
        other replicas); if not, it is given up."""
        if self._owing():
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                    await self._owed_sent()
            except Exception as exc:
                if not _is_outage(exc):
                    raise
        if self._sending_owed is not None:  # given up: not left running on a closed connection
            self._sending_owed.cancel()
        await self._redis.aclose()


class StateKeys:
    """Key names for ids that could name someone: a keyed hash, the same in every replica."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"state-keys\x00" + secret.encode()).digest()

    def of(self, *ids: str) -> str:
        return hmac.new(self._key, "\x1f".join(ids).encode(), hashlib.sha256).hexdigest()[:32]


def _guarding(key: str | None, writes: Iterable[Write]) -> str | None:
    """The key of the 'mine' still waiting for its release after `writes`, if one is."""
    for write in writes:
        if key is None and write.kind == "mine":
            key = write.key
        elif write.kind == "release" and write.key == key:
            key = None
    return key


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
