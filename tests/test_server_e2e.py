"""End to end: the server as a real process on loopback, a real tool server, a real
WebSocket client. Results come back through all four sources (webhook reply, client,
HTTP API, control URL) and land once; the call's record shows every state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from backchannel import Client, Conflict, Forbidden, Unauthorized

from .e2e_calls import (
    Session,
    new_call,
    said,
    tool_call_id,
    tool_calls_named,
    vapi_assistant,
    wait_for,
)
from .fake_openai import serve as serve_model
from .peers import (
    BACKENDS,
    ServerProcess,
    ToolServer,
    backend,
    rule_model,
    server_process,
    tool_server,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    """The server on each backend: embedded (SQLite, one process) and, when configured,
    shared PostgreSQL + Redis; every test that uses it runs on both."""
    tmp = tmp_path_factory.mktemp("e2e")
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (_model, model_url),
        backend(request.param) as env,
        server_process(tmp, model_url, env=env) as server,
    ):
        tools.secret = server.webhook_secret
        yield server, tools, tools_url


async def test_a_call_through_the_real_server(stack: tuple[ServerProcess, ToolServer, str]) -> None:
    server, tools, tools_url = stack
    tools.modes.update({"check_order": "ack", "check_refund": "ack", "slow_lookup": "slow"})
    tools.slow_seconds = 2.5
    async with Client(server.url, api_key=server.api_key) as admin:
        assistant = await admin.create_assistant(vapi_assistant(tools_url))
        assert assistant["voicemailMessage"] == "Call back later.", "unknown Vapi fields are kept"
        call = await admin.create_call(assistant_id=assistant["id"])
    call_id, token = call["id"], call["token"]
    async with Client(server.url, token=token) as backend:
        async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
            s = Session(ws)
            await s.until(said("Hello, order desk."))

            # 1. An async server tool; the tool server only acknowledges.
            await s.send({"type": "user-message", "content": "Where is my order?"})
            order = await s.until(tool_calls_named("check_order"))
            order_id = tool_call_id(order, "check_order")
            await s.until(said("I will tell you when it is ready."))
            await wait_for(lambda: any(c["call"].id == order_id for c in tools.calls))
            hook = next(c for c in tools.calls if c["call"].id == order_id)
            assert hook["headers"]["X-Vapi-Secret"] == "s3cret"
            assert (
                hook["payload"]["message"]["toolWithToolCallList"][0]["toolCall"]["id"] == order_id
            )

            # 2. A sync server tool answered in the webhook reply (source: webhook).
            await s.send({"type": "user-message", "content": "Do a lookup please."})
            await s.until(said("Looking that up."))
            await s.until(said('The tool said: {"q": "hours", "tool": "lookup"}'))

            # 3. The async result arrives later over HTTP from a backend (source: API), 50 times.
            answers = await asyncio.gather(
                *(
                    backend.submit_result(call_id, order_id, {"status": "shipped"})
                    for _ in range(50)
                )
            )
            assert sum(not a["duplicate"] for a in answers) == 1
            await s.until(said('Update: {"status": "shipped"}'))
            await asyncio.sleep(0.3)
            assert s.said().count('Update: {"status": "shipped"}') == 1, "said exactly once"
            with pytest.raises(Conflict) as conflict:
                await backend.submit_result(call_id, order_id, {"status": "lost"})
            assert conflict.value.code == "result_conflict"

            # 4. A client tool answered over the WebSocket (source: client);
            #    a result from the client for a server tool is refused.
            await s.send({"type": "user-message", "content": "What is my style?"})
            style = await s.until(tool_calls_named("get_style"))
            style_id = tool_call_id(style, "get_style")
            await s.send({"type": "tool-call-result", "toolCallId": order_id, "result": "x"})
            refused = await s.until(lambda e: e.get("type") == "error")
            assert refused["error"]["code"] == "tool_call_not_routed_to_client"
            await s.send(
                {
                    "type": "tool-call-result",
                    "toolCallId": style_id,
                    "name": "get_style",
                    "result": {"template": "bold"},
                }
            )
            ack = await s.until(lambda e: e.get("type") == "tool-call-result-ack")
            assert ack["outcome"] == "accepted"
            await s.until(said('The tool said: {"template": "bold"}'))

            # 5. A result through the control URL (the fourth source) for another async call.
            await s.send({"type": "user-message", "content": "And my refund?"})
            refund = await s.until(tool_calls_named("check_refund"))
            refund_id = tool_call_id(refund, "check_refund")
            await backend.control(
                call_id, {"type": "tool-call-result", "toolCallId": refund_id, "result": "approved"}
            )
            await s.until(said("Update: approved"))

            # 6. A sync tool whose webhook is slower than its timeout: the late reply still lands.
            await s.send({"type": "user-message", "content": "Try the slow one."})
            await s.until(said("That is taking too long."))
            slow = await s.until(tool_calls_named("slow_lookup"))
            slow_id = tool_call_id(slow, "slow_lookup")
            await s.until(said('"tool": "slow_lookup"'), within=10)  # the late reply, announced

            # 7. Bad frames get an error event and the call goes on.
            await s.send("{not json")
            assert await s.until(
                lambda e: e.get("type") == "error" and e["error"]["code"] == "invalid_json"
            )
            await s.send({"type": "teleport"})
            assert await s.until(
                lambda e: e.get("type") == "error" and e["error"]["code"] == "invalid_message"
            )

            # 8. say through the control URL, then end the call through it.
            await backend.say(call_id, "One more thing from the office.")
            await s.until(said("One more thing from the office."))
            await backend.control(call_id, {"type": "end-call"})
            await s.until(lambda e: e.get("type") == "end-of-call-report")

        record = await backend.get_call(call_id)
        assert record["status"] == "ended" and record["endedReason"] == "ended-by-control"
        states = {t["toolCallId"]: t for t in record["toolCalls"]}
        assert states[order_id]["state"] == "succeeded" and states[order_id]["resolvedBy"] == "api"
        assert states[style_id]["resolvedBy"] == "client"
        assert states[refund_id]["resolvedBy"] == "api"
        assert states[slow_id]["state"] == "timed_out" and states[slow_id]["late"]
        assert states[slow_id]["resolvedBy"] == "webhook"
        lookup = next(t for t in record["toolCalls"] if t["name"] == "lookup")
        assert lookup["resolvedBy"] == "webhook"
        for t in record["toolCalls"]:
            assert t["createdAt"] <= t["startedAt"] <= t["resultAt"]
        assert any(m["content"] == "Where is my order?" for m in record["transcript"])

        # After hang-up: a result for a pending call is kept as late and reported.
        pending = [t for t in record["toolCalls"] if t["state"] in ("pending", "running")]
        assert pending == []
        await wait_for(lambda: any(e["type"] == "end-of-call-report" for e in tools.events))
        report = next(e for e in tools.events if e["type"] == "end-of-call-report")
        assert report["headers"]["X-Vapi-Secret"] == "s3cret"
        assert {t["toolCallId"] for t in report["toolCalls"]} == set(states)
        assert tools.bad_signatures == 0


async def test_result_after_hang_up_is_late_and_reported(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, tools, tools_url = stack
    tools.modes["check_order"] = "ack"
    async with new_call(server, tools_url) as (call, s):
        await s.send({"type": "user-message", "content": "Check my order."})
        order_id = tool_call_id(await s.until(tool_calls_named("check_order")), "check_order")
        await s.until(said("I will tell you when it is ready."))
    async with Client(server.url, token=call["token"]) as backend:
        await wait_for_status(backend, call["id"], "ended")
        answer = await backend.submit_result(call["id"], order_id, {"status": "delivered"})
        assert answer["outcome"] == "late" and answer["late"]
    await wait_for(
        lambda: any(
            e["type"] == "tool-result-after-call" and e["toolCall"]["toolCallId"] == order_id
            for e in tools.events
        )
    )


async def wait_for_status(client: Client, call_id: str, status: str) -> None:
    for _ in range(100):
        if (await client.get_call(call_id))["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"call never reached {status}")


async def test_malformed_tool_replies_fail_clearly(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, tools, tools_url = stack
    tools.modes["broken"] = "garbage"
    async with new_call(server, tools_url) as (_call, s):
        await s.send({"type": "user-message", "content": "Use the broken tool."})
        result = await s.until(lambda e: e.get("type") == "tool-calls-result")
        assert result["toolCallResult"]["state"] == "failed"
        assert "invalid_tool_reply" in result["toolCallResult"]["error"]
        await s.until(said("The tool said:"))
    tools.modes["broken"] = "object"
    async with new_call(server, tools_url) as (_call, s):
        await s.send({"type": "user-message", "content": "Use the broken tool."})
        result = await s.until(lambda e: e.get("type") == "tool-calls-result")
        assert result["toolCallResult"]["state"] == "succeeded", (
            "an object instead of a list is accepted"
        )


async def test_tokens_open_only_their_own_call(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, _tools, tools_url = stack
    async with Client(server.url, api_key=server.api_key) as admin:
        a = await admin.create_call(assistant=vapi_assistant(tools_url))
        b = await admin.create_call(assistant=vapi_assistant(tools_url))
    routes = [
        ("GET", "/calls/{id}", None),
        ("POST", "/calls/{id}/end", None),
        ("POST", "/calls/{id}/tool-calls/tc/result", {"result": 1}),
        ("POST", "/calls/{id}/control", {"type": "say", "content": "hi"}),
    ]
    async with server.client() as http:
        for method, path, body in routes:
            url = path.format(id=a["id"])
            for headers in (
                {},
                {"authorization": "Bearer wrong"},
                {"authorization": f"Bearer {b['token']}"},
                {"authorization": f"Bearer {a['clientToken']}"},
            ):
                response = await http.request(method, url, json=body, headers=headers)
                assert response.status_code == 401, (method, url, headers, response.text)
                assert response.json()["error"]["code"] == "unauthorized"
        # Management routes need the API key, not a call token.
        response = await http.get("/calls", headers={"authorization": f"Bearer {a['token']}"})
        assert response.status_code == 401
    # The WebSocket refuses a wrong token and another call's token.
    for token in ("wrong", b["clientToken"]):
        async with connect(f"{a['clientUrl']}?token={token}") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4401
    async with Client(server.url, token=b["token"]) as other:
        with pytest.raises(Unauthorized):
            await other.get_call(a["id"])


async def test_errors_have_stable_codes(stack: tuple[ServerProcess, ToolServer, str]) -> None:
    server, _tools, tools_url = stack
    key = {"authorization": f"Bearer {server.api_key}"}
    async with server.client(headers=key) as http:
        cases = [
            (
                await http.post(
                    "/assistants",
                    content=b"{not json",
                    headers={"content-type": "application/json"},
                ),
                422,
                "invalid_request",
            ),
            (await http.get("/assistants/nope"), 404, "unknown_assistant"),
            (await http.post("/calls", json={"type": "text"}), 422, "invalid_request"),
            (await http.post("/calls", json={"assistantId": "nope"}), 404, "unknown_assistant"),
            (await http.post("/assistants", content=b"x" * 2_000_000), 413, "body_too_large"),
            (await http.get("/no/such/route"), 404, "not_found"),
            (await http.get("/calls/nope"), 404, "unknown_call"),
        ]
        call = (await http.post("/calls", json={"assistant": vapi_assistant(tools_url)})).json()
        cid = call["id"]
        cases += [
            (
                await http.post(f"/calls/{cid}/tool-calls/nope/result", json={"result": 1}),
                404,
                "unknown_tool_call",
            ),
            (
                await http.post(f"/calls/{cid}/tool-calls/a/result", json={"toolCallId": "b"}),
                422,
                "tool_call_id_mismatch",
            ),
            (
                await http.post(f"/calls/{cid}/control", json={"type": "say", "content": "x"}),
                409,
                "call_not_live",
            ),
            (
                await http.post(f"/calls/{cid}/control", json={"type": "fly"}),
                422,
                "invalid_request",
            ),
        ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code


async def test_private_webhook_urls_are_refused_unless_allowed(tmp_path: Path) -> None:
    from backchannel.server.urls import check_webhook_url

    with pytest.raises(Forbidden) as refused:
        await check_webhook_url("http://127.0.0.1:9/hook", allow_private=False)
    assert refused.value.code == "webhook_url_not_allowed"
    with pytest.raises(Forbidden):
        await check_webhook_url("http://10.1.2.3/hook", allow_private=False)
    await check_webhook_url("http://127.0.0.1:9/hook", allow_private=True)
    from backchannel import InvalidInput

    with pytest.raises(InvalidInput):
        await check_webhook_url("ftp://example.com/x", allow_private=True)


async def test_progress_silent_and_results_together(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    """Scenarios 11, 8 and 4 through the real server."""
    server, tools, tools_url = stack
    tools.modes.update({"check_order": "ack", "check_refund": "ack"})
    async with Client(server.url, api_key=server.api_key) as admin:
        call = await admin.create_call(assistant=vapi_assistant(tools_url))
    cid = call["id"]
    async with (
        Client(server.url, token=call["token"]) as backend,
        connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws,
    ):
        s = Session(ws)
        # 11: progress, spoken by its message, then the final result; states in order.
        await s.send({"type": "user-message", "content": "Check my order."})
        order_id = tool_call_id(await s.until(tool_calls_named("check_order")), "check_order")
        await s.until(said("I will tell you when it is ready."))
        await backend.submit_result(cid, order_id, {"pct": 40}, will_continue=True)
        await backend.submit_result(
            cid, order_id, {"pct": 80}, will_continue=True, message="Almost there."
        )
        await s.until(said("Almost there."))
        await backend.submit_result(cid, order_id, "delivered")
        await s.until(said("Update: delivered"))
        # 8: a silent result enters the history; nothing is said.
        await s.send({"type": "user-message", "content": "And my refund?"})
        refund_id = tool_call_id(await s.until(tool_calls_named("check_refund")), "check_refund")
        await s.until(lambda e: e.get("type") == "model-output")
        before = len(s.said())
        await backend.submit_result(cid, refund_id, "approved", delivery="silent")
        await asyncio.sleep(1.5)
        assert len(s.said()) == before, s.said()[before:]
        # 4: three results in the same second make one announcement.
        await s.send({"type": "user-message", "content": "batch 3"})
        batch = await s.until(
            lambda e: e.get("type") == "tool-calls" and len(e["toolCallList"]) == 3
        )
        ids = [t["id"] for t in batch["toolCallList"]]
        await s.until(said("I will tell you when it is ready."))
        marker = len(s.said())
        for i, tcid in enumerate(ids):
            await backend.submit_result(cid, tcid, f"part {i}")
            await asyncio.sleep(0.2)
        await s.until(said("Update: part"))
        await asyncio.sleep(1.5)
        updates = [t for t in s.said()[marker:] if t.startswith("Update:")]
        assert len(updates) == 1, updates
        record = await backend.get_call(cid)
    states = {t["toolCallId"]: t for t in record["toolCalls"]}
    assert [p["result"] for p in states[order_id]["progress"]] == [{"pct": 40}, {"pct": 80}]
    assert states[order_id]["state"] == "succeeded"
    assert states[refund_id]["delivery"] == "silent" and states[refund_id]["spokenAt"] is None
    assert states[refund_id]["deliveredAt"] is not None
    assert all(states[i]["spokenAt"] is not None for i in ids)


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    with backend(request.param) as env:
        yield env


async def test_sigkill_then_restart_keeps_pending_calls_and_accepts_results(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    """Scenario 10: the server is killed with pending calls; after a restart the ledger
    still has them, and results posted then are accepted, kept as late and reported.
    (Restarted under the same instance id, it knows at once that the calls it owned
    died with its previous run.)"""
    import signal

    env = {**backend_env, "BACKCHANNEL_INSTANCE_ID": "restarting"}
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (_model, model_url),
    ):
        tools.modes["check_order"] = "ack"
        with server_process(tmp_path, model_url, env=env) as first:
            tools.secret = first.webhook_secret
            async with Client(first.url, api_key=first.api_key) as admin:
                call = await admin.create_call(assistant=vapi_assistant(tools_url))
            async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
                s = Session(ws)
                await s.send({"type": "user-message", "content": "Check my order."})
                order_id = tool_call_id(
                    await s.until(tool_calls_named("check_order")), "check_order"
                )
                await s.until(said("I will tell you when it is ready."))
                first.process.send_signal(signal.SIGKILL)
                first.process.wait()
        with server_process(tmp_path, model_url, env=env, name="restarted") as second:
            async with Client(second.url, token=call["token"]) as backend:
                record = await backend.get_call(call["id"])
                assert record["status"] == "ended" and record["endedReason"] == "server-restarted"
                pending = {t["toolCallId"]: t["state"] for t in record["toolCalls"]}
                assert list(pending) == [order_id]
                assert pending[order_id] in ("pending", "running"), "kept, not resolved"
                answer = await backend.submit_result(call["id"], order_id, {"status": "shipped"})
                assert answer["outcome"] == "late" and answer["late"]
                again = await backend.submit_result(call["id"], order_id, {"status": "shipped"})
                assert again["duplicate"]
            await wait_for(
                lambda: any(
                    e["type"] == "tool-result-after-call"
                    and e["toolCall"]["toolCallId"] == order_id
                    for e in tools.events
                )
            )
