"""Moving over from Vapi: exports import as they are and read back unchanged, a tool runs
once, a tool server answers later with only what its webhook gave it, Vapi's control
messages work, and odd input is refused with a code instead of breaking the API.

A real server process, a real tool server, real WebSocket clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from backchannel import parse_tool_calls

from .e2e_calls import Session, said, tool_call_id, tool_calls_named, vapi_assistant, wait_for
from .peers import ServerProcess, ToolServer
from .peers import stack as server_stack

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    tmp = tmp_path_factory.mktemp("vapi")
    with server_stack(tmp) as running:
        yield running


def _admin(server: ServerProcess) -> httpx.AsyncClient:
    return server.client(headers={"authorization": f"Bearer {server.api_key}"})


#: What ``GET /assistant/{id}`` on Vapi answers: server-owned fields, nulls, fields
#: backchannel does not use.
VAPI_GET_OUTPUT: dict[str, Any] = {
    "id": "5b0a4a08-133c-4146-9315-0984f8c6be80",
    "orgId": "9c1b5c16-1d6e-4b1a-8a55-1a0a1f2f3e4d",
    "createdAt": "2025-06-01T10:00:00.000Z",
    "updatedAt": "2025-06-02T10:00:00.000Z",
    "isServerUrlSecretSet": False,
    "name": "Front desk",
    "firstMessage": "Hi!",
    "firstMessageMode": "assistant-speaks-first-with-model-generated-message",
    "voicemailMessage": None,
    "model": {
        "provider": "openai",
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief."}],
        "tools": [
            {
                "type": "function",
                "async": True,
                "function": {"name": "check_order", "parameters": {"type": "object"}},
                "messages": [{"type": "request-start", "content": "Checking."}],
            }
        ],
        "emotionRecognitionEnabled": True,
    },
    "voice": {"provider": "11labs", "voiceId": "burt"},
    "backgroundDenoisingEnabled": False,
}


async def test_a_vapi_export_imports_and_reads_back_unchanged(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, _tools, _url = stack
    async with _admin(server) as http:
        created = await http.post("/assistants", json=VAPI_GET_OUTPUT)
        assert created.status_code == 201, created.text
        body = created.json()
        owned = {"id", "orgId", "createdAt", "updatedAt", "isServerUrlSecretSet"}
        given = {k: v for k, v in VAPI_GET_OUTPUT.items() if k not in owned}
        assert body["id"] != VAPI_GET_OUTPUT["id"], "the server owns ids"
        assert {k: v for k, v in body.items() if k not in owned} == given, "nothing added"
        read = (await http.get(f"/assistants/{body['id']}")).json()
        assert read == body
        listed = (await http.get("/assistants")).json()
        assert body in listed
        # An update cannot change ids or timestamps, and the assistant stays readable.
        patched = await http.patch(
            f"/assistants/{body['id']}",
            json={"id": "x", "createdAt": "yesterday", "name": "Desk"},
        )
        assert patched.status_code == 200, patched.text
        after = (await http.get(f"/assistants/{body['id']}")).json()
        assert after["id"] == body["id"] and after["createdAt"] == body["createdAt"]
        assert after["name"] == "Desk"


async def test_text_that_cannot_be_stored_is_refused_and_never_stored(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, _tools, _url = stack
    async with _admin(server) as http:
        before = len((await http.get("/assistants")).json())
        lone = b'{"name": "\\ud800", "model": {"provider": "openai"}}'
        refused = await http.post(
            "/assistants", content=lone, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_body"
        listed = await http.get("/assistants")
        assert listed.status_code == 200 and len(listed.json()) == before
        deep = b"[" * 100_000 + b"]" * 100_000
        nested = await http.post(
            "/assistants", content=deep, headers={"content-type": "application/json"}
        )
        assert 400 <= nested.status_code < 500, nested.text
        assert "code" in nested.json()["error"]
        paired = await http.post(
            "/assistants",
            content=b'{"name": "\\ud83d\\ude00 desk"}',
            headers={"content-type": "application/json"},
        )
        assert paired.status_code == 201 and paired.json()["name"] == "\U0001f600 desk"


async def test_a_tool_runs_once_and_its_server_answers_later_on_the_control_url(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    """``tool-calls`` in ``serverMessages`` (Vapi's default list has it) does not send the
    tool call twice; the webhook's ``call.monitor.controlUrl`` is all a tool server needs
    to answer later, and it opens no other call."""
    server, tools, tools_url = stack
    tools.modes["check_order"] = "ack"
    assistant = vapi_assistant(tools_url)
    assistant["serverMessages"] = ["tool-calls", "end-of-call-report", "status-update"]
    async with _admin(server) as http:
        call = (await http.post("/calls", json={"assistant": assistant})).json()
        other = (await http.post("/calls", json={"assistant": assistant})).json()
    async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
        s = Session(ws)
        await s.send({"type": "user-message", "content": "Check my order."})
        order_id = tool_call_id(await s.until(tool_calls_named("check_order")), "check_order")
        await wait_for(lambda: any(c["call"].id == order_id for c in tools.calls))
        [request] = [c for c in tools.calls if c["call"].id == order_id]
        [parsed] = [t for t in parse_tool_calls(request["payload"]) if t.id == order_id]
        assert parsed.call_id == call["id"] and parsed.control_url and parsed.call_token
        assert not any(e["type"] == "tool-calls" for e in tools.events), (
            "tool-calls went to the server URL too"
        )
        async with httpx.AsyncClient(timeout=30) as tool_server_http:
            answer = await tool_server_http.post(
                parsed.control_url,
                json={"type": "tool-call-result", "toolCallId": order_id, "result": "shipped"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["outcome"] == "accepted"
            stranger = await tool_server_http.get(
                f"{server.url}/calls/{other['id']}",
                headers={"authorization": f"Bearer {parsed.call_token}"},
            )
            assert stranger.status_code == 401
        await s.until(said("shipped"))
    assert sum(1 for c in tools.calls if c["call"].id == order_id) == 1


async def test_vapis_control_messages_and_bad_frames(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, _tools, tools_url = stack
    async with _admin(server) as http:
        call = (await http.post("/calls", json={"assistant": vapi_assistant(tools_url)})).json()
        control = f"/calls/{call['id']}/control"
        async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
            s = Session(ws)
            await s.until(said("Hello, order desk."))
            answer = await http.post(
                control, json={"type": "control", "control": "say-first-message"}
            )
            assert answer.status_code == 200, answer.text
            greeting = said("Hello, order desk.")
            await s.until(lambda e: greeting(e) and s.said().count("Hello, order desk.") == 2)
            for body in ("mute-customer", "unmute-customer"):
                answer = await http.post(control, json={"type": "control", "control": body})
                assert answer.status_code == 200, answer.text
            # A frame nested 10,000 deep gets an error event; the call goes on.
            await s.send("[" * 10_000 + "]" * 10_000)
            error = await s.until(lambda e: e.get("type") == "error")
            assert error["error"]["code"] in ("invalid_json", "invalid_message")
            await s.send({"type": "user-message", "content": "Hello?"})
            await s.until(said("Okay."))


def test_tool_results_speak_a_message_only_of_their_own_kind() -> None:
    """Vapi's ``ToolCallResult`` precedence: a result says a ``request-complete`` message,
    an error a ``request-failed`` one; a message of the other kind is not said."""
    from backchannel.results import ToolResultPayload

    def line(body: dict[str, Any]) -> str | None:
        return ToolResultPayload.model_validate({"toolCallId": "t", **body}).to_result().message

    complete = {"type": "request-complete", "content": "Done!"}
    failed = {"type": "request-failed", "content": "That failed."}
    assert line({"result": "ok", "message": complete}) == "Done!"
    assert line({"result": "ok", "message": failed}) is None
    assert line({"error": "boom", "message": failed}) == "That failed."
    assert line({"error": "boom", "message": complete}) is None
    assert line({"result": "ok", "message": {"content": "Untyped."}}) == "Untyped."
    assert line({"result": "ok", "message": "Plain."}) == "Plain."
