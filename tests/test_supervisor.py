"""The supervisor: a failing worker is restarted with capped backoff while the others
go on, and its state shows while it waits. Time is the manual clock's."""

from __future__ import annotations

import asyncio

import pytest

from backchannel import ManualClock
from backchannel.server.supervisor import Supervisor

pytestmark = pytest.mark.anyio


async def test_a_failing_worker_is_restarted_and_the_others_go_on(clock: ManualClock) -> None:
    supervisor = Supervisor(first_backoff=1.0, max_backoff=4.0, clock=clock)
    starts: list[float] = []
    beats = 0

    async def flaky() -> None:
        starts.append(clock.monotonic())
        if len(starts) <= 4:
            raise ConnectionRefusedError("the database is away")
        await asyncio.Event().wait()  # healthy from the fifth start on

    async def steady() -> None:
        nonlocal beats
        while True:
            beats += 1
            await clock.sleep(1.0)

    async with supervisor.running():
        supervisor.start("flaky", flaky)
        supervisor.start("steady", steady)
        await clock.advance(0)
        assert supervisor.status() == {"flaky": "backing-off", "steady": "running"}
        await clock.advance(20)
        assert starts == [0, 1, 3, 7, 11], "backoff doubles, capped at 4 s"
        assert supervisor.status() == {"flaky": "running", "steady": "running"}
        assert beats >= 20, "the steady worker never stopped"
    assert supervisor.status() == {"flaky": "stopped", "steady": "stopped"}
