"""Instances on one database: heartbeats, a lost instance claimed by exactly one other,
and the calls each owns. Time is the manual clock's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backchannel import ManualClock, SqlStore
from backchannel.ledger.ledger import Ledger
from backchannel.server import schema
from backchannel.server.db import server_calls
from backchannel.server.instances import Instances

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/instances.db", create=False)
    await schema.upgrade(store.engine)
    yield store
    await store.close()


def instance(db: SqlStore, name: str, clock: ManualClock) -> Instances:
    return Instances(db, name, f"http://{name}", interval=1.0, timeout=5.0, clock=clock)


async def test_a_silent_instance_is_lost_and_claimed_once(db: SqlStore, clock: ManualClock) -> None:
    a, b, c = (instance(db, n, clock) for n in "abc")
    for i in (a, b, c):
        await i.register(alone=False)
    await clock.advance(4.0)
    await b.beat()
    await c.beat()
    assert await b.reap() == [] and await b.alive("a")
    await clock.advance(2.0)  # a's last beat is 6 s old
    await b.beat()
    await c.beat()
    assert not await b.alive("a") and await b.alive("c")
    assert await b.reap() == ["a"]
    assert await c.reap() == [], "claimed by b already"
    assert not await a.beat(), "a learns it was declared lost"


async def test_each_call_records_its_owner(db: SqlStore, clock: ManualClock) -> None:
    a = instance(db, "a", clock)
    await a.register(alone=True)
    ledger = Ledger(db, clock)
    for call_id in ("c1", "c2"):
        async with db.transaction() as conn:
            await conn.execute(
                server_calls.insert().values(
                    id=call_id,
                    type="web",
                    assistant={},
                    token_hash="t",
                    client_token_hash="c",
                    created_at=0.0,
                )
            )
        await a.own(call_id)
        await ledger.open_call(call_id)
    await ledger.end_call("c2", "customer-ended-call")
    assert await a.owner("c1") == "a"
    assert await a.owner("unknown") is None
    assert await a.live_calls_of("a") == ["c1"]


async def test_a_sole_instance_retires_rows_left_by_a_crash(
    db: SqlStore, clock: ManualClock
) -> None:
    crashed = instance(db, "old", clock)
    await crashed.register(alone=True)
    fresh = instance(db, "new", clock)
    await fresh.register(alone=True)
    assert not await fresh.alive("old")
    assert await fresh.reap() == []


class _FlakyStore:
    """The database as one instance sees it: failing while ``down``."""

    def __init__(self, db: SqlStore) -> None:
        self.down = False
        self.db = db

    def transaction(self) -> object:
        if self.down:
            raise OSError("connection refused")
        return self.db.transaction()

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


async def test_after_an_outage_of_the_store_no_instance_takes_the_others_for_dead(
    db: SqlStore, clock: ManualClock
) -> None:
    """Every heartbeat goes stale while the store is away; the first instance back must
    not reap the others before they have had time to beat again."""
    import asyncio

    flaky = _FlakyStore(db)
    a = Instances(flaky, "a", "http://a", interval=1.0, timeout=5.0, clock=clock)  # type: ignore[arg-type]
    b = instance(db, "b", clock)
    await a.register(alone=False)
    await b.register(alone=False)
    lost: list[str] = []

    async def on_lost(instance_id: str) -> None:
        lost.append(instance_id)

    async def nothing() -> None:
        return None

    async def seconds(n: int) -> None:
        """Let ``n`` seconds pass, one beat at a time, each beat's database work done."""
        for _ in range(n):
            await clock.advance(1.0)
            for _ in range(20):  # aiosqlite works in a thread: give it real time
                await asyncio.sleep(0.005)

    beating = asyncio.ensure_future(a.run(on_lost, nothing, nothing))
    try:
        await seconds(2)
        flaky.down = True
        await seconds(10)  # b's beat, stale too, is now 12 s old
        assert not a.trusted
        flaky.down = False
        await seconds(1)  # a beats again first and does not reap b
        assert await a.reap() == [] and lost == []
        for _ in range(6):  # b beats again, within the timeout
            await b.beat()
            await seconds(1)
        assert a.trusted and lost == []
        await seconds(6)  # b really stops now: it is taken for lost
        assert lost == ["b"]
    finally:
        beating.cancel()
