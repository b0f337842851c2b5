"""The outbox with a bad receiver beside good ones: event → delivered latency and
throughput for healthy receivers while one receiver hangs and one answers 500.

    .venv/bin/python benchmarks/outbox_delivery.py [--calls 50] [--events 20] [--postgres URL]

Real SQLite (or PostgreSQL) store, real signed HTTP deliveries to receivers on loopback
(threaded HTTP servers in this process). Each healthy call's events go to one of four
healthy receivers; a tenth of the calls go to the hanging receiver and a tenth to the
failing one, emitted first so they are always in the way.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from backchannel import Event, SqlStore
from backchannel.server.db import metadata
from backchannel.server.outbox import Outbox, Route
from backchannel.server.webhooks import WebhookSender

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TYPES = frozenset({"status-update"})


@contextmanager
def receiver(mode: str, arrivals: dict[str, float]) -> Iterator[str]:
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if mode == "hang":
                release.wait(60)
                return
            if mode == "fail":
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            arrivals[self.headers["webhook-id"]] = time.monotonic()
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/events"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


async def run(calls: int, events: int, url: str) -> None:
    arrivals: dict[str, float] = {}
    emitted: dict[str, float] = {}
    with ExitStack() as stack:
        good = [stack.enter_context(receiver("ok", arrivals)) for _ in range(4)]
        hanging = stack.enter_context(receiver("hang", arrivals))
        failing = stack.enter_context(receiver("fail", arrivals))
        store = SqlStore(url)
        async with store.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        sender = WebhookSender(SECRET, allow_private=True)
        out = Outbox(store, sender, max_age=3600, max_backoff=60)
        bad = max(1, calls // 10)
        for i in range(bad):
            out.route(f"hang-{i}", Route(hanging, {}, TYPES))
            out.route(f"fail-{i}", Route(failing, {}, TYPES))
        for i in range(calls):
            out.route(f"call-{i}", Route(good[i % len(good)], {}, TYPES))
        async with asyncio.TaskGroup() as tg:
            workers = [tg.create_task(out.run_writer()), tg.create_task(out.run_delivery())]
            for n in range(events):
                for i in range(bad):
                    out.emit(Event("status-update", f"hang-{i}", time.time(), {"n": n}))
                    out.emit(Event("status-update", f"fail-{i}", time.time(), {"n": n}))
            started = time.monotonic()
            for n in range(events):
                for i in range(calls):
                    event = Event("status-update", f"call-{i}", time.time(), {"n": n})
                    emitted[event.id] = time.monotonic()
                    out.emit(event)
                await asyncio.sleep(0.01)
            total = calls * events
            deadline = time.monotonic() + 120
            while len(arrivals) < total and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
            for worker in workers:
                worker.cancel()
        await sender.close()
        await store.close()
    latencies = sorted((arrivals[i] - t) * 1000 for i, t in emitted.items() if i in arrivals)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(
        f"{url.split(':')[0]}: {calls} calls x {events} events to 4 healthy receivers, "
        f"{bad} calls each to a hanging and a failing receiver"
    )
    rate = len(latencies) / elapsed
    print(f"  delivered {len(latencies)}/{total} in {elapsed:.1f} s ({rate:.0f}/s)")
    print(
        f"  event → delivered: p50 {statistics.median(latencies):.0f} ms, p95 {pct(0.95):.0f} ms,"
        f" p99 {pct(0.99):.0f} ms, max {latencies[-1]:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--postgres", help="a PostgreSQL URL to run on as well")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.calls, args.events, f"sqlite+aiosqlite:///{Path(tmp)}/outbox.db"))
    if args.postgres:
        with fresh_database(args.postgres) as url:
            asyncio.run(run(args.calls, args.events, url))
    return 0


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty database on the server of ``url`` for the run, dropped after."""
    import uuid

    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"bc_bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(sql(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    sys.exit(main())
