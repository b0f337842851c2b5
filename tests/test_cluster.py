"""Two real server processes sharing PostgreSQL and Redis.

Calls run on instance A (their client sockets are connected there); results, control
messages and the end of a call are posted to instance B. Every result must reach its
call once, in the order it was posted; then A is killed with ``SIGKILL`` while its
calls wait on async tools, and B must end those calls within the heartbeat timeout and
keep, and report, the results that come after.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from backchannel import Client

from .e2e_calls import Session, said, vapi_assistant, wait_for
from .fake_openai import serve as serve_model
from .peers import (
    ServerProcess,
    ToolServer,
    backend,
    needs_postgres_and_redis,
    rule_model,
    server_process,
    tool_server,
)

pytestmark = [pytest.mark.anyio, needs_postgres_and_redis]

CALLS, RESULTS_PER_CALL = 4, 3
HEARTBEAT_TIMEOUT = 3.0  # as ``backend`` sets it


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess, ToolServer, str]]:
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (_model, model_url),
        backend("postgres+redis") as env,
        server_process(
            tmp_path, model_url, env={**env, "BACKCHANNEL_INSTANCE_ID": "a"}, name="a"
        ) as a,
        server_process(
            tmp_path, model_url, env={**env, "BACKCHANNEL_INSTANCE_ID": "b"}, name="b"
        ) as b,
    ):
        tools.secret = a.webhook_secret
        tools.modes["check_order"] = "ack"
        yield a, b, tools, tools_url


def results_seen(session: Session) -> list[tuple[str, Any]]:
    return [
        (e["toolCallResult"]["toolCallId"], e["toolCallResult"]["result"])
        for e in session.events
        if e.get("type") == "tool-calls-result"
    ]


async def open_calls(
    a: ServerProcess, tools_url: str, stack: Any
) -> list[tuple[dict[str, Any], Session, list[str]]]:
    """``CALLS`` calls live on A, each waiting on ``RESULTS_PER_CALL`` async tools."""
    opened = []
    async with Client(a.url, api_key=a.api_key) as admin:
        for _ in range(CALLS):
            call = await admin.create_call(assistant=vapi_assistant(tools_url))
            ws = await stack.enter_async_context(
                connect(f"{call['clientUrl']}?token={call['clientToken']}")
            )
            session = Session(ws)
            await session.send({"type": "user-message", "content": f"batch {RESULTS_PER_CALL}"})
            event = await session.until(lambda e: e.get("type") == "tool-calls")
            ids = [t["id"] for t in event["toolCallList"]]
            assert len(ids) == RESULTS_PER_CALL
            opened.append((call, session, ids))
    return opened


async def test_results_and_control_posted_to_b_reach_calls_on_a_once_in_order(
    pair: tuple[ServerProcess, ServerProcess, ToolServer, str],
) -> None:
    a, b, _tools, tools_url = pair
    async with AsyncExitStack() as stack:
        calls = await open_calls(a, tools_url, stack)

        async def post_all(call: dict[str, Any], ids: list[str]) -> None:
            async with Client(b.url, token=call["token"]) as backend_b:
                for n, tool_call_id in enumerate(ids):
                    answer = await backend_b.submit_result(call["id"], tool_call_id, {"n": n})
                    assert answer["outcome"] == "accepted", answer
                # The same result again: a duplicate, and nothing more reaches the call.
                again = await backend_b.submit_result(call["id"], ids[0], {"n": 0})
                assert again["duplicate"]

        await asyncio.gather(*(post_all(call, ids) for call, _s, ids in calls))
        for _call, session, _ids in calls:
            await session.until(
                lambda _e, s=session: len(results_seen(s)) >= RESULTS_PER_CALL, within=15
            )
        await asyncio.sleep(0.5)  # room for a stray second delivery to show up
        for _call, session, ids in calls:
            assert results_seen(session) == [(i, {"n": n}) for n, i in enumerate(ids)]

        # Control messages posted to B act on the call on A, and B answers with A's answer.
        call, session, _ids = calls[0]
        async with httpx.AsyncClient(base_url=b.url, timeout=30) as http:
            auth = {"Authorization": f"Bearer {call['token']}"}
            control = f"/calls/{call['id']}/control"
            say = await http.post(
                control, json={"type": "say", "content": "Routed through B."}, headers=auth
            )
            assert say.status_code == 200, say.text
            await session.until(said("Routed through B."))
            # The live transcript, read through B while the call runs on A.
            for _ in range(50):
                record = (await http.get(f"/calls/{call['id']}", headers=auth)).json()
                if any("Routed through B." in t["content"] for t in record["transcript"]):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"B never showed the live transcript: {record}")
            assert record["status"] == "in-progress"
            assert all(t["deliveredAt"] is not None for t in record["toolCalls"])
            assert {t["resolvedBy"] for t in record["toolCalls"]} == {"api"}
            ended = await http.post(f"/calls/{call['id']}/end", headers=auth)
            assert ended.status_code == 200, ended.text
            await session.until(
                lambda e: e.get("type") == "status-update" and e.get("status") == "ended"
            )
            record = (await http.get(f"/calls/{call['id']}", headers=auth)).json()
            assert (record["status"], record["endedReason"]) == ("ended", "ended-by-api")
            # Control for a call that has ended: the same error as on its own instance.
            late = await http.post(
                control, json={"type": "say", "content": "Too late."}, headers=auth
            )
            assert late.status_code == 409
            assert late.json()["error"]["code"] == "call_not_live"


async def test_b_ends_the_calls_of_a_killed_a_and_keeps_later_results(
    pair: tuple[ServerProcess, ServerProcess, ToolServer, str],
) -> None:
    a, b, tools, tools_url = pair
    async with AsyncExitStack() as stack:
        calls = await open_calls(a, tools_url, stack)
        for _call, session, _ids in calls:
            await session.until(said("I will tell you when it is ready."))
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        killed = time.monotonic()

    async with httpx.AsyncClient(base_url=b.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {b.api_key}"}
        # Posted before B knows A is gone: accepted, and (never having reached the
        # conversation) reported when A's calls are ended.
        early_call, _session, early_ids = calls[0]
        early = await http.post(
            f"/calls/{early_call['id']}/tool-calls/{early_ids[0]}/result",
            json={"result": {"n": 0}},
            headers=auth,
        )
        assert early.json()["outcome"] == "accepted", early.text

        async def status(call_id: str) -> dict[str, Any]:
            result: dict[str, Any] = (await http.get(f"/calls/{call_id}", headers=auth)).json()
            return result

        for call, _session, _ids in calls:
            while (record := await status(call["id"]))["status"] != "ended":
                assert time.monotonic() - killed < HEARTBEAT_TIMEOUT + 3, record
                await asyncio.sleep(0.1)
            assert record["endedReason"] == "server-lost"
            states = [t["state"] for t in record["toolCalls"] if t["toolCallId"] != early_ids[0]]
            assert len(states) == RESULTS_PER_CALL - (call is early_call)
            assert set(states) <= {"pending", "running"}, "kept as they were, not resolved"
        ended_after = time.monotonic() - killed

        for call, _session, ids in calls:
            for n, tool_call_id in enumerate(ids):
                if tool_call_id == early_ids[0]:
                    continue
                answer = await http.post(
                    f"/calls/{call['id']}/tool-calls/{tool_call_id}/result",
                    json={"result": {"n": n}},
                    headers=auth,
                )
                assert answer.status_code == 200, answer.text
                assert (answer.json()["outcome"], answer.json()["late"]) == ("late", True)
            record = await status(call["id"])
            assert all(
                t["state"] == "succeeded" and (t["late"] or t["toolCallId"] == early_ids[0])
                for t in record["toolCalls"]
            )

    reported = {(c["id"], i) for c, _s, ids in calls for i in ids}

    def after_call() -> set[tuple[str, str]]:
        return {
            (e["call"]["id"], e["toolCall"]["toolCallId"])
            for e in tools.events
            if e["type"] == "tool-result-after-call"
        }

    await wait_for(lambda: reported <= after_call(), within=15)
    lost = {
        e["call"]["id"]
        for e in tools.events
        if e["type"] == "end-of-call-report" and e.get("endedReason") == "server-lost"
    }
    assert {c["id"] for c, _s, _i in calls} <= lost
    print(f"B ended A's calls {ended_after:.1f} s after the kill")
