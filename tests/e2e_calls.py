"""What the end-to-end tests share: the test assistant (written to Vapi's schema), a
client WebSocket that keeps its events, and the predicates the tests wait on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from backchannel import Client

from .peers import ServerProcess


def tool(name: str, url: str, *, is_async: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "async": is_async,
        "function": {
            "name": name,
            "description": name,
            "parameters": {"type": "object", "properties": {}},
        },
        "server": {
            "url": f"{url}/tools",
            "timeoutSeconds": extra.pop("timeout", 20),
            "headers": {"X-Vapi-Secret": "s3cret"},
        },
        **extra,
    }


def vapi_assistant(tools_url: str) -> dict[str, Any]:
    """An assistant written to Vapi's schema, with fields backchannel does not use."""
    return {
        "name": "Order desk",
        "firstMessage": "Hello, order desk.",
        "voicemailMessage": "Call back later.",
        "backgroundSound": "office",
        "model": {
            "provider": "openai",
            "model": "rule-model",
            "emotionRecognitionEnabled": True,
            "messages": [{"role": "system", "content": "You help with orders."}],
            "tools": [
                tool("check_order", tools_url, is_async=True),
                tool("check_refund", tools_url, is_async=True),
                tool(
                    "lookup",
                    tools_url,
                    messages=[{"type": "request-start", "content": "Looking that up."}],
                ),
                tool(
                    "slow_lookup",
                    tools_url,
                    timeout=1,
                    messages=[{"type": "request-failed", "content": "That is taking too long."}],
                ),
                tool("broken", tools_url),
                {
                    "type": "function",
                    "function": {
                        "name": "get_style",
                        "parameters": {"type": "object", "properties": {}},
                    },
                    "backchannel": {"runsOn": "client"},
                },
            ],
        },
        "voice": {"provider": "11labs", "voiceId": "burt"},
        "server": {"url": f"{tools_url}/events", "headers": {"X-Vapi-Secret": "s3cret"}},
        "serverMessages": [
            "end-of-call-report",
            "tool-result-after-call",
            "status-update",
            "tool-calls-cancelled",
        ],
    }


class Session:
    """A WebSocket client that keeps every event it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 15
    ) -> dict[str, Any]:
        for event in self.events:
            if predicate(event):
                return event
        try:
            async with asyncio.timeout(within):
                while True:
                    event = json.loads(await self.ws.recv())
                    self.events.append(event)
                    if predicate(event):
                        return event
        except TimeoutError:
            seen = [
                (e.get("type"), e.get("transcript") or e.get("error")) for e in self.events[-12:]
            ]
            raise AssertionError(f"no matching event in {within} s; last events: {seen}") from None

    def said(self) -> list[str]:
        return [
            e["transcript"]
            for e in self.events
            if e.get("type") == "transcript" and e.get("role") == "assistant"
        ]


def said(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e.get("type") == "transcript" and e.get("role") == "assistant" and text in e["transcript"]
    )


def tool_calls_named(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e.get("type") == "tool-calls"
        and any(t["function"]["name"] == name for t in e["toolCallList"])
    )


def tool_call_id(event: dict[str, Any], name: str) -> str:
    return next(t["id"] for t in event["toolCallList"] if t["function"]["name"] == name)


@asynccontextmanager
async def new_call(
    server: ServerProcess, tools_url: str
) -> AsyncIterator[tuple[dict[str, Any], Session]]:
    """A text call on the test assistant, with its client socket open for the block."""
    async with Client(server.url, api_key=server.api_key) as admin:
        call = await admin.create_call(assistant=vapi_assistant(tools_url))
    async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
        yield call, Session(ws)


async def wait_for(check: Callable[[], bool], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
