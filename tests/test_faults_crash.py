"""Crash safety: ``kill -9`` at seeded points of calls with pending async tools.

The promise: every result the server answered ``accepted`` is either spoken exactly once
before the crash or reported after it (``tool-result-after-call`` to the assistant's
server URL), every call gets its ``end-of-call-report``, nothing is lost and nothing is
said twice. Webhooks go through a durable outbox with stable event ids, so a receiver that
drops repeats by ``webhook-id`` sees each report once.

Each round starts a real ``backchannel serve``, opens four text calls with one or two
pending async ``check_order`` tool calls each, and kills the process (SIGKILL) at a
seeded moment relative to one call's progress, while the others stand at other stages:

* ``recorded`` - just after the tool call is recorded, before any result;
* ``accepted`` - right after a result POST answered ``accepted``;
* ``generating`` - while the model is generating the result's announcement;
* ``mid-announcement`` - after the announcement's first sentence reached the client,
  before the response finished (so the ledger has no ``spokenAt``);
* ``hang-up`` - just after ``POST /calls/{id}/end`` was sent (a result accepted first);
* ``hang-up-shown`` - the same, killed the moment the client is shown that the call ended
  (``status-update`` ended: an event for the server URL, so stored before it is shown).

Beside it: a call whose results were fully spoken before the kill, a call with no
result yet, and a call whose results are POSTed at seeded moments around the kill (a POST
cut by the kill is not accepted; it is retried after the restart, as a backend would).

The server restarts on the same database under the same instance id; then the test
waits (bounded, polling conditions) for the restart's reports, POSTs the results never
sent (``late``), repeats every accepted-but-unspoken result (``duplicate``, reported again
under the same event id), and checks the receiver's events, the outbox table and the
client's transcripts. The model is the rule model, except that an announcement names
every result it covers and streams slowly (a pause before it and between its sentences),
so the kill can land inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from backchannel import BackchannelError, Client, verify_webhook
from backchannel.server.db import outbox

from .e2e_calls import Session, vapi_assistant
from .fake_openai import FakeOpenAI, chunk
from .faults import kill9
from .peers import BACKENDS, ServerProcess, ToolServer, backend, rule_model, server_process

pytestmark = pytest.mark.anyio

KINDS = ("recorded", "accepted", "generating", "mid-announcement", "hang-up", "hang-up-shown")
#: One kill per round; each test runs ROUNDS_PER_TEST of them (per backend: all of these).
ROUND_KINDS = KINDS
ROUNDS_PER_TEST = 3
GROUPS = len(ROUND_KINDS) // ROUNDS_PER_TEST
ROLES = ("primary", "spoken", "idle", "racing")
#: The model thinks this long before an announcement, and pauses this long after its
#: first sentence (which names the results).
GENERATE_SECONDS = 0.4
SENTENCE_GAP_SECONDS = 0.5
#: Bound on every wait for a condition (a restarted server may wait out an outbox lease
#: of 15 s held by the killed process before it sends a call's events).
WITHIN = 45.0
TOKEN = re.compile(r"res-[0-9a-z-]*[0-9a-z]")
ANNOUNCEMENT = "Update:"
#: Event types that go to the server URL (the test assistant's ``serverMessages``).
SERVER_TYPES = frozenset(vapi_assistant("http://x")["serverMessages"])

#: Counts over every test of the module, printed at its end.
TOTALS: Counter[str] = Counter()


# -- peers ---------------------------------------------------------------------------------


class QuietServer(ThreadingHTTPServer):
    """A loopback HTTP server whose handlers may lose their peer to ``kill -9``."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def crash_model(body: dict[str, Any]) -> Any:
    """The rule model, but an announcement names every result it covers and is slow."""
    for message in reversed(body["messages"]):
        if message["role"] == "assistant":
            continue
        content = str(message.get("content") or "")
        if message["role"] == "system" and "background tool calls" in content:
            return _announcement(TOKEN.findall(content))
        break
    return rule_model(body)


def _announcement(tokens: list[str]) -> Iterator[dict[str, Any]]:
    time.sleep(GENERATE_SECONDS)  # generating: nothing streamed yet
    names = " and ".join(dict.fromkeys(tokens)) or "nothing"
    yield chunk({"role": "assistant", "content": f"{ANNOUNCEMENT} {names}. "})
    time.sleep(SENTENCE_GAP_SECONDS)  # the first sentence is out; the response is not over
    yield chunk({"content": "That is all for now."})
    yield chunk({}, finish="stop")


@contextmanager
def receiver() -> Iterator[tuple[ToolServer, str]]:
    """The tool server of ``tests/peers.py`` (``check_order`` only acknowledges), whose
    event endpoint also keeps the body's ``id`` and the ``webhook-id`` header."""
    tools = ToolServer()
    tools.modes["check_order"] = "ack"
    base: Any = tools.handler()

    class Handler(base):  # type: ignore[misc]
        def do_POST(self) -> None:  # noqa: N802 (the handler's name)
            if self.path != "/events":
                super().do_POST()
                return
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                payload = verify_webhook(tools.secret, raw, dict(self.headers))
            except Exception:
                with tools.lock:
                    tools.bad_signatures += 1
                self._answer(401)
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            with tools.lock:
                tools.events.append(
                    {
                        "webhookId": headers.get("webhook-id"),
                        "bodyId": payload.get("id"),
                        **payload["message"],
                    }
                )
            self._answer(200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    with serving(Handler) as url:
        yield tools, url


# -- one round's calls ---------------------------------------------------------------------


@dataclass
class Post:
    tool_call_id: str
    token: str
    #: before (the kill) | retry (of a POST the kill cut) | late (first sent after the
    #: restart) | repeat (of an accepted, unspoken result, after the restart)
    phase: str
    answer: dict[str, Any] | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return (
            self.answer is not None
            and self.answer["outcome"] in ("accepted", "late")
            and not self.answer["duplicate"]
        )

    def __str__(self) -> str:
        return f"{self.phase}:{self.answer if self.answer is not None else self.error}"


@dataclass
class Line:
    """One call of a round, with its client socket."""

    round_no: int
    index: int
    role: str
    tools: int
    call: dict[str, Any]
    session: Session
    reader: asyncio.Task[None]
    tool_ids: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    posts: list[Post] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.call["id"])

    def seen(self, token: str) -> int:
        """How many announcements naming ``token`` the client was shown."""
        return sum(
            TOKEN.findall(text).count(token)
            for text in self.session.said()
            if text.startswith(ANNOUNCEMENT)
        )

    def posts_for(self, tool_call_id: str, *phases: str) -> list[Post]:
        return [p for p in self.posts if p.tool_call_id == tool_call_id and p.phase in phases]


async def _read(session: Session) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in session.ws:
            session.events.append(json.loads(raw))


@asynccontextmanager
async def opened(
    api: Client, tools_url: str, round_no: int, index: int, tools: int
) -> AsyncIterator[Line]:
    call = await api.create_call(assistant=vapi_assistant(tools_url))
    async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
        session = Session(ws)
        reader = asyncio.create_task(_read(session))
        try:
            yield Line(round_no, index, ROLES[index], tools, call, session, reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def order_ids(events: list[dict[str, Any]]) -> list[str]:
    return [
        t["id"]
        for e in events
        if e.get("type") == "tool-calls"
        for t in e["toolCallList"]
        if t["function"]["name"] == "check_order"
    ]


async def until(
    check: Callable[[], bool], what: str, within: float = WITHIN, every: float = 0.02
) -> None:
    if not await settle(check, within, every):
        raise AssertionError(f"not within {within:g} s: {what}")


async def settle(check: Callable[[], bool], within: float = WITHIN, every: float = 0.02) -> bool:
    """Poll ``check`` until it holds (True) or ``within`` seconds pass (False)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


async def poll(probe: Callable[[], Awaitable[bool]], what: str, within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(0.05)


async def ask(line: Line, *, until_said: bool = True) -> None:
    """Ask about the order: the model calls ``check_order`` (``batch 2``: twice)."""
    text = "Where is my order?" if line.tools == 1 else f"batch {line.tools}"
    await line.session.send({"type": "user-message", "content": text})
    await until(
        lambda: len(order_ids(line.session.events)) >= line.tools,
        f"call {line.index}: its tool calls",
    )
    line.tool_ids = order_ids(line.session.events)[: line.tools]
    line.tokens = {
        tcid: f"res-{line.round_no}-{line.index}-{k}" for k, tcid in enumerate(line.tool_ids)
    }
    if until_said:
        await until(
            lambda: "I will tell you when it is ready." in line.session.said(),
            f"call {line.index}: the placeholder reply",
        )


async def post(api: Client, line: Line, tool_call_id: str, phase: str) -> Post:
    sent = Post(tool_call_id, line.tokens[tool_call_id], phase)
    line.posts.append(sent)
    try:
        sent.answer = await api.submit_result(line.id, tool_call_id, sent.token)
    except (httpx.HTTPError, BackchannelError) as exc:
        sent.error = f"{type(exc).__name__}: {exc}"
    return sent


async def post_later(api: Client, line: Line, tool_call_id: str, delay: float) -> None:
    await asyncio.sleep(delay)
    await post(api, line, tool_call_id, "before")


def announcing(model: FakeOpenAI, tool_call_ids: list[str]) -> bool:
    """Whether the model was asked to announce one of these results."""
    for request in list(model.requests):
        for m in request.get("messages") or []:
            content = str(m.get("content") or "")
            if (
                m["role"] == "system"
                and "background tool calls" in content
                and any(t in content for t in tool_call_ids)
            ):
                return True
    return False


# -- the rig -------------------------------------------------------------------------------


@dataclass
class Rig:
    tools: ToolServer
    tools_url: str
    model: FakeOpenAI
    model_url: str
    env: dict[str, str]
    tmp: Path


@dataclass
class Round:
    no: int
    kind: str
    lines: list[Line]
    logs: list[Path]
    #: toolCallIds reported once the restart has settled, before any POST after it
    #: (by the killed process at hang-up, or by the restart's recovery)
    by_restart: set[str]
    #: the ledger's tool calls after everything, by toolCallId
    records: dict[str, dict[str, Any]]
    #: each call's ledger record after everything
    calls: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    hang_up: str | None = None


def report_key(message: dict[str, Any]) -> tuple[str, str, str]:
    """What one report is about: its type, call, and tool call (or status)."""
    tool_call = message.get("toolCall") or {}
    return (
        str(message["type"]),
        str(message["call"]["id"]),
        str(tool_call.get("toolCallId") or message.get("status") or ""),
    )


def reported(events: list[dict[str, Any]], kind: str) -> set[tuple[str, str]]:
    """(call, toolCallId or status) of every ``kind`` event received."""
    return {report_key(e)[1:] for e in events if e["type"] == kind}


async def pending_rows(db: AsyncEngine, call_ids: list[str]) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(outbox)
        .where(outbox.c.status == "pending", outbox.c.call_id.in_(call_ids))
    )
    async with db.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def outbox_rows(db: AsyncEngine, call_ids: list[str]) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        result = await conn.execute(sa.select(outbox).where(outbox.c.call_id.in_(call_ids)))
        return [dict(r) for r in result.mappings().all()]


async def trigger(
    kind: str, rng: random.Random, api: Client, line: Line, model: FakeOpenAI
) -> asyncio.Task[Any] | None:
    """Bring the primary call to the round's kill point; the hang-up's request, if any."""
    if kind == "recorded":
        await ask(line, until_said=False)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        return None
    hang_up = kind.startswith("hang-up")
    chosen = line.tool_ids[:1] if hang_up else line.tool_ids[: rng.randint(1, line.tools)]
    for tcid in chosen:
        answer = await post(api, line, tcid, "before")
        assert answer.accepted, f"a live call's result was not accepted: {answer}"
    if kind == "accepted":
        await asyncio.sleep(rng.uniform(0.0, 0.05))
    elif kind == "generating":
        await until(lambda: announcing(model, chosen), "the announcement's model request")
        await asyncio.sleep(rng.uniform(0.0, GENERATE_SECONDS * 0.8))
    elif kind == "mid-announcement":
        await until(
            lambda: any(line.seen(line.tokens[t]) for t in chosen),
            "the announcement's first sentence",
        )
        await asyncio.sleep(rng.uniform(0.0, SENTENCE_GAP_SECONDS * 0.6))
    elif kind == "hang-up":
        ending = asyncio.create_task(api.end_call(line.id))
        await asyncio.sleep(rng.uniform(0.0, 0.01))
        return ending
    else:
        ending = asyncio.create_task(api.end_call(line.id))
        await until(
            lambda: any(
                e.get("type") == "status-update" and e.get("status") == "ended"
                for e in line.session.events
            ),
            "the client to be shown the end",
            every=0.0005,
        )
        return ending
    return None


async def crash_round(rig: Rig, no: int, kind: str) -> Round:
    rng = random.Random(f"crash-{no}")
    tmp = rig.tmp / f"round{no}"
    tmp.mkdir()
    db_url = rig.env.get("BACKCHANNEL_DATABASE_URL") or f"sqlite+aiosqlite:///{tmp}/server.db"
    hang_up: str | None = None
    with server_process(tmp, rig.model_url, env=rig.env, name=f"run{no}") as first:
        rig.tools.secret = first.webhook_secret
        async with contextlib.AsyncExitStack() as stack:
            api = await stack.enter_async_context(Client(first.url, api_key=first.api_key))
            lines = [
                await stack.enter_async_context(
                    opened(api, rig.tools_url, no, i, rng.choice((1, 2)))
                )
                for i in range(len(ROLES))
            ]
            primary, spoken, _idle, racing = lines
            await asyncio.gather(
                *(ask(line) for line in lines if not (line is primary and kind == "recorded"))
            )
            # A call whose results are spoken in full before the kill.
            said = spoken.tool_ids[: rng.randint(1, spoken.tools)]
            for tcid in said:
                assert (await post(api, spoken, tcid, "before")).accepted
            await poll(lambda: all_spoken(api, spoken, said), "the spoken call's spokenAt")
            # The kill: results of another call race it.
            racers = [
                asyncio.create_task(post_later(api, racing, tcid, rng.uniform(0.0, 1.0)))
                for tcid in racing.tool_ids
            ]
            ending = await trigger(kind, rng, api, primary, rig.model)
            kill9(first.process)
            await asyncio.gather(*racers)
            if ending is not None:
                hang_up = primary.id
                with contextlib.suppress(httpx.HTTPError, BackchannelError):
                    await ending
            await until(lambda: all(line.reader.done() for line in lines), "the sockets to close")

    db = create_async_engine(db_url)
    try:
        with server_process(tmp, rig.model_url, env=rig.env, name=f"restart{no}") as second:
            done = await recover(rig, no, kind, lines, second, db)
            done.logs.insert(0, first.log)
            done.hang_up = hang_up
        # Stopped: everything it emitted is in the outbox table now.
        done.rows = await outbox_rows(db, [line.id for line in lines])
    finally:
        await db.dispose()
    return done


async def all_spoken(api: Client, line: Line, tool_call_ids: list[str]) -> bool:
    record = await api.get_call(line.id)
    spoken = {t["toolCallId"] for t in record["toolCalls"] if t["spokenAt"] is not None}
    return set(tool_call_ids) <= spoken


async def ledger(api: Client, lines: list[Line]) -> dict[str, dict[str, Any]]:
    """Every tool call of the round's calls as the ledger has it, by toolCallId."""
    records = {}
    for line in lines:
        for t in (await api.get_call(line.id))["toolCalls"]:
            records[t["toolCallId"]] = t
    return records


def owed(records: dict[str, dict[str, Any]]) -> set[str]:
    """Tool calls with a result the conversation never spoke: to be reported."""
    return {i for i, t in records.items() if t["resultAt"] is not None and t["spokenAt"] is None}


async def recover(
    rig: Rig, no: int, kind: str, lines: list[Line], second: ServerProcess, db: AsyncEngine
) -> Round:
    """After the restart: wait for its reports, POST what is left, wait for those."""
    call_ids = [line.id for line in lines]
    by_line = {tcid: line for line in lines for tcid in line.tool_ids}

    def events() -> list[dict[str, Any]]:
        with rig.tools.lock:
            return [e for e in rig.tools.events if e["call"]["id"] in call_ids]

    def arrived(tool_call_ids: set[str]) -> bool:
        seen = events()
        ended = reported(seen, "end-of-call-report")
        results = {k[1] for k in reported(seen, "tool-result-after-call")}
        return all((c, "") in ended for c in call_ids) and tool_call_ids <= results

    async with Client(second.url, api_key=second.api_key) as api:
        # 1. The restart on its own: calls ended, unspoken results and the calls reported.
        at_restart = owed(await ledger(api, lines))
        await settle(lambda: arrived(at_restart))
        by_restart = {k[1] for k in reported(events(), "tool-result-after-call")}
        # 2. Then: POSTs the kill cut are retried, results never sent are sent (late), and
        #    every accepted result that was never spoken is sent again (duplicate).
        for tcid, line in by_line.items():
            first = line.posts_for(tcid, "before")
            if not first:
                await post(api, line, tcid, "late")
            elif all(p.answer is None for p in first):
                await post(api, line, tcid, "retry")
        for tcid in sorted(owed(await ledger(api, lines))):
            await post(api, by_line[tcid], tcid, "repeat")
        final = await ledger(api, lines)
        await settle(lambda: arrived(owed(final)))
        drained = False
        deadline = time.monotonic() + WITHIN
        while not drained and time.monotonic() < deadline:
            drained = await pending_rows(db, call_ids) == 0
            if not drained:
                await asyncio.sleep(0.1)
        calls = {line.id: await api.get_call(line.id) for line in lines}
    assert drained, f"round {no}: the outbox still has pending events after {WITHIN:g} s"
    return Round(
        no=no,
        kind=kind,
        lines=lines,
        logs=[second.log],
        by_restart=by_restart,
        records=final,
        calls=calls,
        events=events(),
        rows=[],
    )


# -- judging a round -----------------------------------------------------------------------


def held_before(line: Line, tool_call_id: str) -> bool:
    """Whether the ledger had this result before the kill: a POST answered accepted, or
    the kill cut the answer and the retry found it stored (``duplicate``)."""
    return any(p.accepted for p in line.posts_for(tool_call_id, "before")) or any(
        p.answer is not None and p.answer["duplicate"]
        for p in line.posts_for(tool_call_id, "retry")
    )


def stage(rnd: Round, line: Line, model: FakeOpenAI) -> str:
    """Where the call stood when the process was killed."""
    if line.id == rnd.hang_up:
        return f"{rnd.kind} ({rnd.calls[line.id]['endedReason']})"
    held = [p.tool_call_id for p in line.posts if held_before(line, p.tool_call_id)]
    if not held:
        return "recorded, no result"
    last = held[-1]
    if line.seen(line.tokens[last]):
        spoken = rnd.records[last]["spokenAt"] is not None
        return "announced" if spoken else "mid-announcement"
    if announcing(model, [last]):
        return "announcement generating"
    return "result accepted"


def judge(rnd: Round, model: FakeOpenAI, tally: Counter[str], stages: Counter[str]) -> list[str]:
    """Count the round and list every broken promise."""
    failures: list[str] = []
    where = f"round {rnd.no} (kill at {rnd.kind})"
    reports = reported(rnd.events, "tool-result-after-call")
    for line in rnd.lines:
        stages[stage(rnd, line, model)] += 1
        tally["kill points"] += 1
        for tcid in line.tool_ids:
            token, record = line.tokens[tcid], rnd.records.get(tcid)
            posts = line.posts_for(tcid, "before", "late", "retry", "repeat")
            seen = line.seen(token)
            got = (line.id, tcid) in reports
            about = (
                f"{where}, call {line.index} ({line.role}) {line.id}, tool call {tcid} "
                f"({token}): posts {[str(p) for p in posts]}, announced to the client "
                f"{seen}x, reported by the restart {tcid in rnd.by_restart}, reported at "
                f"all {got}, ledger {_brief(record)}"
            )
            before = line.posts_for(tcid, "before")
            tally["sent"] += len(line.posts_for(tcid, "before", "late"))
            tally["accepted"] += sum(p.accepted for p in posts)
            tally["accepted before the kill"] += sum(p.accepted for p in before)
            tally["cut by the kill"] += sum(p.answer is None for p in before)
            failures += [
                f"reported with result {e['toolCall']['result']!r}: {about}"
                for e in rnd.events
                if report_key(e) == ("tool-result-after-call", line.id, tcid)
                and e["toolCall"]["result"] != token
            ]
            if seen > 1:
                tally["spoken twice"] += 1
                failures.append(f"SPOKEN TWICE: {about}")
            if held_before(line, tcid):
                # In the ledger when the process died: spoken once, or reported by the
                # time the restart has settled (before anything is sent again).
                tally["held at the kill"] += 1
                tally["cut but stored"] += not any(p.accepted for p in before)
                tally["spoken"] += seen == 1
                tally["reported"] += tcid in rnd.by_restart
                tally["spoken and reported"] += seen == 1 and tcid in rnd.by_restart
                if seen == 0 and tcid not in rnd.by_restart:
                    tally["lost"] += 1
                    failures.append(f"LOST (neither spoken nor reported): {about}")
            elif any(p.accepted for p in posts):
                tally["late"] += 1
                tally["late reported"] += got
                if not got:
                    tally["lost"] += 1
                    failures.append(f"LOST (accepted after the restart, not reported): {about}")
            else:
                failures.append(f"never accepted, even after the restart: {about}")
            if record is None or record["resultAt"] is None:
                failures.append(f"no result in the ledger: {about}")
            elif record["spokenAt"] is None and not got:
                failures.append(f"unspoken in the ledger and never reported: {about}")
            elif record["spokenAt"] is not None and seen == 0:
                failures.append(f"spokenAt set, but the client never heard it: {about}")
            for p in line.posts_for(tcid, "repeat"):
                tally["repeated"] += 1
                tally["repeat answered duplicate"] += bool(p.answer and p.answer["duplicate"])
                if not (p.answer and p.answer["duplicate"]):
                    failures.append(f"a repeat was not answered duplicate ({p}): {about}")
            for p in line.posts_for(tcid, "late"):
                if not (p.answer and p.answer["outcome"] == "late" and p.answer["late"]):
                    failures.append(f"a result after the restart was not late ({p}): {about}")
        failures += judge_call(rnd, line)
    failures += judge_reports(rnd, tally)
    return failures


def judge_call(rnd: Round, line: Line) -> list[str]:
    where = f"round {rnd.no} (kill at {rnd.kind}), call {line.index} ({line.role}) {line.id}"
    failures = []
    call = rnd.calls[line.id]
    reasons = (
        {"ended-by-api", "server-restarted"} if line.id == rnd.hang_up else {"server-restarted"}
    )
    if call["status"] != "ended" or call["endedReason"] not in reasons:
        failures.append(f"{where}: {call['status']} / {call['endedReason']}, not {reasons}")
    ends = [
        e for e in rnd.events if e["type"] == "end-of-call-report" and e["call"]["id"] == line.id
    ]
    if not ends:
        failures.append(f"{where}: NO END-OF-CALL REPORT")
    for end in ends:
        listed = {t["toolCallId"] for t in end["toolCalls"]}
        if listed != set(line.tool_ids) or end["endedReason"] != call["endedReason"]:
            failures.append(
                f"{where}: the end-of-call report lists {sorted(listed)} ended by "
                f"{end['endedReason']}; the call has {sorted(line.tool_ids)}, {call['endedReason']}"
            )
    if ("status-update", line.id, "ended") not in {report_key(e) for e in rnd.events}:
        failures.append(f"{where}: no status-update (ended)")
    # Whatever the client was shown of the server-URL events was stored first.
    stored = {
        (r["event_type"], json.loads(r["body"])["message"]["timestamp"])
        for r in rnd.rows
        if r["call_id"] == line.id
    }
    for e in line.session.events:
        if e.get("type") in SERVER_TYPES and (e["type"], e["timestamp"]) not in stored:
            shown = {k: e.get(k) for k in ("timestamp", "status", "endedReason", "toolCall")}
            failures.append(
                f"{where}: SHOWN BEFORE STORED: the client saw a {e['type']} event {shown} "
                f"that the outbox never stored (stored: {sorted(stored)})"
            )
    return failures


def judge_reports(rnd: Round, tally: Counter[str]) -> list[str]:
    """Each report has one event id, at the receiver and in the outbox table; the body's
    id is the ``webhook-id`` header; everything received came from the table."""
    where = f"round {rnd.no} (kill at {rnd.kind})"
    failures = []
    received: dict[tuple[str, str, str], set[str]] = {}
    for e in rnd.events:
        received.setdefault(report_key(e), set()).add(str(e["webhookId"]))
        if e["bodyId"] != e["webhookId"]:
            failures.append(f"{where}: body id {e['bodyId']} != webhook-id {e['webhookId']}")
    stored: dict[tuple[str, str, str], set[str]] = {}
    for r in rnd.rows:
        body = json.loads(r["body"])
        stored.setdefault(report_key(body["message"]), set()).add(r["id"])
        if body["id"] != r["id"]:
            failures.append(f"{where}: outbox row {r['id']} has body id {body['id']}")
    ids = {r["id"] for r in rnd.rows}
    for key, got in sorted(received.items()):
        if len(got) > 1:
            tally["reported twice"] += 1
            failures.append(f"{where}: REPORTED TWICE under distinct ids {sorted(got)}: {key}")
        if not got <= ids:
            failures.append(f"{where}: received ids not in the outbox: {sorted(got - ids)}")
    for key, rows in sorted(stored.items()):
        if len(rows) > 1:
            failures.append(f"{where}: the outbox holds {key} under ids {sorted(rows)}")
    tally["calls"] += len(rnd.lines)
    tally["end-of-call reports"] += sum(
        1 for k, got in received.items() if k[0] == "end-of-call-report" and len(got) == 1
    )
    return failures


def _brief(record: dict[str, Any] | None) -> str:
    if record is None:
        return "none"
    keys = ("state", "late", "resultAt", "deliveredAt", "spokenAt", "resolvedBy")
    return str({k: record.get(k) for k in keys})


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text[-lines:])


def summary(label: str, tally: Counter[str], stages: Counter[str] | None = None) -> str:
    where = f" ({', '.join(f'{k} {n}' for k, n in sorted(stages.items()))})" if stages else ""
    t = tally
    return (
        f"crash {label}: kill points {t['kill points']}{where}; results sent {t['sent']} "
        f"(POSTs cut by the kill {t['cut by the kill']}, of which stored {t['cut but stored']}), "
        f"accepted {t['accepted']} (before the kill {t['accepted before the kill']}); in the "
        f"ledger at the kill {t['held at the kill']}: spoken {t['spoken']}, reported "
        f"{t['reported']} (spoken and reported {t['spoken and reported']}); accepted after the "
        f"restart {t['late']}: reported {t['late reported']}; lost {t['lost']}, spoken twice "
        f"{t['spoken twice']}, reported twice {t['reported twice']}; calls {t['calls']}, "
        f"end-of-call reports {t['end-of-call reports']}; repeats answered duplicate "
        f"{t['repeat answered duplicate']}/{t['repeated']}"
    )


# -- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _print_totals() -> Iterator[None]:
    yield
    if TOTALS:
        print("\n" + summary("(every test of this module)", TOTALS))


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    with backend(request.param) as env:
        yield env


@contextmanager
def model_server() -> Iterator[tuple[FakeOpenAI, str]]:
    model = FakeOpenAI(crash_model)
    with serving(model.handler()) as url:
        yield model, f"{url}/v1"


@pytest.mark.parametrize("group", range(GROUPS))
async def test_kill_9_loses_no_accepted_result_and_says_none_twice(
    backend_env: dict[str, str], group: int, tmp_path: Path
) -> None:
    """Per backend, ``ROUND_KINDS`` rounds (split over ``GROUPS`` tests): each kills the
    server once, with four calls at different stages, and restarts it."""
    env = {**backend_env, "BACKCHANNEL_INSTANCE_ID": f"crash-{uuid.uuid4().hex[:8]}"}
    tally: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    failures: list[str] = []
    logs: list[Path] = []
    with receiver() as (tools, tools_url), model_server() as (model, model_url):
        rig = Rig(tools, tools_url, model, model_url, env, tmp_path)
        for i in range(ROUNDS_PER_TEST):
            no = group * ROUNDS_PER_TEST + i
            rnd = await crash_round(rig, no, ROUND_KINDS[no])
            failures += judge(rnd, model, tally, stages)
            if failures:
                logs = rnd.logs
                break
    label = "embedded" if "BACKCHANNEL_REDIS_URL" not in env else "postgres+redis"
    print("\n" + summary(f"{label} rounds {group * ROUNDS_PER_TEST}+", tally, stages))
    TOTALS.update(tally)
    assert not failures, "\n".join(
        [*failures, *(f"--- {log.name} (tail)\n{_tail(log)}" for log in logs)]
    )
    assert tools.bad_signatures == 0
    assert tally["repeated"] > 0, "no accepted, unspoken result was sent again"
    assert tally["lost"] == 0 and tally["spoken twice"] == 0 and tally["reported twice"] == 0
