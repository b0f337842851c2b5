"""The outbox: a receiver that is down for an hour gets every event afterwards, in order."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backchannel import Event, ManualClock, SqlStore, verify_webhook
from backchannel.server.db import metadata, outbox
from backchannel.server.outbox import Outbox, Route
from backchannel.server.webhooks import WebhookSender

pytestmark = pytest.mark.anyio
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@contextmanager
def receiver() -> Iterator[tuple[dict[str, Any], str]]:
    state: dict[str, Any] = {"up": False, "got": [], "refused": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if not state["up"]:
                state["refused"] += 1
                self.send_response(503)
                self.end_headers()
                return
            state["got"].append(verify_webhook(SECRET, raw, dict(self.headers)))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/events"
    finally:
        server.shutdown()
        server.server_close()


async def test_events_survive_an_hour_long_outage_and_arrive_in_order(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    engine = store.engine
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    clock = ManualClock()
    sender = WebhookSender(SECRET, allow_private=True)
    with receiver() as (state, url):
        box = Outbox(store, sender, max_age=24 * 3600, max_backoff=300, clock=clock)
        box.route("c1", Route(url, {"X-Vapi-Secret": "s"}, frozenset({"status-update", "hang"})))
        box.route("c2", None)
        for i in range(5):
            box.emit(Event("status-update", "c1", clock.wall(), {"n": i}))
        box.emit(Event("transcript", "c1", clock.wall(), {}))  # not subscribed
        box.emit(Event("status-update", "c2", clock.wall(), {}))  # no server URL
        await box.flush()

        attempts_at: list[float] = []
        while clock.monotonic() < 3600:  # the receiver is down for an hour
            if await box.deliver_due():
                attempts_at.append(clock.monotonic())
            await clock.advance(1)
        assert state["got"] == []
        gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
        assert gaps[:4] == [1, 2, 4, 8], "exponential backoff"
        assert max(gaps) <= 301, "capped"
        state["up"] = True
        await clock.advance(301)
        await box.deliver_due()
        assert [m["message"]["n"] for m in state["got"]] == [0, 1, 2, 3, 4]
        assert all(m["message"]["type"] == "status-update" for m in state["got"])
        async with engine.connect() as conn:
            rows = (await conn.execute(outbox.select())).all()
        assert {r._mapping["status"] for r in rows} == {"delivered"}
        assert len(rows) == 5
        await box.deliver_due()
        assert len(state["got"]) == 5, "delivered once"
    await sender.close()
    await engine.dispose()


async def test_events_too_old_are_given_up(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    engine = store.engine
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    clock = ManualClock()
    sender = WebhookSender(SECRET, allow_private=True)
    with receiver() as (_state, url):
        box = Outbox(store, sender, max_age=60, max_backoff=10, clock=clock)
        box.route("c1", Route(url, {}, frozenset({"hang"})))
        box.emit(Event("hang", "c1", clock.wall(), {}))
        await box.flush()
        for _ in range(120):
            await box.deliver_due()
            await clock.advance(1)
        async with engine.connect() as conn:
            row = (await conn.execute(outbox.select())).one()
        assert row._mapping["status"] == "dead"
        assert row._mapping["last_error"] == "HTTP 503"
    await sender.close()
    await engine.dispose()


def test_event_body_is_vapi_shaped() -> None:
    body = Event("hang", "c1", 1.5, {"x": 1}).to_message()
    assert body == {"message": {"type": "hang", "timestamp": 1500, "call": {"id": "c1"}, "x": 1}}
    json.dumps(body)
