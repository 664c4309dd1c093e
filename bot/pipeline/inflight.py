"""Answers being written, known to every replica through State by ids only: a Stop that reaches any
replica ends the answer, and an answer whose writer died is taken over by another.

    stop:<thread>     a Stop for that thread: when it was pressed, for a minute; each replica looks for
                      its own answers' flags every STOP_POLL_SECONDS and cancels those shown before it
    answer:<answer>   a Claim: where the question is and where the answer is being shown, ids only (no
                      person's id, no text), for the request deadline plus one lease
    lease:<answer>    which replica writes it, for ANSWER_LEASE_SECONDS, renewed every third of that
    takeover:<answer> one replica's right to answer again a question whose lease expired, held (and
                      renewed) until its new answer holds the claim, which stays until then
    answers:<app>     the set of claims' `<answer>` hashes, each member for as long as its claim, so
                      that a replica looks for orphans without scanning Redis

`<thread>` and `<answer>` are keyed hashes. A replica that stops writing an answer without finishing it
(SIGTERM past the grace period) lets go of the lease at once, so another replica answers again without
waiting; one killed outright lets it expire. The replica that takes over re-reads the question from Slack,
the only copy, and answers it as if it had just arrived (`bot.surfaces.resumed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, replace
from typing import Any

from bot.pipeline.ask import Ask, InConversation
from bot.pipeline.reply import ReplyWriter
from bot.state import State, StateKeys, Write

log = logging.getLogger(__name__)

STOP_POLL_SECONDS = 0.25
STOP_TTL_SECONDS = 60.0
SWEEP_SECONDS = 2.0
LOST = "lease lost"  # the cancel message when another replica has taken this answer over
RESUMABLE = frozenset({"mention", "direct_message", "assistant"})  # their question can be read again


@dataclass(frozen=True, slots=True)
class Claim:
    """What another replica needs to answer a question again: ids only."""

    surface: str
    channel: str
    ts: str  # the question
    thread_ts: str | None
    team_id: str | None  # the workspace it came through (not a person)
    reply_ts: str | None = None  # the answer being shown, once there is one
    reply_kind: str | None = None  # "stream" or "message"

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, value: str) -> Claim | None:
        try:
            return cls(**json.loads(value))
        except (ValueError, TypeError):
            return None


@dataclass(slots=True)
class _Writing:
    """One answer this replica is writing."""

    key: str  # the answer's hash
    task: asyncio.Task[None]
    writer: ReplyWriter
    claim: Claim | None  # None: its surface cannot be answered again (its reply needs a response URL)
    stop_key: str | None  # None: not in a thread, so nothing can Stop it but Slack's own button
    held: bool = False  # its first writes (the lease, the claim) are in State
    shown_since: float | None = None  # when it began to be shown (time.time()): a Stop after it is for it
    holding: asyncio.Future[None] | None = None  # those writes, on their way
    claim_until: float = 0.0  # when its claim expires (time.monotonic())
    hand_over: bool = False  # at its end, left unfinished for another replica to answer again
    asked_at: float | None = None  # taken over: when its question came, so a Stop since is for it
    lost: bool = False  # another replica took it over: its claim, under the same key, is that one's now


# A question taken over: its claim, and whether a Stop for it came meanwhile (its cut answer is then
# marked as stopped, and it is not answered again).
Resume = Callable[[Claim, bool], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class _TakingOver:
    """A question taken over here, until its new answer holds the claim."""

    task: asyncio.Task[None]
    asked_at: float  # its question's time: a Stop pressed since was for its cut answer or its new one


class InFlight:
    def __init__(
        self, state: State, keys: StateKeys, *, lease_seconds: float, deadline_seconds: float
    ) -> None:
        self._state, self._keys = state, keys
        self._lease = lease_seconds
        self._claim_ttl = deadline_seconds + lease_seconds
        self.replica = uuid.uuid4().hex[:12]
        self._writing: dict[str, _Writing] = {}  # answer hash -> this replica's answer
        self._resuming: set[asyncio.Task[None]] = set()
        self._taking_over: dict[str, _TakingOver] = {}  # taken over here, not yet held anew
        self._may_take_over = True  # until the replica stops
        self._answers = f"answers:{keys.of('answers')}"  # one set per app: another app's hash differs

    def _stop_key(self, channel: str, thread_ts: str) -> str:
        return f"stop:{self._keys.of(channel, thread_ts)}"

    async def begin(self, ask: Ask, task: asyncio.Task[None], writer: ReplyWriter) -> str:
        """Hold this answer as ours; returns its key for `end`."""
        key = self.enter(ask, task, writer)
        await self.held(key)
        return key

    def enter(self, ask: Ask, task: asyncio.Task[None], writer: ReplyWriter) -> str:
        """Know this answer here from now on, and claim it in State meanwhile (`held` waits for that), so
        that a replica dying from now on leaves it to another; `end` ends it, whatever cuts it short.
        Returns its key."""
        # A question that can be read again is known by its message; a command or shortcut (no message
        # of its own) by its request, or two in one channel would be one answer here.
        if ask.surface in RESUMABLE:
            key = self._keys.of(ask.origin.channel_id or "", ask.message.ts)
        else:
            key = self._keys.of("request", ask.request_id)
        claim, stop_key = None, None
        if isinstance(ask.reply_to, InConversation):
            channel, thread_ts = ask.reply_to.channel, ask.reply_to.thread_ts
            if thread_ts is not None:
                stop_key = self._stop_key(channel, thread_ts)
            if ask.surface in RESUMABLE:
                claim = Claim(ask.surface, channel, ask.message.ts, _thread_of(ask), ask.origin.team_id)
        taking_over = self._taking_over.get(key)
        asked_at = None if taking_over is None else taking_over.asked_at
        writing = _Writing(key, task, writer, claim, stop_key, asked_at=asked_at)
        self._writing[key] = writing
        writing.holding = asyncio.ensure_future(self._hold(writing))
        return key

    async def held(self, key: str) -> None:
        """Once its claim is in State: before anything of the answer is shown, which begins now."""
        writing = self._writing[key]
        if writing.holding is not None:
            await asyncio.shield(writing.holding)
        # Taken over: the reader may have pressed Stop on its cut answer while the question was read again.
        writing.shown_since = time.time() if writing.asked_at is None else writing.asked_at

    def hand_over(self, key: str) -> None:
        """At its end, leave it unfinished for another replica to answer again at once."""
        self._writing[key].hand_over = True

    async def _hold(self, writing: _Writing) -> None:
        """Its first writes: its lease and its claim."""
        key, writes = writing.key, []
        if writing.claim is not None:  # the lease first, so that no sweep sees the claim unheld
            writes += [
                Write("put", f"lease:{key}", self.replica, self._lease),
                Write("put", f"answer:{key}", writing.claim.dumps(), self._claim_ttl),
                Write("enlist", self._answers, key, self._claim_ttl),
            ]
        if self._taking_over.pop(key, None) is not None:  # the question taken over is held anew
            writes.append(Write("release", f"takeover:{key}", self.replica))
        writing.claim_until = time.monotonic() + self._claim_ttl
        if writes:
            await self._state.write_all(writes)
        writing.held = True

    async def end(self, key: str) -> None:
        """The answer is done, or (after `hand_over`) left unfinished for another replica to answer again."""
        writing = self._writing.pop(key, None)
        if writing is not None:
            # Shielded: a cancel arriving now (a Stop, the drain) must not cut the release off halfway.
            await asyncio.shield(self._ended(writing))

    async def _ended(self, writing: _Writing) -> None:
        if writing.holding is not None:  # the claim's writes first, or they would outlive its end
            with contextlib.suppress(Exception):
                await writing.holding
        if writing.claim is None:
            return
        key = writing.key
        if writing.lost:
            writes = []
        elif writing.hand_over:  # already marked as cut off: the next replica answers again at once
            unmarked = replace(writing.claim, reply_ts=None)
            writes = [Write("put", f"answer:{key}", unmarked.dumps(), self._claim_ttl)]
        else:
            writes = self._unclaimed(key)
        # Only while the lease is not another's: a replica that took the answer over (this one paused
        # past its lease) holds the claim, under the same key, now.
        lease = f"lease:{key}"
        mine = Write("mine", lease, self.replica)
        await self._state.write_all([mine, *writes, Write("release", lease, self.replica)])

    def _unclaimed(self, key: str) -> list[Write]:
        return [Write("delete", f"answer:{key}"), Write("delist", self._answers, key)]

    def running_in(self, channel: str, thread_ts: str) -> asyncio.Task[None] | None:
        stop_key = self._stop_key(channel, thread_ts)
        return next((w.task for w in self._writing.values() if w.stop_key == stop_key), None)

    async def stop(self, channel: str, thread_ts: str) -> bool:
        """Stop the answer in that thread, here or in whichever replica writes it. True if it was here."""
        stop_key = self._stop_key(channel, thread_ts)
        here = [w for w in self._writing.values() if w.stop_key == stop_key and not w.task.done()]
        # The answers shown, as a Stop through another replica ends: a question still in its access
        # check is not what the reader stopped. None shown: the one still beginning is.
        shown = [w for w in here if w.shown_since is not None]
        for writing in shown or here:
            _stop_once(writing.task)
        if here:
            return True
        # When: an answer shown after it (a later question's) is not what the reader stopped.
        await self._state.put(stop_key, repr(time.time()), STOP_TTL_SECONDS)
        return False

    async def watch(self, resume: Resume) -> None:
        """Run while the replica runs: Stop flags, leases, and answers left by replicas that died."""
        renewed = swept = time.monotonic()
        while True:
            await asyncio.sleep(STOP_POLL_SECONDS)
            try:
                await self._look_for_stops()
                now = time.monotonic()
                if now - renewed >= self._lease / 3:
                    renewed = now
                    await self._renew_leases()
                elif any(self._shown_anew(w) for w in self._writing.values()):
                    # Named in its claim at once: a replica dying before the next renewal would leave
                    # the cut answer to whoever takes it over unmarked, its stream never ended.
                    await self._renew_leases(only=self._shown_anew)
                if now - swept >= SWEEP_SECONDS:
                    swept = now
                    await self._take_over_orphans(resume)
            except Exception as exc:  # never let the watch die; State already survives Redis outages
                log.warning("in-flight watch: %s", exc.__class__.__name__)

    async def _look_for_stops(self) -> None:
        # Those being shown: one still in its access check is not what the reader saw and stopped.
        stoppable = [
            (w, w.stop_key, w.shown_since)
            for w in self._writing.values()
            if w.stop_key is not None and w.shown_since is not None
        ]
        if not stoppable:
            return
        flags = await self._state.get_many([stop_key for _, stop_key, _ in stoppable])
        for (writing, _, shown_since), flag in zip(stoppable, flags, strict=True):
            if _pressed_after(flag, shown_since) and self._still_writing(writing):
                log.info("stop for an answer here arrived through another replica")
                _stop_once(writing.task)

    def _still_writing(self, writing: _Writing) -> bool:
        """Not ended while we awaited Redis: an ended answer's task may still be finishing, and a cancel
        then could cut the writes that release its claim (and the question would be answered again)."""
        return self._writing.get(writing.key) is writing and not writing.task.done()

    def _shown_anew(self, writing: _Writing) -> bool:
        """Shown in a message its claim does not name yet."""
        shown = writing.writer.shown_at()
        return (
            writing.claim is not None
            and writing.held
            and shown is not None
            and (writing.claim.reply_ts, writing.claim.reply_kind) != shown
        )

    async def _renew_leases(self, only: Callable[[_Writing], bool] | None = None) -> None:
        """Lost means another replica holds it; one that is only gone (Redis restarted empty, or the
        store asked changed with an outage) is taken again, and an answer's claim written again with it.
        `only`: just the answers it picks, and no takeover."""
        for key, taking_over in list(self._taking_over.items()) if only is None else ():
            renewal = await self._state.renew(f"takeover:{key}", self.replica, self._lease)
            if renewal == "lost" and self._taking_over.get(key) is taking_over:
                log.warning("a question taken over here was taken over again; that replica answers it")
                taking_over.task.cancel(LOST)
        for writing in list(self._writing.values()):
            if writing.claim is None or not writing.held or not self._still_writing(writing):
                continue
            if only is not None and not only(writing):
                continue
            key = writing.key
            renewal = await self._state.renew(
                f"lease:{key}", self.replica, self._lease, unless=f"takeover:{key}"
            )
            if renewal == "lost":
                if self._still_writing(writing):
                    log.warning("an answer's lease was lost; another replica answers it")
                    writing.lost = True
                    writing.task.cancel(LOST)
                continue
            if not self._still_writing(writing):
                continue  # ended meanwhile: its claim is gone and must stay gone
            shown = writing.writer.shown_at()
            # Claimed on arrival, its deadline run from its start: a long wait to start outlasts the claim.
            expiring = writing.claim_until - time.monotonic() < 2 * self._lease
            if expiring:
                writing.claim_until = time.monotonic() + self._claim_ttl
            if shown is not None and (writing.claim.reply_ts, writing.claim.reply_kind) != shown:
                writing.claim = replace(writing.claim, reply_ts=shown[0], reply_kind=shown[1])
            elif renewal == "renewed" and not expiring:
                continue  # nothing of its claim changed
            ttl = max(writing.claim_until - time.monotonic(), self._lease)
            claimed = Write("put", f"answer:{key}", writing.claim.dumps(), ttl)
            await self._state.write_all([claimed, Write("enlist", self._answers, key, ttl)])

    def stop_taking_over(self) -> None:
        """Stopping: what is left unfinished now is for the other replicas to answer."""
        self._may_take_over = False

    async def _take_over_orphans(self, resume: Resume) -> None:
        mine = self._writing.keys() | self._taking_over.keys()
        others = [key for key in await self._state.members(self._answers) if key not in mine]
        leases = await self._state.get_many([f"lease:{key}" for key in others])
        for key in (key for key, lease in zip(others, leases, strict=True) if lease is None):
            if not self._may_take_over:  # it began stopping meanwhile
                return
            # Held until the new answer holds the claim: should this replica die first, the takeover
            # expires and another replica takes the question over.
            if not await self._state.claim(f"takeover:{key}", self._lease, self.replica):
                continue  # another replica has it
            # Read again now that the takeover is ours: another replica may have taken the question over
            # since the lease was read, its new answer holding the lease and letting go of its takeover.
            lease, value = await self._state.get_many([f"lease:{key}", f"answer:{key}"])
            if lease is not None:  # held again: that answer's replica writes it
                await self._state.release(f"takeover:{key}", self.replica)
                continue
            if value is None:  # ended meanwhile, or not where this replica looks (Redis refusing writes)
                await self._state.release(f"takeover:{key}", self.replica)  # its index entry expires
                continue
            claim = Claim.loads(value)
            if claim is None:  # not a claim this version can read
                await self._state.write_all(self._let_go_of(key, unclaim=True))
                continue
            # Stop pressed after its replica died: nobody was there to see the flag.
            flag = await self._state.get(self._stop_key(claim.channel, claim.thread_ts or claim.ts))
            asked_at = _seconds(claim.ts)
            log.info("taking over a %s answer whose replica stopped", claim.surface)
            task = asyncio.create_task(self._resume(key, claim, _pressed_after(flag, asked_at), resume))
            self._taking_over[key] = _TakingOver(task, asked_at)
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)

    async def _resume(self, key: str, claim: Claim, stopped: bool, resume: Resume) -> None:
        """Answer a question taken over again. Its claim stays until the new answer, under the same key,
        holds it (`hold`). If none does, the question is not answered again here (it is gone, or its
        asker refused) and the claim goes; if this replica stops first, or Slack failed to give the
        question again, another sweep takes it over while the claim lasts."""
        kept = False
        try:
            await resume(claim, stopped)
        except asyncio.CancelledError:
            kept = True
            raise
        except Exception as exc:
            kept = True
            log.warning(
                "a question taken over was not read again (%s); a later sweep tries", type(exc).__name__
            )
        finally:
            if self._taking_over.pop(key, None) is not None:
                await asyncio.shield(self._state.write_all(self._let_go_of(key, unclaim=not kept)))

    def _let_go_of(self, key: str, *, unclaim: bool) -> list[Write]:
        """The takeover ends; with `unclaim`, so does the question's claim."""
        release = Write("release", f"takeover:{key}", self.replica)
        return [*self._unclaimed(key), release] if unclaim else [release]

    async def let_go(self) -> None:
        """Stopping: the questions taken over here and not yet answered are left to another replica."""
        taking_over = [each.task for each in self._taking_over.values()]
        for task in taking_over:
            task.cancel()
        await asyncio.gather(*taking_over, return_exceptions=True)


def _stop_once(task: asyncio.Task[None]) -> None:
    """A second press (or the same flag seen at the next poll) must not cancel the answer's ending: its
    note, its stream's stop, the clearing of its status."""
    if not task.cancelling():
        task.cancel()


def _pressed_after(flag: str | None, since: float) -> bool:
    """Whether a Stop flag (when it was pressed) came after `since` (time.time()); one that does not
    say when stops all."""
    return flag is not None and _seconds(flag, default=float("inf")) >= since


def _seconds(value: str, default: float = 0.0) -> float:
    try:
        return float(value)
    except ValueError:
        return default


def _thread_of(ask: Ask) -> str | None:
    match ask.reply_to:
        case InConversation(_, thread_ts) if thread_ts is not None and thread_ts != ask.message.ts:
            return thread_ts
    return None
