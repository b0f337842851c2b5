"""A client that drops or goes silent: found by keepalive pings, given a grace period to
come back, and never told a result while nobody listens.

A real server process, a real tool server and real WebSocket clients: one whose TCP
connection is cut without a close frame, one frozen with SIGSTOP.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from backchannel import Client

from .e2e_calls import Session, said, tool_call_id, tool_calls_named, vapi_assistant, wait_for
from .faults import stoppable_client
from .peers import ServerProcess, ToolServer
from .peers import stack as server_stack

pytestmark = pytest.mark.anyio

#: A client that connects, asks about an order, and then only keeps the socket open.
_CLIENT = """
import sys, json, time
from websockets.sync.client import connect
with connect(sys.argv[1]) as ws:
    ws.send(json.dumps({"type": "user-message", "content": "Check my order."}))
    while True:
        ws.recv()
"""


def _stack(tmp: Path, **env: str) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    with server_stack(tmp, env=env) as (server, tools, tools_url):
        tools.modes["check_order"] = "ack"
        yield server, tools, tools_url


@pytest.fixture
def grace_stack(tmp_path: Path) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    yield from _stack(tmp_path, BACKCHANNEL_CLIENT_GRACE_SECONDS="20")


@pytest.fixture
def short_grace_stack(tmp_path: Path) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    yield from _stack(tmp_path, BACKCHANNEL_CLIENT_GRACE_SECONDS="2")


@pytest.fixture
def no_grace_stack(tmp_path: Path) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    yield from _stack(tmp_path, BACKCHANNEL_CLIENT_GRACE_SECONDS="0")


async def _start(server: ServerProcess, tools_url: str) -> dict[str, Any]:
    async with Client(server.url, api_key=server.api_key) as admin:
        call: dict[str, Any] = await admin.create_call(assistant=vapi_assistant(tools_url))
    return call


async def _drop_while_waiting(call: dict[str, Any]) -> str:
    """Ask about an order, then cut the connection without a close frame; the order's
    tool call id."""
    async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
        s = Session(ws)
        await s.send({"type": "user-message", "content": "Check my order."})
        order_id = tool_call_id(await s.until(tool_calls_named("check_order")), "check_order")
        await s.until(said("I will tell you when it is ready."))
        ws.transport.abort()  # the network drops: no close frame
    return order_id


async def _record(server: ServerProcess, call: dict[str, Any]) -> dict[str, Any]:
    async with Client(server.url, token=call["token"]) as backend:
        record: dict[str, Any] = await backend.get_call(call["id"])
    return record


async def test_a_client_that_reconnects_in_time_gets_the_result_posted_meanwhile(
    grace_stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, _tools, tools_url = grace_stack
    call = await _start(server, tools_url)
    order_id = await _drop_while_waiting(call)
    async with Client(server.url, token=call["token"]) as backend:
        answer = await backend.submit_result(call["id"], order_id, {"status": "shipped"})
    assert answer["outcome"] == "accepted"
    record = await _record(server, call)
    assert record["status"] == "in-progress"
    assert next(t for t in record["toolCalls"] if t["toolCallId"] == order_id)["spokenAt"] is None
    async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
        s = Session(ws)
        result = await s.until(lambda e: e.get("type") == "tool-calls-result")
        assert result["toolCallResult"]["toolCallId"] == order_id
        await s.until(said("shipped"))
        # A second client for the same call is refused while this one is attached.
        async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as other:
            refused = Session(other)
            error = await refused.until(lambda e: e.get("type") == "error")
            assert error["error"]["code"] == "call_already_connected"
        await s.send({"type": "user-message", "content": "Thanks."})
        await s.until(said("Okay."))
        assert sum("shipped" in line for line in s.said()) == 1, s.said()
    await wait_for(lambda: _spoken(server, call, order_id), within=30)


def _spoken(server: ServerProcess, call: dict[str, Any], order_id: str) -> bool:
    import httpx

    record = httpx.get(
        f"{server.url}/calls/{call['id']}", headers={"Authorization": f"Bearer {call['token']}"}
    ).json()
    return any(t["toolCallId"] == order_id and t["spokenAt"] for t in record["toolCalls"])


async def test_past_the_grace_period_the_call_ends_and_the_result_is_reported(
    short_grace_stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, tools, tools_url = short_grace_stack
    call = await _start(server, tools_url)
    order_id = await _drop_while_waiting(call)
    async with Client(server.url, token=call["token"]) as backend:
        answer = await backend.submit_result(call["id"], order_id, {"status": "shipped"})
    assert answer["outcome"] == "accepted"

    def reported() -> bool:
        return any(
            e["type"] == "tool-result-after-call" and e["toolCall"]["toolCallId"] == order_id
            for e in tools.events
        )

    await wait_for(reported, within=30)
    record = await _record(server, call)
    assert record["status"] == "ended"
    assert record["endedReason"] == "client-disconnected"
    reports = [e for e in tools.events if e["type"] == "end-of-call-report"]
    assert len({e["headers"]["webhook-id"] for e in reports}) == 1


async def test_a_frozen_client_is_found_by_keepalive_pings(
    no_grace_stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, _tools, tools_url = no_grace_stack
    call = await _start(server, tools_url)
    url = f"{call['clientUrl']}?token={call['clientToken']}"
    with stoppable_client([sys.executable, "-c", _CLIENT, url]) as client:
        await wait_for(
            lambda: any(
                t["name"] == "check_order" for t in _get(server, call).get("toolCalls", [])
            ),
            within=30,
        )
        client.pause()  # half-open: the socket stays, nobody answers pings
        frozen = time.monotonic()
        await wait_for(lambda: _get(server, call)["status"] == "ended", within=40)
        found = time.monotonic() - frozen
        client.resume()
    print(f"frozen client found and its call ended after {found:.1f} s")
    assert _get(server, call)["endedReason"] == "client-disconnected"


def _get(server: ServerProcess, call: dict[str, Any]) -> dict[str, Any]:
    import httpx

    record: dict[str, Any] = httpx.get(
        f"{server.url}/calls/{call['id']}", headers={"Authorization": f"Bearer {call['token']}"}
    ).json()
    return record
