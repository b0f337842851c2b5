"""Vapi's official Python SDK (``vapi-server-sdk``) drives a real backchannel server with
only the base URL and the key changed: it creates a tool and an assistant that uses it by
``toolIds``, creates a call with ``assistantOverrides.variableValues``, and reads the
call back; the call itself runs over backchannel's client socket, the model calls the
async tool and its result comes back later. Every answer also passes the SDK's models
strictly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from vapi import AsyncVapi
from vapi import types as vapi
from vapi.tools.types.create_tools_request import CreateToolsRequest_Function
from vapi.tools.types.create_tools_response import CreateToolsResponse_Function
from websockets.asyncio.client import connect

from .e2e_calls import Session, said, tool_call_id, tool_calls_named, wait_for
from .peers import ServerProcess, ToolServer
from .peers import stack as server_stack

pytestmark = pytest.mark.anyio


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    with server_stack(tmp_path) as (server, tools, tools_url):
        tools.modes["check_order"] = "ack"
        yield server, tools, tools_url


async def test_vapis_python_sdk_runs_a_whole_call(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    server, tools, tools_url = stack
    async with httpx.AsyncClient(timeout=30) as sdk_http:
        await _whole_call(
            AsyncVapi(token=server.api_key, base_url=server.url, httpx_client=sdk_http),
            server,
            tools,
            tools_url,
        )


async def _whole_call(
    sdk: AsyncVapi, server: ServerProcess, tools: ToolServer, tools_url: str
) -> None:
    tool = await sdk.tools.create(
        request=CreateToolsRequest_Function(
            type="function",
            async_=True,
            function=vapi.OpenAiFunction(
                name="check_order",
                description="Look up an order",
                parameters=vapi.OpenAiFunctionParameters(type="object", properties={}),
            ),
            server=vapi.Server(url=f"{tools_url}/tools"),
        )
    )
    assistant = await sdk.assistants.create(
        name="Order desk",
        first_message="Hello {{name}}, order desk.",
        model=vapi.CreateAssistantDtoModel_Openai(
            provider="openai",
            model="gpt-4o",
            messages=[vapi.OpenAiMessage(role="system", content="You help {{name}}.")],
            tool_ids=[tool.id],
        ),
        server=vapi.Server(url=f"{tools_url}/events"),
        server_messages=["end-of-call-report", "status-update"],
    )
    fetched = await sdk.assistants.get(id=assistant.id)
    assert fetched.model is not None and fetched.name == "Order desk"
    call = await sdk.calls.create(
        assistant_id=assistant.id,
        assistant_overrides=vapi.AssistantOverrides(variable_values={"name": "Ada"}),
    )
    assert isinstance(call, vapi.Call) and call.assistant_id == assistant.id
    extra: dict[str, Any] = call.model_extra or {}
    async with connect(f"{extra['clientUrl']}?token={extra['clientToken']}") as ws:
        s = Session(ws)
        await s.until(said("Hello Ada, order desk."))
        await s.send({"type": "user-message", "content": "Check my order."})
        order_id = tool_call_id(await s.until(tool_calls_named("check_order")), "check_order")
        await wait_for(lambda: any(c["call"].id == order_id for c in tools.calls))
        hook = next(c for c in tools.calls if c["call"].id == order_id)
        control_url = hook["payload"]["message"]["call"]["monitor"]["controlUrl"]
        async with httpx.AsyncClient(timeout=30) as tool_server_http:
            answer = await tool_server_http.post(
                control_url,
                json={"type": "tool-call-result", "toolCallId": order_id, "result": "shipped"},
            )
        assert answer.json()["outcome"] == "accepted"
        await s.until(said("shipped"))
        await s.send({"type": "end-call"})
        await s.until(lambda e: e.get("type") == "status-update" and e["status"] == "ended")
    ended = await sdk.calls.get(id=call.id)
    assert ended.status == "ended" and ended.ended_reason == "ended-by-control"
    listed = await sdk.calls.list()
    assert any(c.id == call.id for c in listed)
    await wait_for(lambda: any(e["type"] == "end-of-call-report" for e in tools.events))

    # The raw answers pass the SDK's models strictly (its client parses leniently).
    key = {"authorization": f"Bearer {server.api_key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=key, timeout=30) as http:
        vapi.Assistant.model_validate((await http.get(f"/assistant/{assistant.id}")).json())
        CreateToolsResponse_Function.model_validate((await http.get(f"/tool/{tool.id}")).json())
        vapi.Call.model_validate((await http.get(f"/call/{call.id}")).json())
        number = await http.post(
            "/phone-number",
            json={"provider": "twilio", "number": "+15551230000", "assistantId": assistant.id},
        )
        assert number.status_code == 201, number.text
    numbers = await sdk.phone_numbers.list()
    assert any(n.id == number.json()["id"] for n in numbers)
    await sdk.tools.delete(id=tool.id)
    with pytest.raises(Exception, match="404"):
        await sdk.tools.get(id=tool.id)
