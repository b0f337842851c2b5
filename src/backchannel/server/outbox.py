"""Event webhooks through a durable outbox.

:class:`Outbox` is the server-wide :class:`~backchannel.events.EventSink` for the
assistants' server URLs. ``emit`` never blocks the conversation: it filters by the call's
``serverMessages`` and hands the event to the writer, which stores it in ``bc_outbox``
(several events per transaction; a store failure is retried until it passes, never
dropped). An event counts as emitted once its row is stored: :meth:`Outbox.stored`
gives the moment, and the client socket waits for it before it shows the client the
same event, so a client never sees an event that a crash could still lose.

Delivery, per the Standard Webhooks spec and Vapi's event shapes:

- Each event has one id: its row's primary key, the ``webhook-id`` of every attempt and
  ``id`` in the body, so a receiver can drop a repeat. Reports that recovery may make
  again carry stable ids and are stored once (``INSERT … ON CONFLICT DO NOTHING``).
- A call's events are delivered one after another in creation order: a row is due only
  when no earlier row of its call is still pending. After an outage they come in order.
- Receivers (webhook URLs) are independent: up to ``per_receiver`` requests in flight
  each, so one that hangs holds only its own slots, never another receiver's events.
- Failures are retried with exponential backoff (capped) until the event is delivered or
  older than ``max_age``.

Several instances may share the table; any of them delivers any event. Claiming moves
a row's ``next_at`` past a short lease (one send's limit) in the same transaction
(``SELECT … FOR UPDATE SKIP LOCKED``, and a conditional update, since SQLite has no row
locks), so an instance that dies mid-send holds only the rows it was sending, briefly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.dialects import postgresql, sqlite

from ..clock import Clock, SystemClock
from ..events import Event
from ..ledger.retry import is_store_error
from ..ledger.sql import SqlStore
from ..telemetry import tracing
from ..telemetry.metrics import WEBHOOK_DELIVERIES, WEBHOOK_SECONDS
from ..telemetry.tracing import CALL_ID
from .db import outbox
from .episode import Episode
from .webhooks import WebhookSender

log = logging.getLogger("backchannel.outbox")

#: How long one POST of an event may take.
SEND_LIMIT_SECONDS = 10.0
#: A claimed row is left alone by other instances this long past its send limit.
LEASE_MARGIN_SECONDS = 5.0

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


@dataclass(slots=True)
class _Pending:
    event: Event
    route: Route | None
    stored: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Outbox:
    def __init__(
        self,
        store: SqlStore,
        sender: WebhookSender,
        *,
        max_age: float,
        max_backoff: float,
        batch: int = 50,
        per_receiver: int = 4,
        send_limit: float = SEND_LIMIT_SECONDS,
        route_loader: Callable[[str], Awaitable[Route | None]] | None = None,
        clock: Clock | None = None,
        instance_id: str = "",
        call_loader: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.max_age = max_age
        self.max_backoff = max_backoff
        self.batch = batch
        self.per_receiver = per_receiver
        self.send_limit = send_limit
        self.routes: dict[str, Route | None] = {}
        self.route_loader = route_loader
        self.clock = clock or SystemClock()
        #: Written on the rows this instance is sending.
        self.instance_id = instance_id
        #: Vapi's ``call`` object for events made outside a live call (reports after
        #: the call, recovery), which carry only the call's id.
        self.call_loader = call_loader
        self._calls: dict[str, dict[str, Any] | None] = {}
        self._pending: list[_Pending] = []
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._wake_writer = asyncio.Event()
        self._due = asyncio.Event()
        #: Sends in flight per receiver URL.
        self._busy: dict[str, int] = {}
        self._last_created = 0.0

    def route(self, call_id: str, route: Route | None) -> None:
        """Send this call's events to ``route`` (``None``: the call has no server URL)."""
        self.routes[call_id] = route

    # -- storing -------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if event.call_id in self.routes:
            route = self.routes[event.call_id]
            if route is None or event.type not in route.types:
                return
        elif self.route_loader is None:
            return
        else:
            route = None  # e.g. a result after a restart: looked up by the writer
        pending = _Pending(event, route)
        self._pending.append(pending)
        self._waiting[event.id] = pending.stored
        self._wake_writer.set()

    def stored(self, event_id: str) -> asyncio.Future[None] | None:
        """Resolves once the event is in the store (or known not to go anywhere);
        ``None`` when there is nothing to wait for."""
        return self._waiting.get(event_id)

    async def run_writer(self) -> None:
        """Store emitted events as they come, until cancelled. A failed write is
        retried with backoff; nothing emitted is dropped."""
        episode = Episode(log, "storing outbox events")
        delay = 0.05
        while True:
            if not self._pending:
                self._wake_writer.clear()
                await self._wake_writer.wait()
            try:
                await self.flush()
            except Exception as exc:
                episode.failed(exc)
                await self.clock.sleep(delay)
                delay = min(2.0, delay * 2)
            else:
                episode.succeeded()
                delay = 0.05

    async def flush(self) -> None:
        """Store everything emitted so far (also used at shutdown and by tests)."""
        while self._pending:
            batch = self._pending[: self.batch]
            rows = []
            for item in batch:
                route = item.route
                if route is None:
                    try:
                        route = await self._load_route(item.event)
                    except Exception as exc:
                        if is_store_error(exc):
                            raise  # the whole batch is tried again
                        # No route can be found (the call is unknown, its assistant no
                        # longer loads): the event goes nowhere, and blocks nothing.
                        log.warning(
                            "event %s for call %s has no usable route (%s: %s); not sent",
                            item.event.type,
                            item.event.call_id,
                            type(exc).__name__,
                            exc,
                        )
                        self.routes[item.event.call_id] = None
                if route is not None:
                    rows.append(self._row(await self._with_call(item.event), route))
            if rows:
                async with self.store.transaction() as conn:
                    await conn.execute(self._insert(), rows)
            del self._pending[: len(batch)]
            for item in batch:
                self._waiting.pop(item.event.id, None)
                if not item.stored.done():
                    item.stored.set_result(None)
            if rows:
                self._due.set()

    async def _with_call(self, event: Event) -> Event:
        """The event with the whole ``call`` object when it carries only the id."""
        if self.call_loader is None or (event.call and "orgId" in event.call):
            return event
        if event.call_id not in self._calls:
            try:
                self._calls[event.call_id] = await self.call_loader(event.call_id)
            except Exception as exc:
                if is_store_error(exc):
                    raise  # the whole batch is tried again
                log.warning("no call object for %s (%s); sent with its id", event.call_id, exc)
                self._calls[event.call_id] = None
        loaded = self._calls[event.call_id]
        return replace(event, call={**loaded, **(event.call or {})}) if loaded else event

    async def _load_route(self, event: Event) -> Route | None:
        if event.call_id not in self.routes and self.route_loader is not None:
            self.routes[event.call_id] = await self.route_loader(event.call_id)
        route = self.routes.get(event.call_id)
        return route if route is not None and event.type in route.types else None

    def _row(self, event: Event, route: Route) -> dict[str, Any]:
        # Strictly increasing within this process, so a call's events keep their order.
        now = max(self.clock.wall(), self._last_created + 1e-6)
        self._last_created = now
        return {
            "id": event.id,
            "call_id": event.call_id,
            "event_type": event.type,
            "url": route.url,
            "headers": dict(route.headers),
            "body": json.dumps({"id": event.id, **event.to_message()}, default=str),
            "status": "pending",
            "attempts": 0,
            "next_at": now,
            "created_at": now,
        }

    def _insert(self) -> Any:
        """An insert that skips rows whose id is stored already (a report made again)."""
        if self.store.engine.dialect.name == "postgresql":
            return postgresql.insert(outbox).on_conflict_do_nothing(index_elements=["id"])
        return sqlite.insert(outbox).on_conflict_do_nothing(index_elements=["id"])

    # -- delivering ----------------------------------------------------------------

    async def run_delivery(self) -> None:
        """Deliver due rows until cancelled, each receiver in its own lanes."""
        episode = Episode(log, "claiming outbox events")
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    rows = await self._claim()
                except Exception as exc:
                    episode.failed(exc)
                    rows = []
                    await self.clock.sleep(1.0)
                else:
                    episode.succeeded()
                for row in rows:
                    tg.create_task(self._attempt(row))
                if not rows:
                    await self._wait_due(1.0)

    async def _wait_due(self, at_most: float) -> None:
        """Until new rows are stored or a slot frees, or ``at_most`` seconds (rows whose
        backoff ends become due without notice)."""
        if self._due.is_set():
            self._due.clear()
            return
        due = asyncio.ensure_future(self._due.wait())
        tick = asyncio.ensure_future(self.clock.sleep(at_most))
        try:
            await asyncio.wait({due, tick}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            due.cancel()
            tick.cancel()
        self._due.clear()

    async def deliver_due(self) -> bool:
        """Deliver until nothing is due (each round's sends run together); whether
        anything was tried. For tests and tools; the server runs :meth:`run_delivery`."""
        tried = False
        while rows := await self._claim():
            tried = True
            await asyncio.gather(*(self._attempt(row) for row in rows))
        return tried

    async def _claim(self) -> list[sa.RowMapping]:
        """Due rows for this instance alone: the oldest pending row of each call, for
        receivers with a free slot, oldest first."""
        now = self.clock.wall()
        full = [url for url, n in self._busy.items() if n >= self.per_receiver]
        earlier = outbox.alias("earlier")
        due = (outbox.c.status == "pending", outbox.c.next_at <= now)
        head = ~sa.exists().where(
            earlier.c.call_id == outbox.c.call_id,
            earlier.c.status == "pending",
            earlier.c.created_at < outbox.c.created_at,
        )
        query = sa.select(outbox.c.id, outbox.c.url).where(*due, head)
        if full:
            query = query.where(outbox.c.url.not_in(full))
        query = query.order_by(outbox.c.created_at).limit(self.batch)
        async with self.store.transaction() as conn:
            candidates = (await conn.execute(query.with_for_update(skip_locked=True))).all()
            ids: list[str] = []
            room = {url: self.per_receiver - n for url, n in self._busy.items()}
            for row_id, url in candidates:
                if room.setdefault(url, self.per_receiver) > 0:
                    room[url] -= 1
                    ids.append(row_id)
            if not ids:
                return []
            # Conditional too: SQLite has no row locks, and two processes may share a file.
            claimed = await conn.execute(
                outbox.update()
                .where(outbox.c.id.in_(ids), *due)
                .values(
                    next_at=now + self.send_limit + LEASE_MARGIN_SECONDS,
                    claimed_by=self.instance_id,
                )
                .returning(*outbox.c)
            )
            rows = [r._mapping for r in claimed.all()]
        for row in rows:
            self._busy[row["url"]] = self._busy.get(row["url"], 0) + 1
        return sorted(rows, key=lambda r: float(r["created_at"]))

    async def _attempt(self, row: sa.RowMapping) -> None:
        try:
            await self._send(row)
        except Exception:
            # The outcome could not be written: the lease runs out and the row is
            # tried again, under the same webhook-id.
            log.warning("could not record the outcome of event %s; it will be retried", row["id"])
        finally:
            left = self._busy.get(row["url"], 1) - 1
            if left > 0:
                self._busy[row["url"]] = left
            else:
                self._busy.pop(row["url"], None)
            self._due.set()

    async def _send(self, row: sa.RowMapping) -> None:
        attempts = int(row["attempts"]) + 1
        error: str | None = None
        target = urlsplit(row["url"])
        attributes = {
            CALL_ID: row["call_id"],
            "backchannel.event.id": row["id"],
            "backchannel.event.type": row["event_type"],
            "backchannel.webhook.attempt": attempts,
            "http.request.method": "POST",
            "url.full": _without_secrets(row["url"]),
            "server.address": target.hostname or "",
        }
        started = self.clock.monotonic()
        # An HTTP client span, named by its method as the conventions ask.
        with tracing.span("POST", self.clock, attributes=attributes, kind=SpanKind.CLIENT) as span:
            try:
                response = await self.sender.post(
                    row["url"],
                    row["body"],
                    row["headers"],
                    limit=self.send_limit,
                    message_id=row["id"],
                )
                span.set_attribute("http.response.status_code", response.status_code)
                if not 200 <= response.status_code < 300:
                    error = f"HTTP {response.status_code}"
                    span.set_attribute("error.type", str(response.status_code))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                span.set_attribute("error.type", type(exc).__name__)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
        WEBHOOK_SECONDS.observe(self.clock.monotonic() - started)
        now = self.clock.wall()
        values: dict[str, object] = {"attempts": attempts, "last_error": error, "claimed_by": None}
        if error is None:
            values |= {"status": "delivered", "delivered_at": now}
            WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
        else:
            dead = now - float(row["created_at"]) > self.max_age
            WEBHOOK_DELIVERIES.labels(outcome="dead" if dead else "failed").inc()
            if dead:
                values |= {"status": "dead"}
                log.warning(
                    "giving up on event %s after %d attempts: %s", row["id"], attempts, error
                )
            else:
                values |= {"next_at": now + min(self.max_backoff, 2.0 ** (attempts - 1))}
        # Only while the row is still ours: if our lease ran out (or we were declared
        # lost) and another instance claimed it, its attempt decides.
        mine = (outbox.c.id == row["id"], outbox.c.claimed_by == self.instance_id)
        async with self.store.transaction() as conn:
            await conn.execute(outbox.update().where(*mine).values(values))

    async def deliveries(self, call_id: str) -> list[dict[str, Any]]:
        """The call's event webhooks, oldest first: where each went (no credentials or
        query), its state, attempts and last error."""
        columns = (
            outbox.c.id,
            outbox.c.event_type,
            outbox.c.url,
            outbox.c.status,
            outbox.c.attempts,
            outbox.c.created_at,
            outbox.c.delivered_at,
            outbox.c.next_at,
            outbox.c.last_error,
        )
        query = sa.select(*columns).where(outbox.c.call_id == call_id).order_by(outbox.c.created_at)
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "id": r.id,
                "type": r.event_type,
                "url": _without_secrets(r.url),
                "status": r.status,
                "attempts": r.attempts,
                "createdAt": r.created_at,
                "deliveredAt": r.delivered_at,
                "nextAttemptAt": r.next_at if r.status == "pending" else None,
                "lastError": r.last_error,
            }
            for r in rows
        ]

    async def backlog(self) -> int:
        """Events not yet delivered: pending in the store (every instance's), and
        emitted here but not yet stored."""
        async with self.store.engine.connect() as conn:
            query = (
                sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status == "pending")
            )
            stored = int((await conn.execute(query)).scalar_one())
        return stored + len(self._pending)

    async def release_claims(self, instance_id: str | None) -> int:
        """Make the rows a dead instance was sending due again at once (``None``: every
        instance's, when this one is the only one left). How many."""
        query = outbox.update().where(
            outbox.c.status == "pending", outbox.c.claimed_by.is_not(None)
        )
        if instance_id is not None:
            query = query.where(outbox.c.claimed_by == instance_id)
        async with self.store.transaction() as conn:
            released = await conn.execute(query.values(next_at=self.clock.wall(), claimed_by=None))
        if released.rowcount:
            self._due.set()
        return int(released.rowcount)


def _without_secrets(url: str) -> str:
    """A receiver's URL for a span: no credentials, query or fragment (they may carry
    tokens)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
