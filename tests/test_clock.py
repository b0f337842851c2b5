from __future__ import annotations

import asyncio

import pytest

from backchannel import ManualClock, SystemClock
from backchannel.waiting import wait_for_result

pytestmark = pytest.mark.anyio


async def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = ManualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [
        asyncio.ensure_future(sleeper(n, s)) for n, s in (("c", 3), ("a", 1), ("b", 2), ("a2", 1))
    ]
    await clock.advance(0)
    assert clock.next_deadline == 1
    await clock.advance(2.5)
    assert woke == [("a", 1), ("a2", 1), ("b", 2)]
    assert clock.monotonic() == 2.5
    assert clock.wall() == clock._epoch + 2.5
    await clock.advance(1)
    assert woke[-1] == ("c", 3)
    await asyncio.gather(*tasks)
    assert clock.next_deadline is None


async def test_system_clock_moves() -> None:
    clock = SystemClock()
    start = clock.monotonic()
    await clock.sleep(0.01)
    assert clock.monotonic() > start
    assert clock.wall() > 1_700_000_000


async def test_wait_for_result_value_delay_cue_and_timeout() -> None:
    clock = ManualClock()
    cues: list[float] = []
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(
        wait_for_result(fut, clock, 5, delay=2, on_delay=lambda: cues.append(clock.monotonic()))
    )
    await clock.advance(3)
    assert cues == [2]
    fut.set_result("done")
    await clock.advance(0)
    assert await waiter == "done"

    late: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(wait_for_result(late, clock, 5))
    await clock.advance(5)
    assert await waiter is None
    assert not late.cancelled(), "a late answer can still land"
