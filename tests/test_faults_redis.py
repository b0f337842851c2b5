"""Redis goes away for ~16 s under two instances on one PostgreSQL database.

Calls run on instance A (their client sockets are connected there) and wait on async
tools; results and ``say`` control messages are posted to instance B. Redis (a private,
throwaway ``redis-server``) is killed with ``SIGKILL`` and later started again, empty,
on the same port. While it is away:

* a result posted to B is written to the ledger there and answered with the ledger's
  outcome (never a 5xx), and A's periodic sweep brings it into the call;
* a ``say`` posted to B answers A's answer or ``503 call_owner_unreachable`` (and then
  nothing is said);
* ``/ready`` on both says Redis does not answer.

After Redis is back, results and controls posted to B work again at once (no failure
on a connection that died with the old Redis), every result reaches its call on A
exactly once, and ``/ready`` on both is 200 with every worker running.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from backchannel import Client

from .e2e_calls import said, vapi_assistant
from .fake_openai import serve as serve_model
from .faults import ThrowawayRedis, throwaway_redis
from .peers import (
    POSTGRES_URL,
    ServerProcess,
    ToolServer,
    fresh_postgres,
    rule_model,
    server_process,
    tool_server,
)
from .test_faults_store import (
    LiveSession,
    eventually,
    five_hundred_problem,
    log_tail,
    ready_problem,
    watch_ready,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(POSTGRES_URL is None, reason="BACKCHANNEL_TEST_POSTGRES_URL is not set"),
]

CALLS = 3
#: Async tool calls per call: the first ``DURING`` are answered while Redis is away.
PER_CALL, DURING = 4, 2
OUTAGE_SECONDS = 16.0
WAIT = 60.0
WORKERS = {"outbox-writer", "outbox-delivery", "heartbeat", "inbox"}
#: Log lines that mean a routed hand-off or message failed.
FAILURE_MARKS = ("hand-off failed", "routing a control message", "routed message")


@dataclass
class Pair:
    a: ServerProcess
    b: ServerProcess
    redis: ThrowawayRedis
    tools: ToolServer
    tools_url: str


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (_model, model_url),
        throwaway_redis() as redis,
        fresh_postgres() as db_url,
    ):
        env = {
            "BACKCHANNEL_DATABASE_URL": db_url,
            "BACKCHANNEL_REDIS_URL": redis.url,
            "BACKCHANNEL_HEARTBEAT_SECONDS": "0.5",
            "BACKCHANNEL_HEARTBEAT_TIMEOUT_SECONDS": "3",
        }
        with (
            server_process(
                tmp_path, model_url, env={**env, "BACKCHANNEL_INSTANCE_ID": "a"}, name="a"
            ) as a,
            server_process(
                tmp_path, model_url, env={**env, "BACKCHANNEL_INSTANCE_ID": "b"}, name="b"
            ) as b,
        ):
            tools.secret = a.webhook_secret
            tools.modes["check_order"] = "ack"
            yield Pair(a, b, redis, tools, tools_url)


@dataclass
class Live:
    call: dict[str, Any]
    session: LiveSession
    ids: list[str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.call['token']}"}


async def post_result(
    http: httpx.AsyncClient, live: Live, n: int, counts: Counter[str], problems: list[str]
) -> dict[str, Any] | None:
    """Post result ``n`` of the call to B once; anything but a 2xx is a problem (a result
    is answered with what the ledger recorded, whatever happens to Redis)."""
    tool_call_id = live.ids[n]
    counts["results_posted"] += 1
    try:
        response = await http.post(
            f"/calls/{live.call['id']}/tool-calls/{tool_call_id}/result",
            json={"result": {"n": n}},
            headers=live.auth,
        )
    except httpx.HTTPError as exc:
        problems.append(f"result {tool_call_id}: no answer ({type(exc).__name__}: {exc})")
        return None
    if response.status_code >= 500:
        counts["results_5xx"] += 1
        problems.append(
            f"result {tool_call_id}: {response.status_code} {response.text[:300]}"
            + (f" ({p})" if (p := five_hundred_problem(response)) else "")
        )
        return None
    if response.status_code != 200:
        problems.append(f"result {tool_call_id}: {response.status_code} {response.text[:300]}")
        return None
    body: dict[str, Any] = response.json()
    counts[f"results_{body.get('outcome')}"] += 1
    return body


async def post_say(
    http: httpx.AsyncClient, live: Live, line: str, counts: Counter[str], problems: list[str]
) -> int:
    """``say`` posted to B; its status (0: no answer). 200 or 503 ``call_owner_unreachable``
    are the answers a say may get; anything else is a problem."""
    counts["says_posted"] += 1
    try:
        response = await http.post(
            f"/calls/{live.call['id']}/control",
            json={"type": "say", "content": line},
            headers=live.auth,
        )
    except httpx.HTTPError as exc:
        problems.append(f"say {line!r}: no answer ({type(exc).__name__}: {exc})")
        return 0
    status = response.status_code
    if status == 200:
        counts["says_200"] += 1
        if response.json() != {"ok": True}:
            problems.append(f"say {line!r}: 200 with {response.text[:300]}")
    elif status == 503 and not five_hundred_problem(response):
        code = response.json()["error"]["code"]
        counts[f"says_503_{code}"] += 1
        if code != "call_owner_unreachable":
            problems.append(f"say {line!r}: 503 {response.text[:300]}")
    else:
        if status >= 500:
            counts["says_other_5xx"] += 1
        problems.append(
            f"say {line!r}: {status} {response.text[:300]}"
            + (f" ({p})" if status >= 500 and (p := five_hundred_problem(response)) else "")
        )
    return status


def redis_said_failing(seen: list[tuple[int, dict[str, Any]]]) -> bool:
    return any(
        status == 503
        and body.get("error", {}).get("details", {}).get("checks", {}).get("redis") != "ok"
        for status, body in seen
    )


def failures_logged(server: ServerProcess, since: int) -> list[str]:
    text = server.log.read_bytes()[since:].decode(errors="replace")
    return [line for line in text.splitlines() if any(m in line for m in FAILURE_MARKS)]


async def test_results_and_controls_through_a_redis_outage(pair: Pair) -> None:
    a, b, redis, tools = pair.a, pair.b, pair.redis, pair.tools
    problems: list[str] = []
    counts: Counter[str] = Counter()
    ready_a: list[tuple[int, dict[str, Any]]] = []
    ready_b: list[tuple[int, dict[str, Any]]] = []
    async with AsyncExitStack() as stack:
        http_a = await stack.enter_async_context(httpx.AsyncClient(base_url=a.url, timeout=30))
        http_b = await stack.enter_async_context(httpx.AsyncClient(base_url=b.url, timeout=30))
        for name, http in (("A", http_a), ("B", http_b)):
            problem = ready_problem(await http.get("/ready"), WORKERS, redis="ok")
            assert problem is None, f"{name} not ready at the start: {problem}"

        # Calls live on A, each waiting on PER_CALL async tools.
        calls: list[Live] = []
        async with Client(a.url, api_key=a.api_key) as admin:
            for _ in range(CALLS):
                call = await admin.create_call(assistant=vapi_assistant(pair.tools_url))
                ws = await stack.enter_async_context(
                    connect(f"{call['clientUrl']}?token={call['clientToken']}")
                )
                session = LiveSession(ws)
                stack.callback(session.reader.cancel)
                await session.send({"type": "user-message", "content": f"batch {PER_CALL}"})
                event = await session.until(lambda e: e.get("type") == "tool-calls", within=30)
                calls.append(Live(call, session, [t["id"] for t in event["toolCallList"]]))
        for live in calls:
            assert len(live.ids) == PER_CALL
            await live.session.until(said("I will tell you when it is ready."), within=30)
        wanted = {i for live in calls for i in live.ids}

        async def tools_called() -> bool:
            return wanted <= {c["call"].id for c in tools.calls}

        assert await eventually(tools_called), "the tool server never got every tool call"

        # Routing works before the outage (and leaves pooled Redis connections on B).
        status = await post_say(http_b, calls[0], "Said before the outage.", counts, problems)
        assert status == 200, problems
        await calls[0].session.until(said("Said before the outage."), within=30)

        # Redis dies.
        await asyncio.to_thread(redis.kill)
        broke = time.monotonic()
        stop = asyncio.Event()
        watchers = [
            asyncio.create_task(watch_ready(http_a, stop, ready_a)),
            asyncio.create_task(watch_ready(http_b, stop, ready_b)),
        ]
        for watcher in watchers:
            stack.callback(watcher.cancel)
        during_says: dict[str, tuple[Live, int]] = {}

        async def during(k: int, live: Live) -> None:
            for n in range(DURING):
                body = await post_result(http_b, live, n, counts, problems)
                if body is not None and (body["outcome"], body["state"], body["duplicate"]) != (
                    "accepted",
                    "succeeded",
                    False,
                ):
                    problems.append(f"result {live.ids[n]} during the outage: {body}")
            again = await post_result(http_b, live, 0, counts, problems)
            if again is not None and (again["outcome"], again["duplicate"]) != ("duplicate", True):
                problems.append(f"repeated result {live.ids[0]}: {again}")
            line = f"Said during the outage {k}."
            during_says[line] = (live, await post_say(http_b, live, line, counts, problems))

        await asyncio.gather(*(during(k, live) for k, live in enumerate(calls)))
        posted_during = time.monotonic() - broke

        # A's sweep brings the results into the calls while Redis is still away.
        def seen_during(live: Live) -> Counter[str]:
            return Counter(i for i in live.session.results_seen() if i in live.ids[:DURING])

        async def swept() -> bool:
            return all(len(seen_during(live)) == DURING for live in calls)

        left = max(1.0, OUTAGE_SECONDS - (time.monotonic() - broke))
        if not await eventually(swept, within=left):
            problems.append(
                "results posted during the outage were not in their calls on A before Redis "
                f"came back ({OUTAGE_SECONDS:.0f} s): "
                f"{[dict(seen_during(live)) for live in calls]}"
            )
        swept_after = time.monotonic() - broke
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - broke)))

        # Redis comes back, empty, on the same port.
        offsets = {name: s.log.stat().st_size for name, s in (("A", a), ("B", b))}
        await asyncio.to_thread(redis.start)
        repaired = time.monotonic()
        stop.set()
        await asyncio.gather(*watchers)

        # At once: results and controls posted to B work (no stale connections).
        async def after(k: int, live: Live) -> None:
            line = f"Said after the outage {k}."
            if await post_say(http_b, live, line, counts, problems) != 200:
                problems.append(f"say {line!r} right after Redis came back did not work")
            for n in range(DURING, PER_CALL):
                body = await post_result(http_b, live, n, counts, problems)
                if body is not None and body["outcome"] != "accepted":
                    problems.append(f"result {live.ids[n]} after the outage: {body}")

        await asyncio.gather(*(after(k, live) for k, live in enumerate(calls)))

        # Every result reaches its call on A exactly once.
        async def all_delivered() -> bool:
            return all(set(live.ids) <= set(live.session.results_seen()) for live in calls)

        if not await eventually(all_delivered):
            missing = [set(live.ids) - set(live.session.results_seen()) for live in calls]
            problems.append(f"results never reached their calls on A: {missing}")
        delivered_after = time.monotonic() - repaired
        for k, live in enumerate(calls):
            try:
                await live.session.until(said(f"Said after the outage {k}."), within=30)
            except AssertionError as exc:
                problems.append(f"call {k}: the say posted after the outage was not said: {exc}")
        await asyncio.sleep(1.0)  # room for a stray second delivery or late say to show up
        for line, (live, status) in during_says.items():
            spoken = any(said(line)(e) for e in live.session.events)
            if status == 200 and not spoken:
                problems.append(f"{line!r} was answered 200 but never said")
            if status != 200 and spoken:
                problems.append(f"{line!r} was answered {status} but said anyway")

        # /ready on both: 200 again, Redis ok, every worker running.
        for name, http in (("A", http_a), ("B", http_b)):
            last: list[str | None] = [None]

            async def ready(http: httpx.AsyncClient = http, last: list[str | None] = last) -> bool:
                try:
                    last[0] = ready_problem(await http.get("/ready"), WORKERS, redis="ok")
                except httpx.HTTPError as exc:
                    last[0] = f"/ready failed: {exc!r}"
                return last[0] is None

            if not await eventually(ready):
                problems.append(f"{name}: /ready not ready again in {WAIT:.0f} s: {last[0]}")
        for name, seen in (("A", ready_a), ("B", ready_b)):
            problems += [f"{name}: {body['problem']}" for st, body in seen if st == -1]
            problems += [
                f"{name}: /ready did not answer: {b['error']}" for st, b in seen if st == 0
            ]
            if not redis_said_failing(seen):
                statuses = sorted({st for st, _b in seen})
                problems.append(f"{name}: /ready never said Redis failed ({statuses})")

        # The ledger (read through B): every result succeeded and was delivered.
        for live in calls:
            record = (await http_b.get(f"/calls/{live.call['id']}", headers=live.auth)).json()
            rows = {t["toolCallId"]: t for t in record["toolCalls"]}
            for n, i in enumerate(live.ids):
                row = rows.get(i, {})
                if (row.get("state"), row.get("result")) != ("succeeded", {"n": n}) or not row.get(
                    "deliveredAt"
                ):
                    problems.append(f"ledger row for {i}: {row}")
            if record["status"] != "in-progress" or live.session.closed is not None:
                problems.append(
                    f"call {live.call['id']} did not go on: {record['status']}, "
                    f"socket {live.session.closed or 'open'}"
                )

        for name, server in (("A", a), ("B", b)):
            stale = failures_logged(server, offsets[name])
            if stale:
                problems.append(f"{name} logged routing failures after Redis came back: {stale}")

    problems = list(dict.fromkeys(problems))  # each problem once
    per_result = Counter(i for live in calls for i in live.session.results_seen())
    delivered = len(wanted & set(per_result))
    duplicated = sum(n - 1 for n in per_result.values() if n > 1)
    if duplicated:
        problems.append(f"results delivered more than once: {+per_result - Counter(wanted)}")
    print(
        f"\n[redis-down] outage={repaired - broke:.1f}s "
        f"posted_during_in={posted_during:.1f}s swept_into_calls_after={swept_after:.1f}s "
        f"results_posted={counts['results_posted']} accepted={counts['results_accepted']} "
        f"duplicate={counts['results_duplicate']} results_5xx={counts['results_5xx']} "
        f"says_posted={counts['says_posted']} says_200={counts['says_200']} "
        f"says_503_owner_unreachable={counts['says_503_call_owner_unreachable']} "
        f"says_other_5xx={counts['says_other_5xx']} "
        f"delivered={delivered}/{len(wanted)} lost={len(wanted) - delivered} "
        f"duplicated={duplicated} delivered_all_after_repair={delivered_after:.1f}s "
        f"ready_503s_a={sum(st == 503 for st, _b in ready_a)} "
        f"ready_503s_b={sum(st == 503 for st, _b in ready_b)} problems={len(problems)}"
    )
    assert not problems, (
        "\n".join(problems)
        + "\n--- A's log ---\n"
        + log_tail(a)
        + "\n--- B's log ---\n"
        + log_tail(b)
    )
