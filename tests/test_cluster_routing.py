"""The routing rules of :class:`~backchannel.server.cluster.Cluster`, in one process: two
instances on one SQLite file, the in-memory router between them, the manual clock.

A call runs on instance A (the harness's engine); instance B is a second engine on the
same ledger. Results recorded on B reach the call once; a hand-off that is lost is
taken by A's sweep; results B accepts after A stopped beating are reported when A is
declared lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from backchannel import (
    Engine,
    EventLog,
    Ledger,
    ManualClock,
    ResultSource,
    ScriptedLLM,
    SqlStore,
    ToolResult,
)
from backchannel.llm.scripted import call, say
from backchannel.server import schema
from backchannel.server.cluster import Cluster
from backchannel.server.db import server_calls
from backchannel.server.instances import Instances
from backchannel.server.router import MemoryBus, MemoryRouter, Message

from .harness import Harness, assistant, running_call, tool

pytestmark = pytest.mark.anyio

ORDER = tool("check_order", is_async=True)
TIMEOUT = 60.0  # an instance silent this long is lost
SHIPPED = ToolResult("call_1", result={"status": "shipped"}, message="Your order shipped.")


class Dropping(MemoryRouter):
    """A router whose messages never arrive (Redis restarted, say)."""

    async def send(self, instance_id: str, message: Message) -> None:
        return None


@dataclass
class Pair:
    h: Harness
    a: Cluster
    b: Cluster
    b_events: EventLog


@asynccontextmanager
async def pair(
    tmp_path: Path, clock: ManualClock, *, b_router: MemoryRouter | None = None
) -> AsyncIterator[Pair]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/cluster.db", create=False)
    await schema.upgrade(store.engine)
    llm = ScriptedLLM(
        [
            [*say("Let me check."), call("check_order", {"id": "42"}, id="call_1")],
            say("Working on it."),
        ],
        clock=clock,
    )
    bus = MemoryBus()
    async with running_call(assistant(ORDER), llm, clock=clock, store=store) as h:
        h.server.modes["check_order"] = "ack"
        instances_a = Instances(store, "a", "http://a", interval=1.0, timeout=TIMEOUT, clock=clock)
        instances_b = Instances(store, "b", "http://b", interval=1.0, timeout=TIMEOUT, clock=clock)
        for i in (instances_a, instances_b):
            await i.register(alone=False)
        a = Cluster(h.engine, instances_a, MemoryRouter(bus), EventLog(), answer_timeout=1.0)
        b_events = EventLog()
        engine_b = Engine(
            Ledger(store, clock), llm=ScriptedLLM(), clock=clock, after_call_events=b_events
        )
        b = Cluster(
            engine_b, instances_b, b_router or MemoryRouter(bus), b_events, answer_timeout=1.0
        )
        engine_b.elsewhere = b
        async with store.transaction() as conn:
            await conn.execute(
                server_calls.insert().values(
                    id=h.call.call_id,
                    type="web",
                    assistant={},
                    token_hash="t",
                    client_token_hash="c",
                    created_at=0.0,
                )
            )
        await instances_a.own(h.call.call_id)
        h.call.send_text("Where is my order?")
        await h.advance(10)
        assert a.router is not None
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(a.router.serve("a", a.handle))
            await asyncio.sleep(0)
            yield Pair(h, a, b, b_events)
            reader.cancel()


async def settle(h: Harness, until: Callable[[], bool] | None = None) -> None:
    """Let the router's queue, the ledger's thread and the manual clock move on: until
    ``until`` holds (within 10 s of real time), then a little more."""
    deadline = time.monotonic() + 10
    while until is not None and not until() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        await h.advance(1)
    for _ in range(5):
        await asyncio.sleep(0.05)
        await h.advance(5)


def said(h: Harness, line: str) -> Callable[[], bool]:
    return lambda: line in h.spoken()


async def test_a_result_recorded_on_b_is_said_once_on_a(tmp_path: Path, clock: ManualClock) -> None:
    async with pair(tmp_path, clock) as p:
        answer = await p.b.engine.submit_result(p.h.call.call_id, SHIPPED, ResultSource.API)
        assert answer.outcome.value == "accepted"
        again = await p.b.engine.submit_result(p.h.call.call_id, SHIPPED, ResultSource.API)
        assert again.duplicate
        await settle(p.h, said(p.h, "Your order shipped."))
        assert p.h.spoken().count("Your order shipped.") == 1
        record = await p.h.record("call_1")
        assert record.delivered_at is not None and record.spoken_at is not None
        assert p.b_events.events == [], "nothing reported as after the call"


async def test_a_lost_hand_off_is_taken_by_the_owners_sweep(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with pair(tmp_path, clock, b_router=Dropping()) as p:
        await p.b.engine.submit_result(p.h.call.call_id, SHIPPED, ResultSource.API)
        await settle(p.h)
        assert "Your order shipped." not in p.h.spoken()
        await p.a.sweep()
        await settle(p.h, said(p.h, "Your order shipped."))
        assert p.h.spoken().count("Your order shipped.") == 1
        await p.a.sweep()  # delivered now: nothing left to take
        await settle(p.h)
        assert p.h.spoken().count("Your order shipped.") == 1


async def test_results_accepted_after_the_owner_went_silent_are_reported(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with pair(tmp_path, clock, b_router=Dropping()) as p:
        # A's beats stop; within the timeout B still takes A for alive.
        answer = await p.b.engine.submit_result(p.h.call.call_id, SHIPPED, ResultSource.API)
        assert answer.outcome.value == "accepted"
        await clock.advance(TIMEOUT)
        await p.b.instances.beat()
        await p.b.reap_now()
        ended = await p.b.engine.ledger.get_call(p.h.call.call_id)
        assert (ended.state.value, ended.ended_reason) == ("ended", "server-lost")
        types = [e.type for e in p.b_events.events]
        assert types.count("tool-result-after-call") == 1
        assert "end-of-call-report" in types
