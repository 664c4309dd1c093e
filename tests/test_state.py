"""State between requests, in memory and in a real Redis: the same contract, ids only, every key expiring,
and a Redis that goes away and comes back costs no request and no traceback."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from bot.state import OWED_PER_SCRIPT, MemoryState, RedisState, State, StateKeys, Write
from tests.redis_server import Cuttable, RedisServer, in_use


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[State]:
    if request.param == "memory":
        yield MemoryState()
        return
    async with in_use(RedisState(redis_server.url), redis_server) as shared:
        yield shared


async def test_a_claim_is_held_by_one_owner_until_released(state: State) -> None:
    assert await state.claim("lease:answer:a", 5, owner="replica-1")
    assert not await state.claim("lease:answer:a", 5, owner="replica-2")
    assert await state.renew("lease:answer:a", "replica-2", 5) == "lost"
    assert await state.renew("lease:answer:a", "replica-1", 5) == "renewed"
    await state.release("lease:answer:a", "replica-2")  # not theirs: nothing happens
    assert not await state.claim("lease:answer:a", 5, owner="replica-2")
    await state.release("lease:answer:a", "replica-1")
    assert await state.claim("lease:answer:a", 5, owner="replica-2")


async def test_a_renewal_takes_a_lease_gone_from_the_store_again_unless_another_is_taking_over(
    state: State,
) -> None:
    """Gone is not another's: Redis restarted empty, or the outage switched which store is asked."""
    assert await state.renew("lease:answer:a", "replica-1", 5, unless="takeover:a") == "retaken"
    assert await state.get("lease:answer:a") == "replica-1"
    await state.delete("lease:answer:a")
    assert await state.claim("takeover:a", 5, owner="replica-2")
    assert await state.renew("lease:answer:a", "replica-1", 5, unless="takeover:a") == "lost"
    assert await state.get("lease:answer:a") is None


async def test_keys_expire_on_time(state: State) -> None:
    assert await state.claim("dedupe:event:e1", 0.05)
    await state.put("viewed:thread:t1", "C0GENERAL", 0.05)
    assert await state.add("rate:user:u1", 1, 0.05) == 1
    await asyncio.sleep(0.1)
    assert await state.claim("dedupe:event:e1", 5)
    assert await state.get("viewed:thread:t1") is None
    assert await state.add("rate:user:u1", 1, 5) == 1


async def test_a_counter_adds_up_and_keeps_its_first_expiry(state: State) -> None:
    assert await state.add("tokens:user:u1", 100, 0.2) == 100
    assert await state.add("tokens:user:u1", 50, 60) == 150  # a later ttl does not extend it
    await asyncio.sleep(0.3)
    assert await state.add("tokens:user:u1", 7, 60) == 7


async def test_values_can_be_read_replaced_and_deleted(state: State) -> None:
    await state.put("access:person:p1", "T0TEAM,,0,0", 5)
    assert await state.get("access:person:p1") == "T0TEAM,,0,0"
    await state.put("access:person:p1", "T0TEAM,E0ORG,1,0", 5)
    assert await state.get("access:person:p1") == "T0TEAM,E0ORG,1,0"
    await state.delete("access:person:p1")
    assert await state.get("access:person:p1") is None


async def test_several_values_in_one_call(state: State) -> None:
    await state.put("stop:a", "1", 5)
    assert await state.get_many(["stop:a", "stop:missing"]) == ["1", None]
    assert await state.get_many([]) == []


async def test_a_set_whose_members_expire_each_on_time(state: State) -> None:
    await state.enlist("answers", "a", 5)
    await state.enlist("answers", "b", 0.05)
    await state.enlist("answers", "c", 5)
    await state.delist("answers", "c")
    await asyncio.sleep(0.1)
    assert await state.members("answers") == ["a"]  # b expired, c was taken out


async def test_two_processes_share_redis_state(redis_server: RedisServer) -> None:
    one, two = RedisState(redis_server.url), RedisState(redis_server.url)
    try:
        assert await one.claim("dedupe:event:shared", 5)
        assert not await two.claim("dedupe:event:shared", 5)
        await one.add("rate:user:shared", 3, 5)
        assert await two.add("rate:user:shared", 1, 5) == 4
    finally:
        await one.delete("dedupe:event:shared")
        await one.delete("rate:user:shared")
        await one.close()
        await two.close()


async def test_a_burst_of_commands_waits_for_a_connection_instead_of_leaving_redis(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """More commands at once than the pool holds connections (a burst of answers in one process): each
    waits its turn. Taken for an outage, they fell back to this process's memory, where another
    replica's claims are not seen, and a question could be answered twice."""
    caplog.set_level(logging.WARNING, logger="bot.state")
    async with in_use(RedisState(redis_server.url), redis_server) as shared:
        claimed = await asyncio.gather(*(shared.claim(f"dedupe:event:{i}", 60) for i in range(400)))
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            in_redis = len(await raw.keys("dedupe:event:*"))
        finally:
            await raw.aclose()
    assert all(claimed) and in_redis == 400
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


async def test_every_redis_key_expires_and_a_hashed_key_names_nobody(redis_server: RedisServer) -> None:
    keys = StateKeys("xoxb-secret-of-this-app")
    shared = RedisState(redis_server.url)
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        person = keys.of("T0TEAM", "U0ALICE")
        assert person == StateKeys("xoxb-secret-of-this-app").of("T0TEAM", "U0ALICE")  # every replica
        assert person != StateKeys("another-app").of("T0TEAM", "U0ALICE")
        await shared.put(f"access:person:{person}", "T0TEAM,,0,0", 300)
        await shared.add(f"rate:user:{person}", 1, 60)
        await shared.claim(f"dedupe:event:{keys.of('Ev123')}", 3600)
        await shared.enlist("answers", keys.of("C0GENERAL", "1.0001"), 0.2)
        dump = {key: await raw.pttl(key) for key in await raw.keys("*")}
        assert len(dump) == 4 and 0 < dump["answers"] <= 200 and all(ttl > 0 for ttl in dump.values())
        assert not any("U0ALICE" in key or "Ev123" in key for key in dump)
    finally:
        await raw.flushdb()
        await raw.aclose()
        await shared.close()


async def test_redis_lost_while_running_falls_back_warns_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.state")
    server = RedisServer(tmp_path)
    server.start()
    shared = RedisState(server.url, retry_seconds=0.05)
    try:
        assert await shared.claim("dedupe:event:before", 60)
        server.stop()
        assert await shared.claim("dedupe:event:during", 60)  # answered from this process's memory
        assert not await shared.claim("dedupe:event:during", 60)
        assert await shared.add("rate:user:u", 1, 60) == 1
        outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(outages) == 1 and not any(r.exc_info for r in caplog.records)
        server.start()
        await asyncio.sleep(0.1)  # the next call tries Redis again after retry_seconds
        assert await shared.claim("dedupe:event:after", 60)
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        raw = aioredis.Redis.from_url(server.url, decode_responses=True)
        assert await raw.exists("dedupe:event:after") == 1
        await raw.aclose()
    finally:
        await shared.close()
        server.stop()


async def test_writes_owed_after_a_long_outage_go_in_short_scripts_before_anything_else(
    tmp_path: Path,
) -> None:
    """Redis runs a script to its end before any other replica's command: what one process owes after a
    long outage goes a few thousand writes at a time, and what it asks meanwhile waits for all of it
    (a claim put in the outage and deleted once Redis is back must not be put again after)."""
    server = RedisServer(tmp_path)
    server.start()
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        async with Cuttable(server) as network:
            state = RedisState(network.url, retry_seconds=0)  # every call tries Redis
            try:
                await state.ping()
                network.cut()
                owed = 2 * OWED_PER_SCRIPT + 1
                await state.write_all([Write("put", f"lease:{i}", "r1", 60) for i in range(owed - 1)])
                await state.write_all([Write("put", "answer:last", "{}", 60)])  # the last write owed
                network.restore()
                await raw.config_resetstat()
                await asyncio.gather(state.get("anything"), state.delete("answer:last"))
                evalsha = (await raw.info("commandstats"))["cmdstat_evalsha"]
                assert await raw.dbsize() == owed - 1 and not await raw.exists("answer:last")
            finally:
                await state.close()
    finally:
        await raw.aclose()
        server.stop()
    assert evalsha["calls"] - evalsha["failed_calls"] == 3  # less the first try of a script not loaded


async def test_several_writes_land_together(state: State) -> None:
    await state.put("stop:t", "1", 5)
    assert await state.claim("lease:a", 5, owner="replica-1")
    await state.write_all(
        [
            Write("delete", "stop:t"),
            Write("put", "answer:a", "{}", 5),
            Write("enlist", "answers:x", "a", 5),
            Write("release", "lease:a", "replica-2"),  # not theirs: kept
        ]
    )
    assert await state.get_many(["stop:t", "answer:a", "lease:a"]) == [None, "{}", "replica-1"]
    assert await state.members("answers:x") == ["a"]
    await state.write_all([Write("delist", "answers:x", "a"), Write("release", "lease:a", "replica-1")])
    assert await state.members("answers:x") == [] and await state.get("lease:a") is None


async def test_writes_guarded_by_a_key_another_holds_are_skipped_up_to_its_release(state: State) -> None:
    """An answer's end deletes its claim only while its lease is not another replica's; what follows the
    guarded writes (another answer's, sent with them) is made all the same."""
    await state.put("lease:a", "replica-2", 5)
    await state.put("answer:a", "taker's", 5)
    await state.put("answer:b", "b", 5)
    guarded = [Write("mine", "lease:a", "replica-1"), Write("delete", "answer:a")]
    after = [Write("release", "lease:a", "replica-1"), Write("delete", "answer:b")]
    await state.write_all([*guarded, *after])
    assert await state.get_many(["lease:a", "answer:a", "answer:b"]) == ["replica-2", "taker's", None]
    await state.delete("lease:a")  # no one's: the guarded writes are made
    await state.write_all([*guarded, Write("release", "lease:a", "replica-1")])
    assert await state.get("answer:a") is None


async def test_several_writes_are_one_command_to_redis_even_after_it_forgot_its_scripts(
    redis_server: RedisServer,
) -> None:
    """An answer's claim and its end are each one round trip: a transaction holding scripts cost
    redis-py a SCRIPT EXISTS before it, on every answer's path to Claude."""
    writes = [Write("put", "lease:a", "replica-1", 5), Write("enlist", "answers:x", "a", 5)]
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    async with in_use(RedisState(redis_server.url), redis_server) as shared:
        try:
            await shared.write_all(writes)  # its scripts are loaded now
            await raw.config_resetstat()
            await shared.write_all([Write("release", "lease:a", "replica-1"), *writes])
            sent = await raw.info("commandstats")
            await raw.script_flush()  # a restarted Redis has no scripts
            await shared.write_all([Write("delist", "answers:x", "a"), Write("delete", "lease:a")])
            after_flush = await shared.get_many(["lease:a"]), await shared.members("answers:x")
        finally:
            await raw.aclose()
    assert sent["cmdstat_evalsha"]["calls"] == 1
    assert not {"cmdstat_multi", "cmdstat_script|exists", "cmdstat_exec"} & sent.keys()
    assert after_flush == ([None], [])


async def test_commands_asked_for_at_once_reach_redis_together(redis_server: RedisServer) -> None:
    """A burst's answers each ask Redis something in the same turn of the event loop: those go as one
    pipeline, one write for Redis to read, instead of a pooled connection, a write and a read each
    (in a burst, most of a replica's Redis CPU)."""
    raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    async with in_use(RedisState(redis_server.url), redis_server) as shared:
        try:
            await shared.put("answer:0", "{}", 5)  # connected, scripts loaded
            await shared.add("rate:user:0", 1, 60)
            before = (await raw.info("stats"))["total_reads_processed"]
            results = await asyncio.gather(
                *(shared.claim(f"dedupe:event:{i}", 60) for i in range(10)),
                *(shared.add(f"rate:user:{i}", 1, 60) for i in range(10)),
                shared.get("answer:0"),
            )
            reads = (await raw.info("stats"))["total_reads_processed"] - before
        finally:
            await raw.aclose()
    assert results == [True] * 10 + [2] + [1] * 9 + ["{}"]
    assert reads <= 3  # ours, and the two INFO calls around it


async def test_a_command_that_fails_or_is_given_up_in_a_batch_leaves_the_others_be(
    redis_server: RedisServer,
) -> None:
    async with in_use(RedisState(redis_server.url), redis_server) as shared:
        await shared.enlist("answers:x", "a", 5)  # a sorted set: GET on it is Redis's WRONGTYPE error
        given_up = asyncio.ensure_future(shared.claim("lease:b", 5))
        await asyncio.sleep(0)  # its command is queued, not yet sent
        given_up.cancel()
        wrong, claimed = await asyncio.gather(
            shared.get("answers:x"), shared.claim("lease:a", 5), return_exceptions=True
        )
        after = await shared.get_many(["lease:a"])
    assert given_up.cancelled()
    assert isinstance(wrong, redis.exceptions.ResponseError) and claimed is True and after == ["1"]


@pytest.mark.parametrize(
    "refusing",
    [
        pytest.param(("CONFIG", "SET", "maxmemory", "1"), id="out-of-memory"),
        pytest.param(("REPLICAOF", "127.0.0.1", "9"), id="read-only-replica"),
    ],
)
async def test_a_redis_that_refuses_writes_is_an_outage_not_a_crash(
    tmp_path: Path, refusing: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """Full (maxmemory with noeviction) or turned into a replica by a failover: every write is refused
    with an error reply. The answer goes on, on this process's memory, and what it wrote is owed."""
    caplog.set_level(logging.WARNING, logger="bot.state")
    server = RedisServer(tmp_path)
    server.start()
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    shared = RedisState(server.url, retry_seconds=0)
    try:
        await raw.execute_command(*refusing)
        await shared.write_all([Write("put", "answer:a", "{}", 60)])
        assert await shared.claim("dedupe:event:e", 60)
        assert await shared.get("answer:a") == "{}"  # from this process's memory
        assert any("unreachable" in r.getMessage() for r in caplog.records)
        await raw.execute_command(
            *(("CONFIG", "SET", "maxmemory", "0") if refusing[0] == "CONFIG" else ("REPLICAOF", "NO", "ONE"))
        )
        assert await shared.claim("dedupe:event:after", 60)
        assert await raw.get("answer:a") == "{}"  # what it owed is in Redis now
    finally:
        await shared.close()
        await raw.aclose()
        server.stop()


async def test_what_is_owed_goes_to_redis_as_the_process_closes(tmp_path: Path) -> None:
    """A replica stopping just after an outage: its last writes (answers handed over to the others, say)
    were made in its memory, and would die with it."""
    server = RedisServer(tmp_path)
    server.start()
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        async with Cuttable(server) as network:
            state = RedisState(network.url, retry_seconds=60)  # no call tries Redis again before the end
            await state.ping()
            network.cut()
            await state.write_all([Write("put", "answer:handed-over", "{}", 60)])
            network.restore()
            await state.close()
        assert await raw.get("answer:handed-over") == "{}"
    finally:
        await raw.aclose()
        server.stop()


async def test_a_redis_that_cannot_save_its_snapshots_is_an_outage_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis run with snapshots (a default redis.conf, a managed Redis) whose disk fails refuses every
    write with MISCONF (stop-writes-on-bgsave-error, on by default). Raised as a bug, the dedupe claim
    of every event failed and each event was dropped unanswered, as long as the disk stayed broken."""
    caplog.set_level(logging.WARNING, logger="bot.state")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    shared = RedisState(server.url, retry_seconds=0)
    try:
        await raw.config_set("save", "3600 1")
        shutil.rmtree(folder)  # its disk fails: the next snapshot cannot be written
        await raw.bgsave()
        while (await raw.info("persistence"))["rdb_last_bgsave_status"] != "err":
            await asyncio.sleep(0.05)
        await shared.write_all([Write("put", "answer:a", "{}", 60)])
        assert await shared.claim("dedupe:event:e", 60)
        assert await shared.get("answer:a") == "{}"  # from this process's memory
        assert any("refusing writes" in r.getMessage() for r in caplog.records)
        await raw.config_set("save", "")  # snapshots off: writes are taken again
        assert await shared.claim("dedupe:event:after", 60)
        assert await raw.get("answer:a") == "{}"  # what it owed is in Redis now
    finally:
        await shared.close()
        await raw.aclose()
        server.stop()


async def test_writes_guarded_by_a_key_stay_together_when_owed_after_a_long_outage(tmp_path: Path) -> None:
    """What is owed goes a few thousand writes per script: a guarded end cut between two scripts lost its
    guard in the second, which delisted the answer another replica had taken over meanwhile."""
    server = RedisServer(tmp_path)
    server.start()
    raw = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        async with Cuttable(server) as network:
            state = RedisState(network.url, retry_seconds=0)
            try:
                await state.ping()
                await state.write_all(
                    [Write("put", "lease:a", "taker", 60), Write("enlist", "answers:x", "a", 60)]
                )
                network.cut()
                await state.write_all(
                    [Write("put", f"viewed:{i}", "C", 60) for i in range(OWED_PER_SCRIPT - 2)]
                )
                await state.write_all(
                    [
                        Write("mine", "lease:a", "paused"),
                        Write("delete", "answer:a"),
                        Write("delist", "answers:x", "a"),  # the first owed past the first script
                        Write("release", "lease:a", "paused"),
                    ]
                )
                network.restore()
                await state.get("anything")  # sends what is owed
                assert await raw.zrange("answers:x", 0, -1) == ["a"]
                assert await raw.get("lease:a") == "taker"
            finally:
                await state.close()
    finally:
        await raw.aclose()
        server.stop()


async def test_a_call_given_up_on_after_redis_came_back_does_not_begin_a_second_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A call tried Redis in the outage on a connection that never answers (a network dropping what it
    is sent), and gave up only after a later call had found Redis back: its failure began an outage of
    its own, warned about and recovered from a second time, for the one outage there was."""
    caplog.set_level(logging.WARNING, logger="bot.state")
    server = RedisServer(tmp_path)
    server.start()
    try:
        async with Cuttable(server) as network:
            state = RedisState(network.url, retry_seconds=0.05)
            try:
                await state.ping()
                network.cut()
                await state.get("a")  # the outage begins, warned about
                network.restore()
                network.stalling = True
                await asyncio.sleep(0.1)  # past the retry interval: the next call tries Redis
                stuck = asyncio.create_task(state.get("b"))
                await network.stalled.wait()
                network.stalling = False
                await asyncio.sleep(0.1)
                assert await state.get("c") is None  # from Redis: back
                assert await stuck is None  # given up on, from this process's memory
                await asyncio.sleep(0.1)
                await state.get("d")
            finally:
                await state.close()
    finally:
        server.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unreachable" in m]) == 1, messages
    assert len([m for m in messages if "reachable again" in m]) == 1, messages
