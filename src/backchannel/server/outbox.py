"""Event webhooks through a durable outbox.

:class:`Outbox` is the server-wide :class:`~backchannel.events.EventSink` for the
assistants' server URLs. ``emit`` never blocks the conversation: it filters by the call's
``serverMessages`` and queues the event; a writer task stores it in ``bc_outbox``; a
delivery task POSTs due rows, signed, and retries failures with exponential backoff
(capped) until the event is delivered or too old. A receiver that is down for an hour
therefore gets every event afterwards, in order of creation.

Several instances may share the table; any of them delivers any event. A delivery task
claims due rows with ``SELECT … FOR UPDATE SKIP LOCKED`` (rows another instance is
claiming are skipped, not waited for) and moves their ``next_at`` past a lease in the
same transaction, so no other instance takes them while they are being sent. An
instance that dies mid-send leaves its rows to be retried when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from ..clock import Clock, SystemClock
from ..events import Event
from ..ledger.sql import SqlStore
from .db import outbox
from .webhooks import WebhookSender

log = logging.getLogger("backchannel.outbox")

#: How long one POST of an event may take.
SEND_LIMIT_SECONDS = 10.0

DEFAULT_SERVER_MESSAGES = frozenset(
    {
        "status-update",
        "end-of-call-report",
        "hang",
        "tool-calls-cancelled",
        "tool-call-progress",
        "tool-result-after-call",
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one call's events go."""

    url: str
    headers: Mapping[str, str]
    types: frozenset[str]


class Outbox:
    def __init__(
        self,
        store: SqlStore,
        sender: WebhookSender,
        *,
        max_age: float,
        max_backoff: float,
        batch: int = 20,
        route_loader: Callable[[str], Awaitable[Route | None]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.max_age = max_age
        self.max_backoff = max_backoff
        self.batch = batch
        self.routes: dict[str, Route | None] = {}
        self.route_loader = route_loader
        self.clock = clock or SystemClock()
        self._queue: asyncio.Queue[tuple[Event, Route | None]] = asyncio.Queue()
        self._due = asyncio.Event()

    def route(self, call_id: str, route: Route | None) -> None:
        """Send this call's events to ``route`` (``None``: the call has no server URL)."""
        self.routes[call_id] = route

    def emit(self, event: Event) -> None:
        if event.call_id not in self.routes:
            if self.route_loader is not None:  # e.g. a result after a restart: look it up
                self._queue.put_nowait((event, None))
            return
        route = self.routes[event.call_id]
        if route is not None and event.type in route.types:
            self._queue.put_nowait((event, route))

    async def run(self) -> None:
        """Store queued events and deliver due ones, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._store_forever())
            tg.create_task(self._deliver_forever())

    async def flush(self) -> None:
        """Store everything queued so far (used at shutdown and by tests)."""
        while not self._queue.empty():
            await self._store(self._queue.get_nowait())

    async def _store_forever(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._store(item)
            except Exception:
                log.exception("could not store an outbox event")

    async def _store(self, item: tuple[Event, Route | None]) -> None:
        event, route = item
        if route is None and self.route_loader is not None:
            route = self.routes[event.call_id] = await self.route_loader(event.call_id)
            if route is None or event.type not in route.types:
                return
        if route is None:
            return
        now = self.clock.wall()
        async with self.store.transaction() as conn:
            await conn.execute(
                outbox.insert().values(
                    id=uuid.uuid4().hex,
                    call_id=event.call_id,
                    event_type=event.type,
                    url=route.url,
                    headers=dict(route.headers),
                    body=json.dumps(event.to_message(), default=str),
                    status="pending",
                    attempts=0,
                    next_at=now,
                    created_at=now,
                )
            )
        self._due.set()

    async def _deliver_forever(self) -> None:
        while True:
            delivered_any = await self.deliver_due()
            if not delivered_any:
                self._due.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), timeout=1.0)

    async def deliver_due(self) -> bool:
        """Try every due row once; whether there was anything to try."""
        rows = await self._claim()
        for row in rows:
            await self._attempt(row)
        return bool(rows)

    async def _claim(self) -> list[sa.RowMapping]:
        """Due rows for this instance alone, oldest first."""
        now = self.clock.wall()
        lease = now + self.batch * SEND_LIMIT_SECONDS + 30.0
        due = (outbox.c.status == "pending", outbox.c.next_at <= now)
        async with self.store.transaction() as conn:
            ids = (
                await conn.execute(
                    sa.select(outbox.c.id)
                    .where(*due)
                    .order_by(outbox.c.created_at)
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
            # Conditional too: SQLite has no row locks, and two processes may share a file.
            claimed = await conn.execute(
                outbox.update()
                .where(outbox.c.id.in_(list(ids)), *due)
                .values(next_at=lease)
                .returning(*outbox.c)
            )
            rows = [r._mapping for r in claimed.all()]
        return sorted(rows, key=lambda r: float(r["created_at"]))

    async def _attempt(self, row: sa.RowMapping) -> None:
        attempts = int(row["attempts"]) + 1
        error: str | None = None
        try:
            response = await self.sender.post(
                row["url"], row["body"], row["headers"], limit=SEND_LIMIT_SECONDS
            )
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        now = self.clock.wall()
        values: dict[str, object] = {"attempts": attempts, "last_error": error}
        if error is None:
            values |= {"status": "delivered", "delivered_at": now}
        elif now - float(row["created_at"]) > self.max_age:
            values |= {"status": "dead"}
            log.warning("giving up on event %s after %d attempts: %s", row["id"], attempts, error)
        else:
            values |= {"next_at": now + min(self.max_backoff, 2.0 ** (attempts - 1))}
        async with self.store.transaction() as conn:
            await conn.execute(outbox.update().where(outbox.c.id == row["id"]).values(values))
