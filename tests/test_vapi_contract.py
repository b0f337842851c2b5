"""Every webhook body and client event backchannel sends under one of Vapi's names
validates against the models of Vapi's official Python SDK (``vapi-server-sdk``), the
``call`` object included.

A real server process runs calls that produce every such event: greeting, user turns,
an async tool answered later, a sync tool that times out, a barge-in on a voice-less
text call (``user-interrupted`` does not happen there; the engine test below covers it),
a control message, the end of the call. Each body goes through the SDK's model for its
type, which is strict where Vapi's schema is (e.g. a tool call's ``function.arguments``
is a JSON string, ``call.orgId`` and ``createdAt`` are required).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from vapi import types as vapi
from websockets.asyncio.client import connect

from backchannel import Client, ManualClock, ScriptedLLM
from backchannel.events import EventLog
from backchannel.llm.scripted import say

from .e2e_calls import Session, said, tool_call_id, tool_calls_named, vapi_assistant, wait_for
from .harness import assistant, running_call
from .peers import ServerProcess, ToolServer
from .peers import stack as server_stack

pytestmark = pytest.mark.anyio

SERVER_MODELS: dict[str, type[BaseModel]] = {
    "status-update": vapi.ServerMessageStatusUpdate,
    "transcript": vapi.ServerMessageTranscript,
    "speech-update": vapi.ServerMessageSpeechUpdate,
    "conversation-update": vapi.ServerMessageConversationUpdate,
    "tool-calls": vapi.ServerMessageToolCalls,
    "model-output": vapi.ServerMessageModelOutput,
    "user-interrupted": vapi.ServerMessageUserInterrupted,
    "hang": vapi.ServerMessageHang,
    "end-of-call-report": vapi.ServerMessageEndOfCallReport,
}
CLIENT_MODELS: dict[str, type[BaseModel]] = {
    "transcript": vapi.ClientMessageTranscript,
    "speech-update": vapi.ClientMessageSpeechUpdate,
    "conversation-update": vapi.ClientMessageConversationUpdate,
    "tool-calls": vapi.ClientMessageToolCalls,
    "tool-calls-result": vapi.ClientMessageToolCallsResult,
    "model-output": vapi.ClientMessageModelOutput,
    "user-interrupted": vapi.ClientMessageUserInterrupted,
    "hang": vapi.ClientMessageHang,
}
#: backchannel's own events: not Vapi's, so no model to check against.
OWN = {"tool-call-progress", "tool-calls-cancelled", "tool-result-after-call", "error"}


def check(models: dict[str, type[BaseModel]], body: dict[str, Any]) -> str | None:
    """The SDK model's complaint about ``body``, if any (and its ``call`` object's)."""
    kind = body.get("type")
    model = models.get(str(kind))
    if model is None:  # backchannel's own (``OWN``, ``clear``, acks): no Vapi model
        return None
    try:
        model.model_validate(body)
        if "call" in body:
            vapi.Call.model_validate(body["call"])
    except Exception as exc:
        return f"{kind}: {exc}"
    return None


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    tmp = tmp_path_factory.mktemp("contract")
    with server_stack(tmp) as running:
        yield running


async def test_webhooks_and_client_events_validate_against_vapis_sdk_models(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, tools, tools_url = stack
    tools.modes["check_order"] = "ack"
    tools.modes["slow_lookup"] = "slow"
    tools.slow_seconds = 2.0
    config = vapi_assistant(tools_url)
    config["serverMessages"] = [*SERVER_MODELS, *OWN]
    async with Client(server.url, api_key=server.api_key) as admin:
        created = await admin.create_call(assistant=config)
    async with connect(f"{created['clientUrl']}?token={created['clientToken']}") as ws:
        s = Session(ws)
        await s.until(said("Hello, order desk."))
        await s.send({"type": "user-message", "content": "Check my order."})
        order_id = tool_call_id(await s.until(tool_calls_named("check_order")), "check_order")
        await s.until(said("I will tell you when it is ready."))
        async with Client(server.url, token=created["token"]) as backend:
            await backend.submit_result(created["id"], order_id, {"status": "shipped"})
            await s.until(said("shipped"))
            await s.send({"type": "user-message", "content": "Something slow, please."})
            await s.until(said("That is taking too long."))
            await backend.control(
                created["id"],
                {
                    "type": "add-message",
                    "message": {"role": "system", "content": "VIP caller."},
                    "triggerResponseEnabled": False,
                },
            )
            await s.send({"type": "end-call"})
            await s.until(lambda e: e.get("type") == "status-update" and e["status"] == "ended")

    def reported() -> bool:
        return any(e["type"] == "end-of-call-report" for e in tools.events)

    await wait_for(reported, within=30)
    webhooks = [{k: v for k, v in e.items() if k != "headers"} for e in tools.events]
    webhooks += [c["payload"]["message"] for c in tools.calls if c["call"].id == order_id]
    client = s.events
    seen_server = {str(b.get("type")) for b in webhooks}
    seen_client = {str(b.get("type")) for b in client}
    problems = [p for b in webhooks if (p := check(SERVER_MODELS, b))]
    problems += [p for b in client if (p := check(CLIENT_MODELS, b))]
    print(
        f"validated {len(webhooks)} webhooks ({sorted(seen_server & set(SERVER_MODELS))}) and "
        f"{len(client)} client events ({sorted(seen_client & set(CLIENT_MODELS))}); "
        f"{len(problems)} failures"
    )
    assert not problems, "\n".join(problems[:10])
    expected = {
        "status-update",
        "transcript",
        "conversation-update",
        "tool-calls",
        "model-output",
        "end-of-call-report",
    }
    assert expected <= seen_server
    report = next(b for b in webhooks if b["type"] == "end-of-call-report")
    assert report["artifact"]["messagesOpenAIFormatted"]
    assert "User: Check my order." in report["artifact"]["transcript"]
    roles = {m["role"] for m in report["artifact"]["messages"]}
    assert {"system", "user", "bot", "tool_calls", "tool_call_result"} <= roles
    assert report["call"]["orgId"] and report["call"]["monitor"]["controlUrl"]


async def test_hang_and_user_interrupted_validate_too(clock: ManualClock) -> None:
    """The two events a text call through the server does not produce: ``hang`` (the
    model takes longer than 5 s to say anything) and ``user-interrupted``."""
    llm = ScriptedLLM(
        [say("A slow answer that takes a while to say out loud."), say("Sure.")],
        clock=clock,
        first_chunk_delay=6.0,
    )
    details = {
        "id": "c1",
        "orgId": "o1",
        "createdAt": "2026-01-01T00:00:00+00:00",
        "updatedAt": "2026-01-01T00:00:00+00:00",
    }
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.details = details  # as the server sets them
        events: EventLog = h.events
        start = len(events.events)
        h.call.send_text("Hello?")
        await h.advance(6.5)
        h.call.user_started_speaking()
        await h.advance(1)
        bodies = [e.to_message()["message"] for e in events.events[start:]]
    kinds = [b["type"] for b in bodies]
    assert "hang" in kinds and "user-interrupted" in kinds
    problems = [p for b in bodies if (p := check(SERVER_MODELS, b))]
    problems += [p for b in bodies if (p := check(CLIENT_MODELS, b))]
    assert not problems, "\n".join(problems)


def test_a_vapi_export_is_a_valid_create_assistant_body() -> None:
    """The test assistant is written to Vapi's schema: its SDK takes it as a create body."""
    vapi.CreateAssistantDto.model_validate(vapi_assistant("https://tools.example.com"))
