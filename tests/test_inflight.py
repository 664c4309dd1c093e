"""Answers in flight (bot.pipeline.inflight), on a real Redis and through the pipeline: the watch, the
beginning and the end of an answer, and a cancel, may interleave, as they do when a burst's answers all
begin or end at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.answer import _person
from bot.pipeline.ask import Ask, BotIdentity, InConversation, Origin, Reaction, SlackMessage, Thread
from bot.pipeline.inflight import Claim, InFlight, Resume
from bot.pipeline.reply import open_writer
from bot.state import MemoryState, RedisState, Renewal, State, StateKeys, Write
from bot.surfaces import mention as mention_surface
from bot.surfaces import resumed, shortcuts
from tests.conftest import ALICE, CHANNEL, mention, running_bot, said
from tests.redis_server import Cuttable, RedisServer, in_use


class Held(RedisState):
    """RedisState whose calls named in `hold` wait for `go`: what else runs meanwhile is the test's to
    choose; `written` is set once a held write_all has gone through."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.hold: set[str] = set()
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()
        self.written = asyncio.Event()

    async def _held(self, name: str) -> None:
        if name in self.hold:
            self.waiting.set()
            await self.go.wait()

    async def renew(self, key: str, owner: str, ttl: float, *, unless: str | None = None) -> Renewal:
        await self._held("renew")
        return await super().renew(key, owner, ttl, unless=unless)

    async def get_many(self, keys: list[str]) -> list[str | None]:
        await self._held("get_many")
        return await super().get_many(keys)

    async def write_all(self, writes: list[Write]) -> None:
        await self._held("write_all")
        await super().write_all(writes)
        if "write_all" in self.hold:
            self.written.set()


@pytest.fixture
async def state(redis_server: RedisServer) -> AsyncIterator[Held]:
    async with in_use(Held(redis_server.url), redis_server) as shared:
        yield shared


def replica(state: State) -> InFlight:
    """One replica's answers in flight."""
    return InFlight(state, StateKeys("xoxb-test"), lease_seconds=15, deadline_seconds=60)


def never_called() -> AsyncWebClient:
    """A Slack client for writers the test never lets write."""
    return AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/")


def mention_in_thread(ts: str) -> Ask:
    return Ask(
        request_id=f"Ev{ts}",
        surface="mention",
        origin=Origin("U0ALICE", "T0TEAM", channel_id="C0GENERAL"),
        message=SlackMessage(ts, "what did we decide?", user="U0ALICE"),
        history=Thread("C0GENERAL", "1700000000.000100"),
        reply_to=InConversation("C0GENERAL", "1700000000.000100"),
        bot=BotIdentity("U0BOT", "B0BOT"),
        progress=Reaction("C0GENERAL", ts),
    )


@pytest.mark.parametrize("watching", ["renewing leases", "reading stop flags"])
async def test_an_answer_that_ends_while_the_watch_awaits_redis_is_left_to_finish(
    state: Held, watching: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its task is still finishing (clearing progress, say): cancelling it, as lost or as stopped, could
    cut the very writes that release its claim, and another replica would answer the question again."""
    in_flight = replica(state)
    slack = never_called()
    finishing = asyncio.Event()
    tasks = [asyncio.create_task(finishing.wait()) for _ in range(2)]
    asks = [mention_in_thread(f"1700000000.00020{i}") for i in range(2)]
    pairs = zip(asks, tasks, strict=True)
    keys = [await in_flight.begin(ask, task, open_writer(slack, ask)) for ask, task in pairs]
    if watching == "reading stop flags":  # a Stop for their thread, pressed through another replica
        other = replica(state)
        assert not await other.stop("C0GENERAL", "1700000000.000100")
    state.hold = {"renew", "get_many"}
    with caplog.at_level(logging.INFO, logger="bot"):
        watch = in_flight._renew_leases if watching == "renewing leases" else in_flight._look_for_stops
        running = asyncio.create_task(watch())
        await state.waiting.wait()  # the watch awaits Redis; the second answer ends meanwhile
        await in_flight.end(keys[1])
        state.go.set()
        await running
    assert not tasks[1].done()
    assert "lease was lost" not in caplog.text
    finishing.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await in_flight.end(keys[0])


@pytest.mark.parametrize("watching", ["renewing leases", "reading stop flags"])
async def test_an_answer_whose_claim_is_still_on_its_way_is_not_taken_for_lost_or_stopped(
    state: Held, watching: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch may come round while an answer's first writes are on their way to Redis: its lease is not
    there yet (taken for lost, the answer was cancelled and, no replica having taken it over, never
    given), or an earlier Stop in its thread not yet deleted (taken for a Stop of this answer)."""
    in_flight = replica(state)
    slack = never_called()
    if watching == "reading stop flags":  # pressed for an earlier answer in the thread
        other = replica(state)
        assert not await other.stop("C0GENERAL", "1700000000.000100")
    answering = asyncio.create_task(asyncio.Event().wait())
    ask = mention_in_thread("1700000000.000400")
    state.hold = {"write_all"}
    beginning = asyncio.create_task(in_flight.begin(ask, answering, open_writer(slack, ask)))
    await state.waiting.wait()
    with caplog.at_level(logging.INFO, logger="bot"):
        await (in_flight._renew_leases() if watching == "renewing leases" else in_flight._look_for_stops())
        state.go.set()
        key = await beginning
        await asyncio.sleep(0)  # a cancel would have landed by now
    assert not answering.done()
    assert "lease was lost" not in caplog.text and "stop for an answer" not in caplog.text
    answering.cancel()
    state.hold = set()
    await in_flight.end(key)


async def test_a_cancel_while_an_answer_ends_still_releases_its_claim(
    state: Held, redis_server: RedisServer
) -> None:
    """A Stop or the drain may land while the end's writes are on their way to Redis."""
    in_flight = replica(state)
    slack = never_called()
    ask = mention_in_thread("1700000000.000300")
    task = asyncio.current_task()
    assert task is not None
    key = await in_flight.begin(ask, task, open_writer(slack, ask))
    state.hold = {"write_all"}
    ending = asyncio.create_task(in_flight.end(key))
    await state.waiting.wait()
    ending.cancel()
    state.go.set()
    await asyncio.gather(ending, return_exceptions=True)
    await asyncio.wait_for(state.written.wait(), 5)  # times out if the cancel cut the writes
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        kept = sorted(k.decode().split(":")[0] for k in await raw.keys("*"))
    finally:
        await raw.aclose()
    assert kept == []  # no claim, no lease, no index entry left to be taken over and answered again


async def test_an_answer_that_ends_before_its_claim_is_written_leaves_no_claim(
    state: Held, redis_server: RedisServer
) -> None:
    """A question is claimed as it arrives, meanwhile (a refusal may end it at once): the end's writes
    wait for the claim's, or the claim would land after its end and be answered again."""
    in_flight = replica(state)
    ask = mention_in_thread("1700000000.000500")
    task = asyncio.current_task()
    assert task is not None
    state.hold = {"write_all"}
    key = in_flight.enter(ask, task, open_writer(never_called(), ask))
    await state.waiting.wait()  # the claim on its way
    ending = asyncio.create_task(in_flight.end(key))
    await asyncio.sleep(0)
    state.hold = set()
    state.go.set()
    await ending
    assert await redis_keys(redis_server) == []


async def test_two_commands_in_one_channel_are_two_answers_in_flight(state: Held) -> None:
    """A slash command's or a shortcut's Ask has no message ts of its own: its request id tells it apart,
    or the first to end would end the other's too (and the other fail on its next step)."""
    in_flight = replica(state)
    task = asyncio.current_task()
    assert task is not None
    asks = [
        replace(mention_in_thread("0"), surface="slash_command", request_id=trigger)
        for trigger in ("trigger-1", "trigger-2")
    ]
    keys = [in_flight.enter(ask, task, open_writer(never_called(), ask)) for ask in asks]
    await in_flight.end(keys[1])
    await in_flight.held(keys[0])  # still known here
    await in_flight.end(keys[0])
    assert keys[0] != keys[1]


async def test_two_shortcuts_on_one_thread_are_two_answers_in_flight(state: Held) -> None:
    """Used twice at once on the same message (two people, or one twice): each is its own answer, or
    the first to end would take the other's with it."""
    in_flight = replica(state)
    task = asyncio.current_task()
    assert task is not None
    used = [
        shortcuts.ShortcutThread("T0TEAM", "U0ALICE", "C0GENERAL", "1700000000.000100", f"{url}")
        for url in ("https://hooks.slack.test/1", "https://hooks.slack.test/2")
    ]
    asks = [thread.to_ask("summarize", BotIdentity("U0BOT", "B0BOT"), None) for thread in used]
    keys = [in_flight.enter(ask, task, open_writer(never_called(), ask)) for ask in asks]
    await in_flight.end(keys[0])
    await in_flight.held(keys[1])  # still known here
    await in_flight.end(keys[1])


async def redis_keys(redis_server: RedisServer) -> list[str]:
    """Every key in Redis, by kind (answer, lease, takeover, ...)."""
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        return sorted(k.decode().split(":")[0] for k in await raw.keys("*"))
    finally:
        await raw.aclose()


async def orphan(state: State, ask: Ask) -> InFlight:
    """A replica that claimed an answer, then died: its claim is left, its lease gone."""
    dead = replica(state)
    slack = never_called()
    task = asyncio.create_task(asyncio.Event().wait())
    key = await dead.begin(ask, task, open_writer(slack, ask))
    await state.release(f"lease:{key}", dead.replica)
    task.cancel()
    return dead


def recording(taken: list[Claim]) -> Resume:
    """A resume that only notes what it was given, as when the question is gone from Slack."""

    async def resume(claim: Claim, _stopped: bool) -> None:
        taken.append(claim)

    return resume


def resuming_into(slack, answered: list[Ask]) -> Resume:
    """The real resume over the fake Slack, whose pipeline only notes the Asks it is given."""

    async def answer(again: Ask) -> None:
        answered.append(again)

    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    return resumed.resumer(client, BotIdentity("U0BOT", "B0BOT"), answer)


async def test_a_question_taken_over_keeps_its_claim_until_its_new_answer_holds_it(
    state: Held, redis_server: RedisServer
) -> None:
    """Should the replica that took it over die before it answers, the claim is still there for another,
    once the takeover (renewed while it lasts) runs out."""
    ask = mention_in_thread("1700000000.000500")
    await orphan(state, ask)
    taker, third = replica(state), replica(state)
    reading_again, taken = asyncio.Event(), list[Claim]()

    async def resume(claim: Claim, _stopped: bool) -> None:
        taken.append(claim)
        await reading_again.wait()  # Slack is being asked for the question again
        task = asyncio.current_task()
        assert task is not None
        await taker.end(await taker.begin(ask, task, open_writer(never_called(), ask)))

    await taker._take_over_orphans(resume)
    await asyncio.sleep(0)  # the resume has begun
    assert len(taken) == 1
    assert await redis_keys(redis_server) == ["answer", "answers", "takeover"]
    await taker._renew_leases()  # the takeover is renewed, not let lapse
    await third._take_over_orphans(resume)
    assert len(taken) == 1  # the third leaves it to the taker
    reading_again.set()
    await asyncio.gather(*taker._resuming)
    assert await redis_keys(redis_server) == []  # answered: nothing left to take over


async def test_a_question_taken_over_that_is_not_answered_again_lets_its_claim_go(
    state: Held, redis_server: RedisServer
) -> None:
    """The question was deleted meanwhile, say: no replica takes it over again and again."""
    await orphan(state, mention_in_thread("1700000000.000600"))
    taker = replica(state)
    taken: list[Claim] = []
    resume = recording(taken)

    await taker._take_over_orphans(resume)
    await asyncio.gather(*taker._resuming)
    await taker._take_over_orphans(resume)
    assert len(taken) == 1
    assert await redis_keys(redis_server) == []


async def test_a_replica_that_is_stopping_takes_nothing_over(state: Held, redis_server: RedisServer) -> None:
    """Its own answers handed over in the drain, or another's: it would only read the question again
    and turn it away, while the replica that will answer it waits."""
    await orphan(state, mention_in_thread("1700000000.000700"))
    stopping = replica(state)
    taken: list[Claim] = []
    resume = recording(taken)

    stopping.stop_taking_over()
    await stopping._take_over_orphans(resume)
    assert taken == []
    assert await redis_keys(redis_server) == ["answer", "answers"]  # left for another replica


class HeldBegin(MemoryState):
    """Holds the writes that begin the first answer until the test lets them land. Like commands already
    sent to Redis, they land even if their caller gives up, and later writes land after them."""

    def __init__(self) -> None:
        super().__init__()
        self.writing, self.land = asyncio.Event(), asyncio.Event()
        self._first: asyncio.Future[None] | None = None

    async def write_all(self, writes: Sequence[Write]) -> None:
        if self._first is None and any(w.kind == "put" and w.key.startswith("lease:") for w in writes):
            self.writing.set()
            self._first = asyncio.ensure_future(self._landing(writes))
            await asyncio.shield(self._first)
            return
        if self._first is not None:
            await asyncio.shield(self._first)
        await super().write_all(writes)

    async def _landing(self, writes: Sequence[Write]) -> None:
        await self.land.wait()
        await super().write_all(writes)


async def test_an_answer_stopped_as_it_begins_is_ended_not_left_claimed(slack, claude) -> None:
    """Cancelled while its claim was on its way to Redis (a Stop through agent_session_stopped, the
    drain), an answer skipped the pipeline's ending: its claim stayed, to be taken over once its lease
    ran out and answered after all, and this replica kept it among its answers for good."""
    held = HeldBegin()
    async with running_bot(slack, claude, {}, held) as bot:
        await bot.send_event(mention("<@U0BOT> hi", ts="9.000000"))
        await held.writing.wait()
        assert await bot.pipeline.stop(CHANNEL, "9.000000")
        held.land.set()
        await asyncio.wait_for(bot.pipeline.wait_idle(), 5)
        assert not bot.pipeline.in_flight._writing
        assert await held.members(bot.pipeline.in_flight._answers) == []
        assert not [key for key in held._items if key.startswith(("lease:", "answer:"))]
    assert not claude.requests


@pytest.fixture
async def outage(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, Cuttable, RedisState]]:
    """A Redis of the test's own behind a hop the test cuts and restores, and a replica's State on it."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        async with Cuttable(server) as network:
            state = RedisState(network.url, retry_seconds=0.05)
            try:
                await state.ping()
                yield server, network, state
            finally:
                await state.close()
    finally:
        server.stop()


async def back(server: RedisServer, network: Cuttable, *, emptied: bool = False) -> None:
    """Redis answers again (restarted, it holds nothing: it keeps nothing on disk); the next call tries it."""
    if emptied:
        server.stop()
        server.start()
    network.restore()
    await asyncio.sleep(0.1)


async def in_redis(server: RedisServer, in_flight: InFlight) -> tuple[list[str], list[str]]:
    """The kinds of key in Redis, and the answers its index lists."""
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        keys = sorted(k.split(":")[0] for k in await raw.keys("*"))
        return keys, list(await raw.zrange(in_flight._answers, 0, -1))
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    "outage_at",
    ["after the answer began", "before the answer began", "a restart that empties Redis"],
)
async def test_an_answer_outlives_a_redis_outage_and_is_claimed_in_redis_again(
    outage: tuple[RedisServer, Cuttable, RedisState], outage_at: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal that finds no lease where it looks (this process's memory in the outage, Redis once it
    is back) has lost nothing to another replica: cancelled as lost, the answer was cut unmarked and, its
    claim being nowhere another replica looks, never answered again."""
    server, network, state = outage
    in_flight = replica(state)
    answering = asyncio.create_task(asyncio.Event().wait())
    ask = mention_in_thread("1700000000.000500")
    if outage_at == "before the answer began":
        network.cut()
    key = await in_flight.begin(ask, answering, open_writer(never_called(), ask))
    with caplog.at_level(logging.INFO, logger="bot"):
        if outage_at != "before the answer began":
            network.cut()
            await in_flight._renew_leases()  # in the outage
        await back(server, network, emptied=outage_at == "a restart that empties Redis")
        await in_flight._renew_leases()
        await asyncio.sleep(0)  # a cancel would have landed by now
    assert not answering.done()
    assert "lease was lost" not in caplog.text
    assert await in_redis(server, in_flight) == (["answer", "answers", "lease"], [key])
    answering.cancel()
    await in_flight.end(key)
    assert await in_redis(server, in_flight) == ([], [])


async def test_an_answer_that_ends_in_a_redis_outage_leaves_no_claim_to_answer_again(
    outage: tuple[RedisServer, Cuttable, RedisState],
) -> None:
    """Its end went to this process's memory; the claim it had put in Redis, left there, would be taken
    for an orphan once its lease expired, and the question answered twice."""
    server, network, state = outage
    in_flight = replica(state)
    ask = mention_in_thread("1700000000.000600")
    task = asyncio.create_task(asyncio.Event().wait())
    key = await in_flight.begin(ask, task, open_writer(never_called(), ask))
    network.cut()
    await in_flight.end(key)
    task.cancel()
    await back(server, network)
    await state.get("anything")  # the first call after the outage
    assert await in_redis(server, in_flight) == ([], [])


@pytest.mark.parametrize("taken_by", ["its new answer", "a takeover"])
async def test_an_answer_another_replica_took_over_is_cancelled_as_lost(
    state: Held, taken_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    in_flight, other = replica(state), replica(state)
    answering = asyncio.create_task(asyncio.Event().wait())
    ask = mention_in_thread("1700000000.000700")
    key = await in_flight.begin(ask, answering, open_writer(never_called(), ask))
    await state.delete(f"lease:{key}")  # it expired, this replica stalled
    if taken_by == "its new answer":
        await state.put(f"lease:{key}", other.replica, 15)
    else:
        assert await state.claim(f"takeover:{key}", 15, other.replica)
    with caplog.at_level(logging.INFO, logger="bot"):
        await in_flight._renew_leases()
        await asyncio.gather(answering, return_exceptions=True)
    assert answering.cancelled() and "lease was lost" in caplog.text
    await in_flight.end(key)


async def test_a_question_taken_over_is_not_counted_again_against_its_askers_rate_limit(
    slack, claude
) -> None:
    """It was counted when it first arrived; counted again, an asker at the limit was refused it, and the
    question, its cut answer already marked as answered again below, was never answered."""
    state = MemoryState()
    async with running_bot(slack, claude, {"USER_REQUESTS_PER_MINUTE": "1"}, state) as bot:
        ts, text = "40.000001", "<@U0BOT> question"
        slack.add_history(CHANNEL, [said(ALICE, text, ts)])
        event = mention(text, ts=ts)
        body = {"type": "event_callback", "team_id": "T0TEAM", "event_id": "Ev1", "event": event}
        ask = mention_surface.to_ask(body, BotIdentity("U0BOT", "B0BOT"))
        assert ask is not None
        assert await bot.pipeline._rate_limit.allow(*_person(ask))  # as the replica that died counted it
        await orphan(state, ask)
        await claude.wait_for_requests(timeout=10)  # the watch sweeps every 2 s
        await slack.wait_for("reactions.remove", timeout=10)
    assert not slack.calls_to("chat.postEphemeral")


async def test_an_answer_lost_to_another_replica_leaves_that_replicas_claim(
    state: Held, redis_server: RedisServer
) -> None:
    """Its lease ran out (a long pause, say) and another replica took the question over, under the same
    key: ending the lost answer must not delete the claim the new answer holds, or nobody would answer
    again should that replica die too."""
    ask = mention_in_thread("1700000000.000800")
    paused = replica(state)
    answering = asyncio.create_task(asyncio.Event().wait())
    key = await paused.begin(ask, answering, open_writer(never_called(), ask))
    await state.release(f"lease:{key}", paused.replica)  # run out while the replica was paused
    taker = replica(state)
    new_answer = asyncio.create_task(asyncio.Event().wait())

    async def resume(_claim: Claim, _stopped: bool) -> None:
        await taker.begin(ask, new_answer, open_writer(never_called(), ask))

    await taker._take_over_orphans(resume)
    await asyncio.gather(*taker._resuming)
    await paused._renew_leases()  # finds the lease another's: the answer is cancelled as lost
    await asyncio.gather(answering, return_exceptions=True)
    await paused.end(key)
    assert await redis_keys(redis_server) == ["answer", "answers", "lease"]
    assert await state.members(taker._answers) == [key]
    new_answer.cancel()


async def test_an_answer_renewed_through_an_outage_longer_than_its_lease_is_not_taken_over(
    outage: tuple[RedisServer, Cuttable, RedisState],
) -> None:
    """Its lease ran out in Redis while the replica, cut off, renewed it in its own memory: once Redis is
    back, the renewals made meanwhile land there with the rest of what it owes, before another replica's
    sweep finds the claim unheld and answers the question a second time."""
    server, network, state = outage
    in_flight = replica(state)
    answering = asyncio.create_task(asyncio.Event().wait())
    ask = mention_in_thread("1700000000.000900")
    key = await in_flight.begin(ask, answering, open_writer(never_called(), ask))
    network.cut()
    raw = aioredis.Redis.from_url(server.url)
    try:
        await raw.delete(f"lease:{key}")  # what the outage's length does to it
    finally:
        await raw.aclose()
    await in_flight._renew_leases()  # in the outage, in this process's memory
    await back(server, network)
    await in_flight._look_for_stops()  # its first call once Redis is back sends what it owes
    other = RedisState(server.url)
    try:
        taken: list[Claim] = []
        await replica(other)._take_over_orphans(recording(taken))
    finally:
        await other.close()
    assert taken == []
    assert not answering.done()
    answering.cancel()


async def test_a_stop_pressed_after_its_replica_died_is_kept_by_the_takeover(state: Held, slack) -> None:
    """Nobody was there to see the Stop flag: the replica taking the question over marks the cut answer
    as stopped and does not answer it again."""
    ask = mention_in_thread("1700000000.001000")
    dead = await orphan(state, ask)
    key = next(iter(await state.members(dead._answers)))
    value = await state.get(f"answer:{key}")
    assert value is not None
    shown = replace(Claim.loads(value) or Claim("", "", "", None, None), reply_ts="1700000000.001001")
    await state.put(f"answer:{key}", replace(shown, reply_kind="stream").dumps(), 60)
    assert not await replica(state).stop("C0GENERAL", "1700000000.000100")  # through another replica
    answered: list[Ask] = []
    taker = replica(state)
    await taker._take_over_orphans(resuming_into(slack, answered))
    await asyncio.gather(*taker._resuming)
    assert answered == []
    [mark] = slack.calls_to("chat.stopStream")
    assert mark.params["markdown_text"] == "\n\n_(Stopped.)_"
    assert await state.members(dead._answers) == []  # nothing left to take over


async def test_a_stop_pressed_while_a_takeover_reads_the_question_again_stops_its_new_answer(
    state: Held,
) -> None:
    """The reader stopped the cut answer after the sweep looked for a Stop, while the question was being
    read again: the new answer is what that Stop is for, though it is shown only after it."""
    ask = mention_in_thread("1700000000.001050")
    await orphan(state, ask)
    taker = replica(state)
    answering = asyncio.create_task(asyncio.Event().wait())
    keys: list[str] = []

    async def resume(_claim: Claim, stopped: bool) -> None:
        assert not stopped
        assert not await replica(state).stop("C0GENERAL", "1700000000.000100")  # meanwhile, elsewhere
        keys.append(await taker.begin(ask, answering, open_writer(never_called(), ask)))

    await taker._take_over_orphans(resume)
    await asyncio.gather(*taker._resuming)
    await taker._look_for_stops()
    await asyncio.sleep(0)  # a cancel would have landed by now
    stopped = answering.cancelled()
    answering.cancel()
    await asyncio.gather(answering, return_exceptions=True)
    await taker.end(keys[0])
    assert stopped


async def test_a_takeover_that_cannot_read_the_question_yet_leaves_it_for_the_next_sweep(
    state: Held, slack, redis_server: RedisServer
) -> None:
    """Slack failing the read once (a 500, a rate limit) is not the question gone: its claim stays for
    the next sweep, and the cut answer is not told "answering again below" until it is read."""
    ask = mention_in_thread("1700000000.001100")
    slack.add_thread(
        "C0GENERAL",
        [said(ALICE, "root", "1700000000.000100"), said(ALICE, "<@U0BOT> decide?", "1700000000.001100")],
    )
    await orphan(state, ask)
    answered: list[Ask] = []
    resume = resuming_into(slack, answered)
    taker = replica(state)
    slack.fail("conversations.replies", error="internal_error", status=500)
    await taker._take_over_orphans(resume)
    await asyncio.gather(*taker._resuming)
    assert answered == []
    assert await redis_keys(redis_server) == ["answer", "answers"]  # the takeover let go, the claim kept
    await taker._take_over_orphans(resume)
    await asyncio.gather(*taker._resuming)
    assert [again.message.ts for again in answered] == ["1700000000.001100"]


async def test_an_answer_that_outlasts_its_claims_time_keeps_its_claim(
    state: Held, redis_server: RedisServer
) -> None:
    """The claim is written on arrival, for the deadline and a lease; the deadline runs from the answer's
    start, after the lane and the access check, so a busy arrival's answer can outlast it. While the
    answer is written its claim is kept, or a replica dying now would leave the question to nobody."""
    in_flight = replica(state)
    answering = asyncio.create_task(asyncio.Event().wait())
    ask = mention_in_thread("1700000000.001200")
    key = await in_flight.begin(ask, answering, open_writer(never_called(), ask))
    raw = aioredis.Redis.from_url(redis_server.url)
    try:  # what a minute in the lane and the access check leaves of its time
        await raw.pexpire(f"answer:{key}", 2000)
        in_flight._writing[key].claim_until = time.monotonic() + 2
        await in_flight._renew_leases()
        assert await raw.pttl(f"answer:{key}") > 15_000  # another lease at least
        [(_, until)] = await raw.zrange(in_flight._answers, 0, -1, withscores=True)
        [(now_s, now_us)] = [await raw.time()]
        assert until - (now_s * 1000 + now_us / 1000) > 15_000
    finally:
        await raw.aclose()
    answering.cancel()
    await in_flight.end(key)


async def test_a_stop_through_another_replica_stops_the_answer_shown_not_the_next_question(
    state: Held,
) -> None:
    """A second question in the thread, still in its access check, is not what the reader stopped: the
    Stop ends the answer being shown, as a Stop pressed here does."""
    in_flight = replica(state)
    tasks = [asyncio.create_task(asyncio.Event().wait()) for _ in range(2)]
    asks = [mention_in_thread(f"1700000000.00130{i}") for i in range(2)]
    shown = await in_flight.begin(asks[0], tasks[0], open_writer(never_called(), asks[0]))
    checking = in_flight.enter(asks[1], tasks[1], open_writer(never_called(), asks[1]))
    holding = in_flight._writing[checking].holding
    assert holding is not None
    await holding  # claimed, not yet shown
    assert not await replica(state).stop("C0GENERAL", "1700000000.000100")
    await in_flight._look_for_stops()
    await asyncio.gather(tasks[0], return_exceptions=True)
    await in_flight.end(shown)
    await in_flight.held(checking)  # let in: it is shown from now on
    await in_flight._look_for_stops()
    await asyncio.sleep(0)  # a cancel would have landed by now
    assert tasks[0].cancelled() and not tasks[1].done()
    tasks[1].cancel()
    await in_flight.end(checking)


async def test_a_stop_through_another_replica_ends_every_answer_shown_in_the_thread(state: Held) -> None:
    """Two questions in one thread, answered by two replicas: the Stop, pressed through a third, ends the
    answers the reader saw, whichever replica looks for the flag first."""
    older_replica, newer_replica = replica(state), replica(state)
    older = asyncio.create_task(asyncio.Event().wait())
    newer = asyncio.create_task(asyncio.Event().wait())
    ask_older, ask_newer = mention_in_thread("1700000000.001400"), mention_in_thread("1700000000.001401")
    key_older = await older_replica.begin(ask_older, older, open_writer(never_called(), ask_older))
    key_newer = await newer_replica.begin(ask_newer, newer, open_writer(never_called(), ask_newer))
    assert not await replica(state).stop("C0GENERAL", "1700000000.000100")
    await newer_replica._look_for_stops()  # this one's poll comes round first
    await older_replica._look_for_stops()
    await asyncio.gather(older, newer, return_exceptions=True)
    await older_replica.end(key_older)
    await newer_replica.end(key_newer)
    assert older.cancelled() and newer.cancelled()


async def test_a_stop_for_an_answer_does_not_stop_a_question_shown_after_it(state: Held) -> None:
    """The Stop was for the first answer, which then ended before the next poll: the second question,
    shown only after the Stop, goes on."""
    in_flight = replica(state)
    first = asyncio.create_task(asyncio.Event().wait())
    second = asyncio.create_task(asyncio.Event().wait())
    ask_first, ask_second = mention_in_thread("1700000000.001500"), mention_in_thread("1700000000.001501")
    key_first = await in_flight.begin(ask_first, first, open_writer(never_called(), ask_first))
    assert not await replica(state).stop("C0GENERAL", "1700000000.000100")  # for the first answer
    key_second = await in_flight.begin(ask_second, second, open_writer(never_called(), ask_second))
    first.cancel()  # the first answer ends (finished on its own) before the next poll
    await asyncio.gather(first, return_exceptions=True)
    await in_flight.end(key_first)
    await in_flight._look_for_stops()
    await asyncio.sleep(0)  # a cancel would have landed by now
    assert not second.done()
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    await in_flight.end(key_second)


async def test_a_sweep_while_redis_refuses_writes_leaves_the_orphans_claim(tmp_path: Path) -> None:
    """Full (maxmemory, noeviction), Redis still answers reads: the sweep sees another replica's orphan
    there, but its takeover and what follows go to this process's memory, where the claim is not. The
    orphan must still be there to answer once Redis takes writes again, not deleted by what was owed."""
    server = RedisServer(tmp_path)
    server.start()
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    state = RedisState(server.url, retry_seconds=0.3)
    try:
        dead = await orphan(state, mention_in_thread("1700000000.001600"))
        [key] = await state.members(dead._answers)
        await raw.config_set("maxmemory", "1")
        taken: list[Claim] = []
        taker = replica(state)
        await taker._take_over_orphans(recording(taken))
        await asyncio.gather(*taker._resuming)
        await raw.config_set("maxmemory", "0")
        await asyncio.sleep(0.4)  # past the retry interval: the next call sends what is owed
        await state.get("anything")
        left = await raw.exists(f"answer:{key}"), await raw.zrange(dead._answers, 0, -1)
    finally:
        await state.close()
        await raw.aclose()
        server.stop()
    assert taken == [] and left == (1, [key])


async def test_a_stop_seen_again_at_the_next_poll_lets_the_answer_end(state: Held) -> None:
    """The flag stays for a while, and an answer's ending (its note, its status cleared) waits on Slack:
    the next poll must not cancel that ending too."""
    in_flight = replica(state)
    ending, ended = asyncio.Event(), asyncio.Event()

    async def answer() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await ending.wait()
            ended.set()

    task = asyncio.create_task(answer())
    ask = mention_in_thread("1700000000.001600")
    key = await in_flight.begin(ask, task, open_writer(never_called(), ask))
    assert not await replica(state).stop("C0GENERAL", "1700000000.000100")
    await in_flight._look_for_stops()
    await asyncio.sleep(0)  # the cancel lands: the answer is ending
    await in_flight._look_for_stops()
    ending.set()
    await asyncio.gather(task, return_exceptions=True)
    await in_flight.end(key)
    assert ended.is_set()


async def test_an_answer_that_finishes_after_another_replica_took_it_over_leaves_that_replicas_claim(
    state: Held, redis_server: RedisServer
) -> None:
    """Its lease ran out while the replica was paused, another replica took the question over under the
    same key, and the paused answer then finished before its next renewal could find it lost: its end
    must not delete the claim (or the index entry) the new answer holds, or nobody would answer again
    should that replica die too."""
    ask = mention_in_thread("1700000000.000850")
    paused = replica(state)
    answering = asyncio.create_task(asyncio.Event().wait())
    key = await paused.begin(ask, answering, open_writer(never_called(), ask))
    await state.release(f"lease:{key}", paused.replica)  # run out while the replica was paused
    taker = replica(state)
    new_answer = asyncio.create_task(asyncio.Event().wait())

    async def resume(_claim: Claim, _stopped: bool) -> None:
        await taker.begin(ask, new_answer, open_writer(never_called(), ask))

    await taker._take_over_orphans(resume)
    await asyncio.gather(*taker._resuming)
    answering.cancel()  # the paused answer finishes on its own, no renewal in between
    await asyncio.gather(answering, return_exceptions=True)
    await paused.end(key)
    assert await redis_keys(redis_server) == ["answer", "answers", "lease"]
    assert await state.members(taker._answers) == [key]
    assert await state.get(f"lease:{key}") == taker.replica
    new_answer.cancel()
    await asyncio.gather(new_answer, return_exceptions=True)
    await taker.end(key)
    assert await redis_keys(redis_server) == []


class HeldTakeover(RedisState):
    """RedisState whose first claim of a takeover waits for `go`: the sweep has found the lease gone and
    is about to take the question over."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.waiting, self.go = asyncio.Event(), asyncio.Event()

    async def claim(self, key: str, ttl: float, owner: str = "1") -> bool:
        if key.startswith("takeover:") and not self.go.is_set():
            self.waiting.set()
            await self.go.wait()
        return await super().claim(key, ttl, owner)


async def test_a_sweep_that_saw_a_question_unheld_while_another_took_it_over_does_not_take_it_again(
    state: Held, redis_server: RedisServer
) -> None:
    """A third replica's sweep read the lease (gone: the taker was reading the question again), then the
    taker's new answer held the claim and let go of its takeover before the third claimed the takeover.
    Not looking at the lease again, the third answered the question a second time."""
    ask = mention_in_thread("1700000000.001700")
    await orphan(state, ask)
    taker = replica(state)
    reading_again, holding = asyncio.Event(), asyncio.Event()
    new_answer = asyncio.create_task(asyncio.Event().wait())
    keys: list[str] = []

    async def resume(_claim: Claim, _stopped: bool) -> None:
        await reading_again.wait()
        keys.append(await taker.begin(ask, new_answer, open_writer(never_called(), ask)))
        holding.set()

    await taker._take_over_orphans(resume)
    async with in_use(HeldTakeover(redis_server.url), redis_server) as late:
        third = replica(late)
        taken: list[Claim] = []
        sweeping = asyncio.create_task(third._take_over_orphans(recording(taken)))
        await late.waiting.wait()  # it saw no lease
        reading_again.set()
        await holding.wait()  # the taker's new answer holds the claim
        late.go.set()
        await sweeping
        await asyncio.gather(*third._resuming)
        assert taken == []
        assert await state.get(f"lease:{keys[0]}") == taker.replica
    new_answer.cancel()
    await asyncio.gather(new_answer, *taker._resuming, return_exceptions=True)
    await taker.end(keys[0])


async def test_an_answer_shown_is_named_in_its_claim_before_the_next_renewal(
    state: Held, slack, redis_server: RedisServer
) -> None:
    """A replica killed in the first third of a lease after its answer began to show (most answers are
    short) left a claim that named no stream: the replica that took it over could not end the cut
    stream with its note, and the reader saw a partial answer, unexplained, above the new one."""
    in_flight = InFlight(state, StateKeys("xoxb-test"), lease_seconds=300, deadline_seconds=60)
    ask = mention_in_thread("1700000000.001800")
    writer = open_writer(AsyncWebClient(token="xoxb-test", base_url=slack.api_url), ask)
    answering = asyncio.create_task(asyncio.Event().wait())
    key = await in_flight.begin(ask, answering, writer)
    watching = asyncio.create_task(in_flight.watch(recording([])))
    await writer.append("The first words")
    shown = writer.shown_at()
    assert shown is not None and shown[1] == "stream"
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with asyncio.timeout(10):  # a renewal would come only after 100 s
            while (value := await raw.get(f"answer:{key}")) is None or shown[0] not in value:
                await asyncio.sleep(0.05)
    finally:
        await raw.aclose()
        watching.cancel()
        answering.cancel()
        await asyncio.gather(watching, answering, return_exceptions=True)
    await in_flight.end(key)


async def test_a_stop_pressed_here_ends_the_answers_shown_in_the_thread_not_a_question_still_checked(
    state: Held,
) -> None:
    """Three questions in one thread on this replica: the first, still in its access check (a slow look-up
    of its asker), and two being shown. The Stop cancelled the first question only, unseen and now never
    answered, while the answers the reader saw and stopped went on. As a Stop through another replica
    does, it ends the answers shown."""
    in_flight = replica(state)
    tasks = [asyncio.create_task(asyncio.Event().wait()) for _ in range(3)]
    asks = [mention_in_thread(f"1700000000.00190{i}") for i in range(3)]
    checking = in_flight.enter(asks[0], tasks[0], open_writer(never_called(), asks[0]))
    holding = in_flight._writing[checking].holding
    assert holding is not None
    await holding  # claimed, not yet shown
    shown = [
        await in_flight.begin(ask, task, open_writer(never_called(), ask))
        for ask, task in zip(asks[1:], tasks[1:], strict=True)
    ]
    assert await in_flight.stop("C0GENERAL", "1700000000.000100")
    await asyncio.sleep(0)  # a cancel would have landed by now
    outcome = [task.cancelled() for task in tasks]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for key in [checking, *shown]:
        await in_flight.end(key)
    assert outcome == [False, True, True]
