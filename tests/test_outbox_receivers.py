"""The outbox under receivers that fail: one that hangs and one that answers 500 do not
delay a healthy one; a retried event keeps its webhook-id; each call's events keep
their order through a long outage; a report made twice is stored once."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from backchannel import Event, ManualClock, SqlStore, verify_webhook
from backchannel.events import event_id
from backchannel.server.db import metadata, outbox
from backchannel.server.outbox import Outbox, Route
from backchannel.server.webhooks import WebhookSender

pytestmark = pytest.mark.anyio
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TYPES = frozenset({"status-update", "hang"})


@dataclass
class Receiver:
    """A webhook receiver on loopback: ``mode`` is ``ok``, ``hang`` or ``fail``."""

    mode: str = "ok"
    got: list[tuple[float, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    refused: int = 0
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def receiver(mode: str = "ok") -> Iterator[tuple[Receiver, str]]:
    state = Receiver(mode)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if state.mode == "hang":
                state.release.wait(60)
                return
            if state.mode == "fail":
                state.refused += 1
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = verify_webhook(SECRET, raw, dict(self.headers))
            state.got.append((time.monotonic(), dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/events"
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def box(tmp_path: Path, **kw: Any) -> AsyncIterator[Outbox]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    async with store.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sender = WebhookSender(SECRET, allow_private=True)
    try:
        yield Outbox(store, sender, max_age=24 * 3600, max_backoff=300, **kw)
    finally:
        await sender.close()
        await store.close()


async def test_a_hanging_and_a_failing_receiver_do_not_delay_a_healthy_one(
    tmp_path: Path,
) -> None:
    with (
        receiver("hang") as (hanging, hanging_url),
        receiver("fail") as (failing, failing_url),
        receiver() as (healthy, healthy_url),
    ):
        async with box(tmp_path, send_limit=30.0) as out:
            out.route("slow", Route(hanging_url, {}, TYPES))
            out.route("broken", Route(failing_url, {}, TYPES))
            out.route("fine", Route(healthy_url, {}, TYPES))
            async with asyncio.TaskGroup() as tg:
                workers = [tg.create_task(out.run_writer()), tg.create_task(out.run_delivery())]
                # The bad receivers get their events first, many of them.
                for i in range(10):
                    out.route(f"slow-{i}", Route(hanging_url, {}, TYPES))
                    out.emit(Event("status-update", f"slow-{i}", 0, {}))
                for i in range(10):
                    out.route(f"broken-{i}", Route(failing_url, {}, TYPES))
                    out.emit(Event("status-update", f"broken-{i}", 0, {}))
                for i in range(10):
                    out.emit(Event("status-update", "slow", 0, {"n": i}))
                await wait_until(lambda: failing.refused >= 4)
                delays = []
                for i in range(5):
                    sent = time.monotonic()
                    out.emit(Event("status-update", "fine", 0, {"n": i}))
                    await wait_until(lambda i=i: len(healthy.got) > i)
                    delays.append(healthy.got[i][0] - sent)
                for worker in workers:
                    worker.cancel()
        hanging.release.set()
    print(f"healthy receiver: delays {[round(d * 1000) for d in delays]} ms")
    assert max(delays) < 1.0, delays
    assert [body["message"]["n"] for _, _, body in healthy.got] == [0, 1, 2, 3, 4]


async def test_a_retried_event_keeps_its_webhook_id(tmp_path: Path) -> None:
    clock = ManualClock()
    with receiver("fail") as (state, url):
        async with box(tmp_path, clock=clock) as out:
            out.route("c1", Route(url, {}, TYPES))
            event = Event("hang", "c1", clock.wall(), {})
            out.emit(event)
            await out.flush()
            for _ in range(3):
                await out.deliver_due()
                await clock.advance(10)
            assert state.refused == 3
            state.mode = "ok"
            await out.deliver_due()
    assert len(state.got) == 1
    _at, headers, body = state.got[0]
    assert headers["webhook-id"] == event.id == body["id"]


async def test_each_calls_events_keep_their_order_through_a_long_outage(tmp_path: Path) -> None:
    clock = ManualClock()
    with receiver("fail") as (state, url):
        async with box(tmp_path, clock=clock) as out:
            calls = [f"c{i}" for i in range(4)]
            for call_id in calls:
                out.route(call_id, Route(url, {}, TYPES))
            for n, call_id in itertools.product(range(6), calls):
                out.emit(Event("status-update", call_id, clock.wall(), {"n": n}))
                await clock.advance(0.5)
            await out.flush()
            while clock.monotonic() < 90:  # the receiver is down for 90 s
                await out.deliver_due()
                await clock.advance(1)
            state.mode = "ok"
            for _ in range(400):
                await out.deliver_due()
                await clock.advance(1)
                if len(state.got) == 24:
                    break
    order: dict[str, list[int]] = {}
    for _, _, body in state.got:
        order.setdefault(body["message"]["call"]["id"], []).append(body["message"]["n"])
    assert order == {call_id: list(range(6)) for call_id in calls}


async def test_a_report_made_twice_is_stored_and_sent_once(tmp_path: Path) -> None:
    clock = ManualClock()
    with receiver() as (state, url):
        async with box(tmp_path, clock=clock) as out:
            out.route("c1", Route(url, {}, TYPES))
            stable = event_id("status-update", "ended", "c1")
            for _ in range(3):
                out.emit(Event("status-update", "c1", clock.wall(), {}, id=stable))
                await out.flush()
            await out.deliver_due()
            async with out.store.engine.connect() as conn:
                count = (
                    await conn.execute(sa.select(sa.func.count()).select_from(outbox))
                ).scalar()
    assert count == 1
    assert [h["webhook-id"] for _, h, _ in state.got] == [stable]


async def test_the_client_waits_for_an_event_to_be_stored(tmp_path: Path) -> None:
    """``stored`` resolves only once the row is written; events not for the server URL
    have nothing to wait for."""
    async with box(tmp_path) as out:
        out.route("c1", Route("http://127.0.0.1:9/events", {}, TYPES))
        event = Event("hang", "c1", 0, {})
        out.emit(event)
        durable = out.stored(event.id)
        assert durable is not None and not durable.done()
        assert out.stored(Event("transcript", "c1", 0, {}).id) is None
        await out.flush()
        assert durable.done()
        async with out.store.engine.connect() as conn:
            ids = (await conn.execute(sa.select(outbox.c.id))).scalars().all()
        assert ids == [event.id]


async def wait_until(check: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_rows_a_dead_instance_was_sending_go_out_again_at_once(tmp_path: Path) -> None:
    """An instance died mid-send: its claimed rows are released when that is known,
    instead of waiting out their lease."""
    clock = ManualClock()
    with receiver() as (state, url):
        async with box(tmp_path, clock=clock, instance_id="a") as dead:
            dead.route("c1", Route(url, {}, TYPES))
            dead.emit(Event("hang", "c1", clock.wall(), {}))
            await dead.flush()
            assert len(await dead._claim()) == 1  # claimed, and then the process died
            survivor = Outbox(dead.store, dead.sender, max_age=3600, max_backoff=60, clock=clock)
            assert not await survivor.deliver_due(), "leased to the dead instance"
            assert await survivor.release_claims("b") == 0, "only the dead instance's rows"
            assert await survivor.release_claims("a") == 1
            assert await survivor.deliver_due()
    assert len(state.got) == 1


async def test_an_event_whose_route_cannot_be_loaded_blocks_nothing(tmp_path: Path) -> None:
    """A route loader that fails for one call (unknown call, an assistant that no longer
    loads) drops that call's event; the next events are stored."""
    clock = ManualClock()

    async def loader(call_id: str) -> Route | None:
        if call_id == "gone":
            raise LookupError("no such call")
        return Route("http://127.0.0.1:9/events", {}, TYPES)

    async with box(tmp_path, clock=clock, route_loader=loader) as out:
        broken = Event("hang", "gone", clock.wall(), {})
        fine = Event("hang", "c1", clock.wall(), {})
        out.emit(broken)
        out.emit(fine)
        waits = [out.stored(broken.id), out.stored(fine.id)]
        await out.flush()
        assert all(w is not None and w.done() for w in waits)
        async with out.store.engine.connect() as conn:
            ids = (await conn.execute(sa.select(outbox.c.id))).scalars().all()
    assert ids == [fine.id]
