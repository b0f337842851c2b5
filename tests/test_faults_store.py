"""The store goes away for several seconds while results for a live call arrive.

Three real outages, each under a live text call (client WebSocket open) that waits on
several async tool calls:

* SQLite: another process holds ``BEGIN EXCLUSIVE`` on the server's database file past
  the server's busy timeout (1 s here);
* PostgreSQL: the server's own throwaway cluster is stopped (``-m immediate``) and
  started again;
* a full disk: the server's SQLite file lives on a small tmpfs that is filled to
  ``ENOSPC`` and then emptied.

Results are posted during the outage the way a real sender posts them: retried after a
short pause on ``503``, for a bounded time. Every answer must be 2xx or ``503
store_unavailable`` in the error envelope; afterwards every result is in the
conversation exactly once, ``/ready`` is 200 with every worker running, the socket never
closed, the call still answers, and its event webhooks (with ``end-of-call-report``)
arrive with one ``webhook-id`` per event.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from backchannel import Client, verify_webhook

from .e2e_calls import Session, said, vapi_assistant
from .fake_openai import serve as serve_model
from .faults import small_tmpfs, sqlite_lock, throwaway_postgres
from .peers import ServerProcess, ToolServer, rule_model, server_process, tool_server

pytestmark = pytest.mark.anyio

#: Async tool calls the call waits on; the first is answered just before the outage.
RESULTS = 6
#: A sender retries a 503 after this pause, for at most ``SEND_LIMIT`` seconds.
RETRY_PAUSE = 0.5
SEND_LIMIT = 60.0
#: Every "until it happens" wait gives up after this long.
WAIT = 60.0
WORKERS = {"outbox-writer", "outbox-delivery", "heartbeat"}
#: Event types the test assistant sends to its server URL: Vapi's end-of-call report and
#: friends, plus per-result and transcript events, so events made during the outage
#: must go through the outbox too.
SERVER_MESSAGES = [
    "end-of-call-report",
    "tool-result-after-call",
    "status-update",
    "tool-calls-cancelled",
    "tool-calls-result",
    "transcript",
]


# --------------------------------------------------------------------------- peers


@dataclass
class Deliveries:
    """The event-webhook receiver: every signed delivery, its ``webhook-id`` and body."""

    secret: str = ""
    got: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_call(self, call_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [d for d in self.got if d["body"]["message"]["call"]["id"] == call_id]


@contextmanager
def event_receiver() -> Iterator[tuple[Deliveries, str]]:
    deliveries = Deliveries()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                body = verify_webhook(deliveries.secret, raw, dict(self.headers))
            except Exception:
                with deliveries.lock:
                    deliveries.bad_signatures += 1
                status = 401
            else:
                with deliveries.lock:
                    deliveries.got.append(
                        {"webhookId": self.headers.get("webhook-id"), "body": body}
                    )
                status = 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield deliveries, f"http://127.0.0.1:{server.server_address[1]}/events"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Stack:
    server: ServerProcess
    tools: ToolServer
    tools_url: str
    deliveries: Deliveries
    events_url: str


@contextmanager
def serving(
    tmp: Path, *, db_url: str | None = None, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A real server process with a tool server, an event receiver and the rule model."""
    with (
        tool_server() as (tools, tools_url),
        event_receiver() as (deliveries, events_url),
        serve_model(rule_model) as (_model, model_url),
        server_process(tmp, model_url, db_url=db_url, env=env) as server,
    ):
        tools.secret = deliveries.secret = server.webhook_secret
        tools.modes["check_order"] = "ack"
        yield Stack(server, tools, tools_url, deliveries, events_url)


class LiveSession(Session):
    """A client socket read without pause in the background, so the server's keepalive
    pings are answered whatever the test is doing, keeping every event."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws)
        self.closed: str | None = None
        #: When each event arrived (``time.monotonic()``), index for index with ``events``.
        self.arrived: list[float] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, str):
                    self.arrived.append(time.monotonic())
                    self.events.append(json.loads(frame))
        except ConnectionClosed as exc:
            self.closed = f"closed: {exc}"
        else:
            self.closed = f"closed by the server (code {self.ws.close_code})"

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for event in list(self.events):
                if predicate(event):
                    return event
            if self.reader.done() or time.monotonic() > deadline:
                seen = [
                    (e.get("type"), e.get("transcript") or e.get("error"))
                    for e in self.events[-12:]
                ]
                why = self.closed or f"nothing in {within:.0f} s"
                raise AssertionError(f"no matching event ({why}); last events: {seen}")
            await asyncio.sleep(0.05)

    def results_seen(self) -> list[str]:
        return [
            e["toolCallResult"]["toolCallId"]
            for e in self.events
            if e.get("type") == "tool-calls-result"
        ]


# --------------------------------------------------------------------------- helpers


@dataclass
class Tally:
    """What a sender saw: one ``sent`` per result, one ``attempt`` per POST."""

    sent: int = 0
    attempts: int = 0
    accepted: int = 0
    duplicate: int = 0
    unavailable: int = 0
    transport_errors: int = 0
    #: The longest any single POST took to be answered, in seconds.
    slowest: float = 0.0
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def five_hundred_problem(response: httpx.Response) -> str | None:
    """What is wrong with a 5xx answer's envelope, if anything."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} without a JSON body: {response.text[:300]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not error.get("code") or "message" not in error:
        return f"{response.status_code} outside the error envelope: {body}"
    if not error.get("requestId"):
        return f"{response.status_code} without error.requestId: {body}"
    return None


async def post_result(
    http: httpx.AsyncClient, call: dict[str, Any], tool_call_id: str, result: Any, tally: Tally
) -> None:
    """Post one result like a real sender: retry ``503 store_unavailable`` after a pause,
    for at most ``SEND_LIMIT`` s. Anything else than 2xx or that 503 is a problem."""
    tally.sent += 1
    path = f"/calls/{call['id']}/tool-calls/{tool_call_id}/result"
    auth = {"Authorization": f"Bearer {call['token']}"}
    deadline = time.monotonic() + SEND_LIMIT
    while time.monotonic() < deadline:
        tally.attempts += 1
        started = time.monotonic()
        try:
            response = await http.post(path, json={"result": result}, headers=auth)
        except httpx.HTTPError as exc:
            tally.transport_errors += 1
            tally.problems.append(f"POST {tool_call_id}: no answer ({type(exc).__name__}: {exc})")
            await asyncio.sleep(RETRY_PAUSE)
            continue
        tally.slowest = max(tally.slowest, time.monotonic() - started)
        status = response.status_code
        if status >= 500 and (problem := five_hundred_problem(response)):
            tally.problems.append(f"POST {tool_call_id}: {problem}")
            return
        if 200 <= status < 300:
            body = response.json()
            tally.answers[tool_call_id] = body
            if body.get("outcome") == "accepted":
                tally.accepted += 1
            elif body.get("outcome") == "duplicate":
                tally.duplicate += 1  # the write before a 503 had committed after all
            else:
                tally.problems.append(f"POST {tool_call_id}: unexpected outcome {body}")
            return
        if status == 503 and response.json()["error"]["code"] == "store_unavailable":
            tally.unavailable += 1
            await asyncio.sleep(RETRY_PAUSE)
            continue
        tally.problems.append(f"POST {tool_call_id}: {status} {response.text[:300]}")
        return
    tally.problems.append(f"POST {tool_call_id}: still not taken after {SEND_LIMIT:.0f} s")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> bool:
    """Poll ``check`` until it is true (True) or ``within`` s have passed (False)."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.25)


def ready_problem(response: httpx.Response, workers: set[str], redis: str = "off") -> str | None:
    """Why a ``/ready`` answer is not "ready, every worker running", if it is not."""
    if response.status_code != 200:
        return f"/ready {response.status_code}: {response.text[:400]}"
    body = response.json()
    checks = body.get("checks", {})
    expected = {
        "status": "ready",
        "store": "ok",
        "redis": redis,
        "workers": dict.fromkeys(sorted(workers), "running"),
    }
    got = {
        "status": body.get("status"),
        "store": checks.get("store"),
        "redis": checks.get("redis"),
        "workers": dict(sorted(checks.get("workers", {}).items())),
    }
    return None if got == expected else f"/ready says {body}"


def not_ready_problem(response: httpx.Response) -> str | None:
    """What is wrong with a ``/ready`` answer's shape (503 ``not_ready`` with checks)."""
    if response.status_code == 200:
        return None if response.json().get("status") == "ready" else response.text[:300]
    if response.status_code != 503:
        return f"/ready answered {response.status_code}: {response.text[:300]}"
    try:
        error = response.json()["error"]
        shaped = error["code"] == "not_ready" and "message" in error
        shaped = shaped and isinstance(error["details"]["checks"], dict)
    except (ValueError, KeyError, TypeError):
        shaped = False
    if not shaped:
        return f"/ready 503 outside its envelope: {response.text[:300]}"
    if not error.get("requestId"):  # every 5xx carries one
        return f"/ready 503 without error.requestId: {response.text[:300]}"
    return None


async def watch_ready(
    http: httpx.AsyncClient, stop: asyncio.Event, seen: list[tuple[int, dict[str, Any]]]
) -> None:
    """Poll ``/ready`` until ``stop``; keep each answer's status and body."""
    while not stop.is_set():
        try:
            response = await http.get("/ready", timeout=10)
            try:
                body = response.json()
            except ValueError:
                body = {"raw": response.text[:300]}
            seen.append((response.status_code, body))
            problem = not_ready_problem(response)
            kind = problem and problem.split(":")[0]
            if problem and all(b["problem"].split(":")[0] != kind for st, b in seen if st == -1):
                seen.append((-1, {"problem": problem}))  # each kind of problem once
        except httpx.HTTPError as exc:
            seen.append((0, {"error": f"{type(exc).__name__}: {exc}"}))
        await asyncio.sleep(0.5)


def log_tail(server: ServerProcess, limit: int = 3000) -> str:
    return server.log.read_text(errors="replace")[-limit:]


# --------------------------------------------------------------------------- the scenario


async def results_through_an_outage(
    name: str,
    stack: Stack,
    *,
    fault: Callable[[], object],
    repair: Callable[[], object],
    outage: float,
    refuses: bool,
    unready: bool,
) -> None:
    """The scenario every test here runs: a live call waiting on ``RESULTS`` async tool
    calls; ``fault()``; results posted during ``outage`` s; ``repair()``; everything lands
    once and the call, its socket, its webhooks and ``/ready`` are well again."""
    server, tools = stack.server, stack.tools
    assistant = vapi_assistant(stack.tools_url)
    assistant["server"]["url"] = stack.events_url
    assistant["serverMessages"] = SERVER_MESSAGES
    problems: list[str] = []
    tally = Tally()
    ready_seen: list[tuple[int, dict[str, Any]]] = []
    async with Client(server.url, api_key=server.api_key) as admin:
        call = await admin.create_call(assistant=assistant)
    auth = {"Authorization": f"Bearer {call['token']}"}
    async with (
        connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
    ):
        s = LiveSession(ws)
        tasks: list[asyncio.Task[None]] = [s.reader]
        try:
            await s.until(said("Hello, order desk."), within=30)
            await s.send({"type": "user-message", "content": f"batch {RESULTS}"})
            batch = await s.until(lambda e: e.get("type") == "tool-calls", within=30)
            ids = [t["id"] for t in batch["toolCallList"]]
            assert len(ids) == RESULTS
            await s.until(said("I will tell you when it is ready."), within=30)
            called = {c["call"].id for c in tools.calls}
            for _ in range(int(WAIT / 0.1)):
                called = {c["call"].id for c in tools.calls}
                if set(ids) <= called:
                    break
                await asyncio.sleep(0.1)
            assert set(ids) <= called, "the tool server never got every tool call"

            # One result lands just before the outage: its delivery and announcement
            # are written while the store is away (bookkeeping retried, call goes on).
            await post_result(http, call, ids[0], {"n": 0}, tally)
            await s.until(lambda e: ids[0] in s.results_seen(), within=30)

            stop_watching = asyncio.Event()
            watcher = asyncio.create_task(watch_ready(http, stop_watching, ready_seen))
            tasks.append(watcher)
            await asyncio.to_thread(fault)
            broke = time.monotonic()

            async def later(delay: float, n: int) -> None:
                await asyncio.sleep(delay)
                await post_result(http, call, ids[n], {"n": n}, tally)

            spread = outage / 2
            senders = [
                asyncio.create_task(later(spread * (n - 1) / (RESULTS - 1), n))
                for n in range(1, RESULTS)
            ]
            tasks += senders
            await asyncio.sleep(min(2.0, outage / 3))
            asked = len(s.events)
            await s.send({"type": "user-message", "content": "hello during the outage"})
            await asyncio.sleep(max(0.0, outage - (time.monotonic() - broke)))
            # From here the store may answer before ``repair`` returns (PostgreSQL takes
            # connections before pg_ctl says so): events shown from then on may be stored.
            repairing = time.monotonic()
            await asyncio.to_thread(repair)
            repaired = time.monotonic()
            await asyncio.gather(*senders)
            stop_watching.set()
            await watcher
            problems += tally.problems
            if refuses and not tally.unavailable:
                problems.append("no result was ever answered 503: the fault did not bite")

            # Every result in the conversation exactly once.
            async def all_delivered() -> bool:
                return set(ids) <= set(s.results_seen())

            if not await eventually(all_delivered):
                missing = set(ids) - set(s.results_seen())
                problems.append(f"results never reached the call: {missing}")

            # /ready: 200 again, every worker running.
            last_ready: list[str | None] = [None]

            async def ready_again() -> bool:
                try:
                    last_ready[0] = ready_problem(await http.get("/ready"), WORKERS)
                except httpx.HTTPError as exc:
                    last_ready[0] = f"/ready failed: {exc!r}"
                return last_ready[0] is None

            if not await eventually(ready_again):
                problems.append(f"/ready not ready again in {WAIT:.0f} s: {last_ready[0]}")
            ready_after = time.monotonic() - repaired
            for status, body in ready_seen:
                if status == -1:
                    problems.append(body["problem"])
                elif status == 0:
                    problems.append(f"/ready did not answer during the outage: {body['error']}")
            # Events that also go to the server URL are shown to the client only once
            # stored: none may reach it while the store could not have stored them.
            shown_unstored = sum(
                broke + 1.0 < at < repairing and e.get("type") in SERVER_MESSAGES
                for at, e in zip(s.arrived, s.events, strict=True)
            )
            if shown_unstored:
                problems.append(f"{shown_unstored} events shown to the client before stored")
            failing = [b for st, b in ready_seen if st == 503]
            if unready and not any(
                b["error"]["details"]["checks"].get("store") != "ok" for b in failing
            ):
                problems.append(
                    "/ready never said the store was failing during the outage: "
                    f"{sorted({st for st, _b in ready_seen})}"
                )

            # The ledger: each result succeeded, delivered and spoken.
            record: dict[str, Any] = {}

            async def settled() -> bool:
                nonlocal record
                record = (await http.get(f"/calls/{call['id']}", headers=auth)).json()
                states = {t["toolCallId"]: t for t in record.get("toolCalls", [])}
                return all(
                    i in states
                    and states[i]["state"] == "succeeded"
                    and states[i]["deliveredAt"] is not None
                    and states[i]["spokenAt"] is not None
                    for i in ids
                )

            if not await eventually(settled):
                rows = [
                    (t["toolCallId"], t["state"], t["deliveredAt"], t["spokenAt"])
                    for t in record.get("toolCalls", [])
                ]
                problems.append(f"ledger not settled (succeeded/delivered/spoken): {rows}")
            results = {
                t["toolCallId"]: t["result"] for t in record.get("toolCalls", []) if t["result"]
            }
            wrong = {i: results.get(i) for n, i in enumerate(ids) if results.get(i) != {"n": n}}
            if wrong:
                problems.append(f"ledger results differ from what was posted: {wrong}")

            # The call goes on: the message sent during the outage is answered, its
            # socket never closed, and it still answers a new one.
            def okay_after(index: int) -> int | None:
                return next(
                    (i for i, e in enumerate(s.events) if i >= index and said("Okay.")(e)),
                    None,
                )

            answer_at = "never"
            try:
                await s.until(lambda _e: okay_after(asked) is not None, within=30)
            except AssertionError as exc:
                problems.append(f"the message sent during the outage was not answered: {exc}")
            else:
                index = okay_after(asked)
                assert index is not None
                answer_at = f"{s.arrived[index] - repaired:+.1f}s"
            if s.closed is not None:
                problems.append(f"the client socket did not stay open: {s.closed}")
            else:
                marker = len(s.said())
                await s.send({"type": "user-message", "content": "hello"})
                try:
                    await s.until(
                        lambda _e: any(t == "Okay." for t in s.said()[marker:]), within=30
                    )
                except AssertionError as exc:
                    problems.append(f"the call did not answer a new message: {exc}")
            seen = Counter(s.results_seen())
            updates = Counter(t for t in s.said() if t.startswith("Update:"))
            repeated = {t: n for t, n in updates.items() if n > 1}
            if repeated:
                problems.append(f"announcements said more than once: {repeated}")

            # End the call: its end-of-call report comes, once per webhook-id.
            ended = await http.post(f"/calls/{call['id']}/end", headers=auth)
            if ended.status_code != 200:
                problems.append(f"POST /end answered {ended.status_code}: {ended.text[:300]}")
        finally:
            for task in tasks:
                task.cancel()

    def reports() -> list[dict[str, Any]]:
        return [
            d
            for d in stack.deliveries.of_call(call["id"])
            if d["body"]["message"]["type"] == "end-of-call-report"
        ]

    async def reported() -> bool:
        return bool(reports())

    if not await eventually(reported):
        problems.append("no end-of-call-report webhook arrived")
    await asyncio.sleep(1.0)  # room for a stray second report to show up
    problems += webhook_problems(stack.deliveries, call["id"], ids)
    report_ids = {d["webhookId"] for d in reports()}
    if len(report_ids) > 1:
        problems.append(f"end-of-call-report under {len(report_ids)} webhook-ids: {report_ids}")
    for d in reports()[:1]:
        rows = {t["toolCallId"]: t["state"] for t in d["body"]["message"].get("toolCalls", [])}
        if {i: rows.get(i) for i in ids} != dict.fromkeys(ids, "succeeded"):
            problems.append(f"end-of-call-report tool calls: {rows}")

    problems = list(dict.fromkeys(problems))  # each problem once
    delivered = len(set(ids) & set(seen))
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    hooks = stack.deliveries.of_call(call["id"])
    redelivered = sum(n - 1 for n in Counter(d["webhookId"] for d in hooks).values())
    print(
        f"\n[{name}] outage={repaired - broke:.1f}s sent={tally.sent} "
        f"attempts={tally.attempts} accepted={tally.accepted} duplicate={tally.duplicate} "
        f"503={tally.unavailable} transport_errors={tally.transport_errors} "
        f"delivered={delivered} lost={len(ids) - delivered} duplicated={duplicated} "
        f"ready_503s={sum(st == 503 for st, _b in ready_seen)} "
        f"ready_after={ready_after:.1f}s webhooks={len(hooks)} "
        f"webhook_redeliveries={redelivered} slowest_answer={tally.slowest:.1f}s "
        f"outage_message_answered_at={answer_at} (vs repair) "
        f"shown_to_client_unstored={shown_unstored} problems={len(problems)}"
    )
    assert not problems, "\n".join(problems) + "\n--- server log ---\n" + log_tail(server)


def webhook_problems(deliveries: Deliveries, call_id: str, ids: list[str]) -> list[str]:
    """Each delivery's body ``id`` is its ``webhook-id``; a webhook-id always carries the
    same event; each result's ``tool-calls-result`` is one event (one webhook-id)."""
    problems = []
    if deliveries.bad_signatures:
        problems.append(f"{deliveries.bad_signatures} webhooks with bad signatures")
    bodies: dict[str, str] = {}
    per_result: dict[str, set[str]] = {}
    for d in deliveries.of_call(call_id):
        body, hook = d["body"], d["webhookId"]
        if not hook or body.get("id") != hook:
            problems.append(f"body id {body.get('id')!r} is not its webhook-id {hook!r}")
        text = json.dumps(body, sort_keys=True)
        if bodies.setdefault(hook, text) != text:
            problems.append(f"webhook-id {hook} carried two different events")
        message = body["message"]
        if message["type"] == "tool-calls-result":
            tool_call_id = message["toolCallResult"]["toolCallId"]
            per_result.setdefault(tool_call_id, set()).add(hook)
    for tool_call_id in ids:
        hooks = per_result.get(tool_call_id, set())
        if len(hooks) != 1:
            problems.append(
                f"tool-calls-result webhook for {tool_call_id}: {len(hooks)} event ids {hooks}"
            )
    return problems


# --------------------------------------------------------------------------- the three outages


@pytest.fixture
def sqlite_stack(tmp_path: Path) -> Iterator[Stack]:
    with serving(tmp_path, env={"BACKCHANNEL_SQLITE_BUSY_TIMEOUT_SECONDS": "1"}) as stack:
        yield stack


async def test_results_through_an_sqlite_lock_past_the_busy_timeout(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    with sqlite_lock(tmp_path / "server.db") as lock:
        await results_through_an_outage(
            "sqlite-lock",
            sqlite_stack,
            fault=lock.hold,
            repair=lock.release,
            outage=8.0,
            refuses=True,
            unready=False,  # WAL: reads go on, only writes fail
        )


@pytest.fixture
def postgres_stack(tmp_path: Path) -> Iterator[tuple[Stack, Any]]:
    with throwaway_postgres() as pg:
        url = pg.create_database("backchannel")

        # The throwaway cluster runs with synchronous_commit = off (fast, and fine for a
        # cluster that is thrown away), so an immediate stop loses commits it had already
        # acknowledged. The product can only promise what its database keeps: turn it on.
        def psql(database: str, sql: str) -> str:
            out = subprocess.run(
                [
                    str(pg.bin / "psql"),
                    *("-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", database),
                    *("-v", "ON_ERROR_STOP=1", "-tAc", sql),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return out.stdout.strip()

        psql("postgres", "ALTER DATABASE backchannel SET synchronous_commit = on")
        assert psql("backchannel", "SHOW synchronous_commit") == "on"
        subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "db", "upgrade", "--db", url],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with serving(tmp_path, db_url=url) as stack:
            yield stack, pg


async def test_results_through_a_postgres_restart(postgres_stack: tuple[Stack, Any]) -> None:
    stack, pg = postgres_stack
    await results_through_an_outage(
        "postgres-down",
        stack,
        fault=pg.stop,
        repair=pg.start,
        outage=8.0,
        refuses=True,
        unready=True,
    )


@pytest.fixture
def disk_stack(tmp_path: Path) -> Iterator[tuple[Stack, Any]]:
    with small_tmpfs(32) as disk:
        url = f"sqlite+aiosqlite:///{disk.path}/server.db"
        with serving(tmp_path, db_url=url) as stack:
            yield stack, disk


async def test_results_through_a_full_disk(disk_stack: tuple[Stack, Any]) -> None:
    stack, disk = disk_stack
    await results_through_an_outage(
        "disk-full",
        stack,
        fault=disk.fill,
        repair=disk.free,
        outage=6.0,
        refuses=True,
        unready=False,  # reads of a full disk still answer
    )
