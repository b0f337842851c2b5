"""The server processes sharing one database: who is alive, and who owns which call.

Each instance has a row in ``bc_instances`` and beats every ``interval`` seconds. An
instance whose last beat is older than ``timeout`` is lost (crashed, killed, cut off):
the first live instance to notice claims it with one conditional update, so exactly
one instance ends the calls it owned. Clocks of different machines are compared
through the heartbeat times they write, so they should be in sync (NTP) to well
within ``timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import sqlalchemy as sa

from ..clock import Clock, SystemClock
from ..ledger.sql import SqlStore
from ..ledger.sql import calls as ledger_calls
from ..lifecycle import CallState
from .db import instances, server_calls
from .episode import Episode

log = logging.getLogger("backchannel.instances")

LOST = "heartbeat-expired"


class Instances:
    def __init__(
        self,
        db: SqlStore,
        instance_id: str,
        url: str,
        *,
        interval: float,
        timeout: float,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.id = instance_id
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.clock = clock or SystemClock()
        #: Since when this instance's own beats have gone through without a failure.
        #: After an outage of the store every instance's beat is stale at once; one
        #: that has just come back must not take the others for dead, so it reaps only
        #: once it has itself beaten for ``timeout`` seconds (the others too, by then).
        self._healthy_since: float | None = None

    async def register(self, *, alone: bool) -> None:
        """Join (again, under a fixed id). ``alone``: this is the only instance on the
        database, so any other row still marked running is from a run that crashed."""
        now = self.clock.wall()
        async with self.db.transaction() as conn:
            if alone:
                await conn.execute(
                    instances.update()
                    .where(instances.c.stopped_at.is_(None), instances.c.id != self.id)
                    .values(stopped_at=now, stop_reason="replaced")
                )
            await conn.execute(instances.delete().where(instances.c.id == self.id))
            await conn.execute(
                instances.insert().values(
                    id=self.id, url=self.url, started_at=now, heartbeat_at=now
                )
            )
        self._healthy_since = self.clock.monotonic() - self.timeout

    async def beat(self) -> bool:
        """One heartbeat; ``False`` if another instance has declared this one lost."""
        stmt = (
            instances.update()
            .where(instances.c.id == self.id, instances.c.stopped_at.is_(None))
            .values(heartbeat_at=self.clock.wall())
        )
        async with self.db.transaction() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    @property
    def trusted(self) -> bool:
        """Whether this instance's own beats have gone through for ``timeout`` seconds,
        so a stale beat of another instance means that instance, not the store."""
        since = self._healthy_since
        return since is not None and self.clock.monotonic() - since >= self.timeout

    async def reap(self) -> list[str]:
        """Claim every instance whose heartbeat expired; the ones this instance claimed.
        Nothing while this instance is not :attr:`trusted`."""
        if not self.trusted:
            return []
        now = self.clock.wall()
        stale = sa.select(instances.c.id).where(
            instances.c.stopped_at.is_(None),
            instances.c.heartbeat_at < now - self.timeout,
            instances.c.id != self.id,
        )
        async with self.db.engine.connect() as conn:
            candidates = [r[0] for r in (await conn.execute(stale)).all()]
        claimed = []
        for lost in candidates:
            claim = (
                instances.update()
                .where(instances.c.id == lost, instances.c.stopped_at.is_(None))
                .values(stopped_at=now, stop_reason=LOST)
            )
            async with self.db.transaction() as conn:
                if (await conn.execute(claim)).rowcount == 1:
                    claimed.append(lost)
        return claimed

    async def run(
        self,
        on_lost: Callable[[str], Awaitable[None]],
        on_self_lost: Callable[[], Awaitable[None]],
        every_beat: Callable[[], Awaitable[None]],
    ) -> None:
        """Beat and reap until cancelled, running ``every_beat`` after each beat. A failed
        round (the database briefly away) is logged once per outage and retried at the
        next beat."""
        outage = Episode(log, f"instance {self.id}: heartbeat round")
        while True:
            try:
                beat = await self.beat()
                if self._healthy_since is None:
                    self._healthy_since = self.clock.monotonic()
                if not beat:
                    log.error("instance %s was declared lost by another instance", self.id)
                    await on_self_lost()
                    await self.register(alone=False)
                for lost in await self.reap():
                    log.warning("instance %s stopped heartbeating; ending its calls", lost)
                    await on_lost(lost)
                await every_beat()
            except Exception as exc:
                self._healthy_since = None
                outage.failed(exc)
            else:
                outage.succeeded()
            await self.clock.sleep(self.interval)

    async def stop(self, reason: str = "shutdown") -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                instances.update()
                .where(instances.c.id == self.id)
                .values(stopped_at=self.clock.wall(), stop_reason=reason)
            )

    async def alive(self, instance_id: str) -> bool:
        """Whether ``instance_id`` is running: not stopped, and heartbeating in time."""
        stmt = sa.select(instances.c.heartbeat_at).where(
            instances.c.id == instance_id, instances.c.stopped_at.is_(None)
        )
        async with self.db.engine.connect() as conn:
            beat = (await conn.execute(stmt)).scalar()
        return beat is not None and beat >= self.clock.wall() - self.timeout

    async def own(self, call_id: str) -> None:
        """Record that this instance runs the call."""
        async with self.db.transaction() as conn:
            await conn.execute(
                server_calls.update().where(server_calls.c.id == call_id).values(owner=self.id)
            )

    async def owner(self, call_id: str) -> str | None:
        stmt = sa.select(server_calls.c.owner).where(server_calls.c.id == call_id)
        async with self.db.engine.connect() as conn:
            owner: str | None = (await conn.execute(stmt)).scalar()
        return owner

    async def abandoned_calls(self) -> list[tuple[str, str]]:
        """Calls still in progress whose owner has stopped (declared lost, or shut down):
        ``(call id, owner)``. Asked every beat, so an ending that failed halfway is
        finished later."""
        stmt = (
            sa.select(server_calls.c.id, server_calls.c.owner)
            .join(instances, instances.c.id == server_calls.c.owner)
            .join(ledger_calls, ledger_calls.c.call_id == server_calls.c.id)
            .where(
                instances.c.stopped_at.is_not(None),
                ledger_calls.c.state == CallState.IN_PROGRESS.value,
            )
        )
        async with self.db.engine.connect() as conn:
            return [(r[0], r[1]) for r in (await conn.execute(stmt)).all()]

    async def live_calls_of(self, instance_id: str) -> list[str]:
        """Calls the instance owns that the ledger still has in progress."""
        stmt = (
            sa.select(server_calls.c.id)
            .join(ledger_calls, ledger_calls.c.call_id == server_calls.c.id)
            .where(
                server_calls.c.owner == instance_id,
                ledger_calls.c.state == CallState.IN_PROGRESS.value,
            )
        )
        async with self.db.engine.connect() as conn:
            return [r[0] for r in (await conn.execute(stmt)).all()]
