"""The arrival lane: a few answers at a time before Claude, in the order they came, none held for long."""

from __future__ import annotations

import asyncio

from bot.pipeline.lane import ArrivalLane


async def test_places_are_given_in_arrival_order_as_they_are_left():
    lane = ArrivalLane(width=2, hold_seconds=60)
    entered: list[int] = []
    leaves: dict[int, asyncio.Future[None]] = {}

    async def answer(n: int) -> None:
        leave = await lane.enter()
        entered.append(n)
        leaves[n] = asyncio.get_running_loop().create_future()
        await leaves[n]
        leave()
        leave()  # leaving twice frees one place, not two

    tasks = [asyncio.create_task(answer(n)) for n in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert entered == [0, 1]
    for n, expected in ((1, [0, 1, 2]), (0, [0, 1, 2, 3]), (2, [0, 1, 2, 3, 4])):
        leaves[n].set_result(None)
        while len(entered) < len(expected):
            await asyncio.sleep(0)
        assert entered == expected
    for n in (3, 4):
        leaves[n].set_result(None)
    await asyncio.gather(*tasks)


async def test_a_place_held_too_long_is_given_to_the_next():
    lane = ArrivalLane(width=1, hold_seconds=0.01)
    await lane.enter()  # and never left, as a read stuck behind a 429 would not
    leave = await asyncio.wait_for(lane.enter(), timeout=10)
    leave()


async def test_a_wait_cancelled_takes_no_place():
    lane = ArrivalLane(width=1, hold_seconds=60)
    leave = await lane.enter()
    waiting = asyncio.create_task(lane.enter())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    leave()
    (await asyncio.wait_for(lane.enter(), timeout=10))()
