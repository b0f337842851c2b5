"""Three assistants as Vapi users export them (``tests/vapi_exports/``, written from Vapi's
API reference): a dental clinic's receptionist, a restaurant's booking line and a parcel
tracking desk, with tools of every kind, every tool ``messages`` type and many fields
backchannel does not use.

Each one is a valid create body for Vapi's own SDK; imports on backchannel's route and on
Vapi's, both as a create body and as a ``GET /assistant/{id}`` answer; reads back
unchanged; and runs a call: the greeting, its tools (a sync one through the tool server,
an async one whose result is posted later), and "bye" through ``endCall``, ending with an
end-of-call report at the assistant's server URL. A tool line with ``role: system`` is a
hint for the model, not something to say.

A real server process, a real tool server, a real WebSocket client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from vapi import types as vapi
from websockets.asyncio.client import connect

from .e2e_calls import Session, said, wait_for
from .fake_openai import FakeOpenAI
from .fake_openai import serve as serve_model
from .peers import ServerProcess, ToolServer, rule_model, server_process, tool_server

pytestmark = pytest.mark.anyio

EXPORTS = sorted((Path(__file__).parent / "vapi_exports").glob("*.json"))
#: The host the exports' webhooks name; swapped for the local tool server's.
EXPORT_HOST = "https://tools.example.com"
#: Fields of Vapi exports made before its SDK 3 that the SDK no longer declares; a Vapi
#: user's export may still carry them. Any other undeclared field is a typo in an export.
LEGACY_FIELDS = {"silenceTimeoutSeconds", "secret", "backgroundDenoisingEnabled"}
#: What the routes add to a stored assistant.
OURS = {"id", "createdAt", "updatedAt"}
VAPIS = {"id", "orgId", "createdAt", "updatedAt"}

by_export = pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])


@dataclass
class Stack:
    server: ServerProcess
    tools: ToolServer
    tools_url: str
    model: FakeOpenAI

    def export(self, path: Path) -> dict[str, Any]:
        """The export, its webhooks pointed at the local tool server."""
        data: dict[str, Any] = json.loads(path.read_text().replace(EXPORT_HOST, self.tools_url))
        return data

    def admin(self) -> httpx.AsyncClient:
        return self.server.client(headers={"authorization": f"Bearer {self.server.api_key}"})

    def log(self) -> str:
        return self.server.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("vapi-exports")
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (model, model_url),
        server_process(tmp, model_url) as server,
    ):
        tools.secret = server.webhook_secret
        tools.modes["check_order"] = "ack"  # the async tool: its result is posted later
        yield Stack(server, tools, tools_url, model)


def _answer(stack: Stack, response: httpx.Response, status: int) -> Any:
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {request.url.path} answered {response.status_code}, not {status}: "
        f"{response.text}\n--- server log ---\n{stack.log()}"
    )
    return response.json()


def _diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected``: added, missing and changed fields."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"added {path}.{k} = {actual[k]!r}" for k in actual.keys() - expected.keys()]
        out += [f"missing {path}.{k}" for k in expected.keys() - actual.keys()]
        for k in expected.keys() & actual.keys():
            out += _diff(expected[k], actual[k], f"{path}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in _diff(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [f"changed {path}: {expected!r} -> {actual!r}"]


def _same(expected: dict[str, Any], actual: dict[str, Any], adds: set[str], what: str) -> None:
    assert adds <= actual.keys(), f"{what}: no {sorted(adds - actual.keys())}"
    diffs = _diff(expected, {k: v for k, v in actual.items() if k not in adds})
    assert not diffs, f"{what} is not the body as given:\n" + "\n".join(sorted(diffs))


def _undeclared(value: Any, path: str = "") -> list[str]:
    """Fields the SDK's models do not declare (kept by them as extras), by path."""
    if isinstance(value, BaseModel):
        found = [f"{path}.{k}" for k in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _undeclared(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list | tuple):
        return [f for i, v in enumerate(value) for f in _undeclared(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _undeclared(v, f"{path}.{k}")]
    return []


def _tools(export: dict[str, Any]) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = export["model"].get("tools", [])
    return tools


def _function(export: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next(
        (t for t in _tools(export) if t["type"] == "function" and t["function"]["name"] == name),
        None,
    )


def _line(tool: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((m for m in tool.get("messages", []) if m["type"] == kind), None)


# -- the exports themselves ------------------------------------------------------------


@by_export
def test_the_export_is_a_create_body_for_vapis_own_sdk(path: Path) -> None:
    data = json.loads(path.read_text())
    assistant = vapi.CreateAssistantDto.model_validate(data)
    assert assistant.model is not None and assistant.model.tools
    odd = [f for f in _undeclared(assistant) if f.rsplit(".", 1)[-1] not in LEGACY_FIELDS]
    assert not odd, f"fields Vapi's API reference does not have: {odd}"


def test_the_exports_cover_what_the_issue_asks() -> None:
    exports = [json.loads(p.read_text()) for p in EXPORTS]
    assert len(exports) == 3
    providers = {e["model"]["provider"] for e in exports}
    assert "openai" in providers and len(providers) == 3
    tools = [t for e in exports for t in _tools(e)]
    kinds = {t["type"] for t in tools}
    assert {"function", "endCall", "transferCall"} <= kinds
    assert kinds - {"function", "endCall", "transferCall"}, "no tool kind backchannel does not run"
    functions = [t for t in tools if t["type"] == "function"]
    assert {bool(t.get("async")) for t in functions} == {True, False}
    assert any(
        d["type"] == "number"
        for t in tools
        if t["type"] == "transferCall"
        for d in t["destinations"]
    )
    lines = [m for t in tools for m in t.get("messages", [])]
    assert {m["type"] for m in lines} == {
        "request-start",
        "request-complete",
        "request-failed",
        "request-response-delayed",
    }
    assert any("blocking" in m for m in lines if m["type"] == "request-start")
    assert all("timingMilliseconds" in m for m in lines if m["type"] == "request-response-delayed")
    tool_servers = [t["server"] for t in tools if "server" in t]
    for key in ("url", "timeoutSeconds", "headers", "secret"):
        assert any(key in s for s in tool_servers), f"no tool server has {key}"
        assert any(key in e["server"] for e in exports), f"no assistant server has {key}"
    for e in exports:
        assert {"messages", "temperature", "maxTokens"} <= e["model"].keys()
        assert e["model"]["messages"][0]["role"] == "system"
    fields = set().union(*(e.keys() for e in exports))
    assert {
        "firstMessage",
        "firstMessageMode",
        "voice",
        "transcriber",
        "serverMessages",
        "clientMessages",
        "endCallPhrases",
        "endCallMessage",
        "voicemailMessage",
        "silenceTimeoutSeconds",
        "maxDurationSeconds",
        "backgroundSound",
        "analysisPlan",
        "artifactPlan",
        "startSpeakingPlan",
        "stopSpeakingPlan",
        "metadata",
        "compliancePlan",
    } <= fields
    assert any(e["voice"]["provider"] == "11labs" and "stability" in e["voice"] for e in exports)
    assert any(e["transcriber"]["model"] == "nova-2" for e in exports)
    assert {e["firstMessageMode"] for e in exports} >= {
        "assistant-speaks-first",
        "assistant-waits-for-user",
    }
    names = {t["function"]["name"] for t in functions}
    assert {"lookup", "check_order"} <= names, "the rule model calls these"
    assert any(_function(e, "check_order") for e in exports)


# -- import and read back --------------------------------------------------------------


@by_export
async def test_the_export_imports_as_a_create_body(stack: Stack, path: Path) -> None:
    body = stack.export(path)
    async with stack.admin() as http:
        for route in ("/assistants", "/assistant"):
            created = _answer(stack, await http.post(route, json=body), 201)
            assistant_id = created["id"]
            _same(body, created, OURS if route == "/assistants" else VAPIS, f"POST {route}")
            ours = _answer(stack, await http.get(f"/assistants/{assistant_id}"), 200)
            _same(body, ours, OURS, f"GET /assistants/{{id}} (created on {route})")
            assert ours.keys() == body.keys() | OURS
            theirs = _answer(stack, await http.get(f"/assistant/{assistant_id}"), 200)
            _same(body, theirs, VAPIS, f"GET /assistant/{{id}} (created on {route})")
            assert theirs.keys() == body.keys() | VAPIS
            vapi.Assistant.model_validate(theirs)


@by_export
async def test_the_export_imports_as_a_get_output(stack: Stack, path: Path) -> None:
    """What ``GET /assistant/{id}`` answers (ids, org, times) imports again: the server's
    own fields are ignored, everything else is kept."""
    body = stack.export(path)
    async with stack.admin() as http:
        first = _answer(stack, await http.post("/assistant", json=body), 201)
        output = _answer(stack, await http.get(f"/assistant/{first['id']}"), 200)
        assert output.keys() >= VAPIS
        for route in ("/assistants", "/assistant"):
            again = _answer(stack, await http.post(route, json=output), 201)
            assert again["id"] != output["id"], f"POST {route} kept the export's id"
            ours = _answer(stack, await http.get(f"/assistants/{again['id']}"), 200)
            _same(body, ours, OURS, f"GET /assistants/{{id}} (a GET output posted to {route})")
            theirs = _answer(stack, await http.get(f"/assistant/{again['id']}"), 200)
            _same(body, theirs, VAPIS, f"GET /assistant/{{id}} (a GET output posted to {route})")
            assert theirs["orgId"] == output["orgId"]
            vapi.Assistant.model_validate(theirs)


# -- a call on it ----------------------------------------------------------------------


def _headers(recorded: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in recorded["headers"].items()}


def _check_webhook_headers(server: dict[str, Any], recorded: dict[str, Any]) -> None:
    """The export's static headers and ``secret`` (as ``X-Vapi-Secret``) came along."""
    got = _headers(recorded)
    for key, value in server.get("headers", {}).items():
        assert got.get(key.lower()) == value, f"header {key} not sent: {got}"
    if "secret" in server:
        assert got.get("x-vapi-secret") == server["secret"]


def _tool_requests(stack: Stack, call_id: str, name: str) -> list[dict[str, Any]]:
    return [
        c
        for c in list(stack.tools.calls)
        if c["call"].call_id == call_id and c["call"].name == name
    ]


async def _opening(s: Session, export: dict[str, Any]) -> str:
    """Hear the assistant open the call if its ``firstMessageMode`` says it speaks first."""
    mode = str(export.get("firstMessageMode", "assistant-speaks-first"))
    if mode == "assistant-speaks-first":
        await s.until(said(export["firstMessage"]))
    elif mode == "assistant-speaks-first-with-model-generated-message":
        await s.until(said(""))  # whatever the model opens with
    return mode


async def _sync_lookup(
    stack: Stack,
    s: Session,
    call_id: str,
    tool: dict[str, Any],
    ask: str = "Could you lookup your hours on Saturday?",
) -> None:
    """A sync tool through the tool server: its start line, then the model reads its result."""
    await s.send({"type": "user-message", "content": ask})
    complete = _line(tool, "request-complete") or {}
    if complete.get("role") == "system":
        # The model gets a system hint after the result and answers from that (the rule
        # model says "Okay." to a system message): wait for its answer.
        await s.until(lambda e: e.get("type") == "tool-calls-result")
        heard = len(s.said())
        await s.until(lambda e: len(s.said()) > heard)
        answered = len(s.said()) - 1
    else:
        await s.until(said('"tool": "lookup"'))  # the rule model reads the tool's answer
        answered = next(i for i, line in enumerate(s.said()) if '"tool": "lookup"' in line)
    [request] = _tool_requests(stack, call_id, "lookup")
    _check_webhook_headers(tool["server"], request)
    start = _line(tool, "request-start")
    if start and start.get("content"):
        lines = s.said()
        assert start["content"] in lines, f"start line not said: {lines}"
        assert lines.index(start["content"]) < answered, lines


async def _async_order(
    stack: Stack, s: Session, call: dict[str, Any], tool: dict[str, Any]
) -> None:
    """The async tool: the tool server only acknowledges; its result is posted later on the
    call's result route with the call's token, and then said."""
    await s.send({"type": "user-message", "content": "Where is my order? It's number 42."})
    await wait_for(lambda: bool(_tool_requests(stack, call["id"], "check_order")), within=20)
    [request] = _tool_requests(stack, call["id"], "check_order")
    _check_webhook_headers(tool["server"], request)
    await s.until(said("I will tell you when it is ready."))
    outcome = "Order 42 left the kitchen and is out for delivery."
    async with stack.server.client(headers={"authorization": f"Bearer {call['token']}"}) as http:
        posted = await http.post(
            f"/calls/{call['id']}/tool-calls/{request['call'].id}/result",
            json={"result": outcome},
        )
    assert _answer(stack, posted, 200)["outcome"] == "accepted"
    await s.until(said("out for delivery"), within=20)


@by_export
async def test_a_call_runs_on_the_export(stack: Stack, path: Path) -> None:
    export = stack.export(path)
    async with stack.admin() as http:
        assistant = _answer(stack, await http.post("/assistant", json=export), 201)
        call = _answer(stack, await http.post("/calls", json={"assistantId": assistant["id"]}), 201)
    async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
        s = Session(ws)
        mode = await _opening(s, export)
        lookup = _function(export, "lookup")
        order = _function(export, "check_order")
        assert lookup or order, "the export has no tool the rule model calls"
        if lookup is not None:
            await _sync_lookup(stack, s, call["id"], lookup)
        if order is not None:
            await _async_order(stack, s, call, order)
        await s.send({"type": "user-message", "content": "That's all, thanks. Bye!"})
        await s.until(lambda e: e.get("type") == "status-update" and e["status"] == "ended")
    if mode == "assistant-waits-for-user":
        transcripts = [e for e in s.events if e.get("type") == "transcript"]
        assert transcripts and transcripts[0]["role"] == "user", "the assistant spoke first"

    async with stack.admin() as http:
        ended = _answer(stack, await http.get(f"/call/{call['id']}"), 200)
    assert ended["status"] == "ended" and ended["endedReason"] == "assistant-ended-call"

    def report() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in list(stack.tools.events)
                if e["type"] == "end-of-call-report" and e["call"]["id"] == call["id"]
            ),
            None,
        )

    await wait_for(lambda: report() is not None, within=20)
    found = report()
    assert found is not None and found["endedReason"] == "assistant-ended-call"
    _check_webhook_headers(export["server"], found)

    # The model ran as the export says: its prompt, sampling and function tools.
    prompt = export["model"]["messages"][0]["content"]
    asked = [r for r in list(stack.model.requests) if r["messages"][0]["content"] == prompt]
    assert asked, "the model never saw the export's system prompt"
    for request in asked:
        assert request["model"] == export["model"]["model"]
        assert request["temperature"] == export["model"]["temperature"]
        assert request["max_tokens"] == export["model"]["maxTokens"]
        offered = {t["function"]["name"]: t["function"] for t in request["tools"]}
        for tool in _tools(export):
            if tool["type"] == "function":
                f = tool["function"]
                assert offered[f["name"]]["description"] == f["description"]
                assert offered[f["name"]]["parameters"] == f["parameters"]


def _hint(path: Path) -> str | None:
    """The ``role: system`` ``request-complete`` line of the export's ``lookup`` tool."""
    tool = _function(json.loads(path.read_text()), "lookup")
    line = _line(tool, "request-complete") if tool else None
    return line["content"] if line and line.get("role") == "system" else None


HINTED = [p for p in EXPORTS if _hint(p)]


@pytest.mark.parametrize("path", HINTED, ids=[p.stem for p in HINTED])
async def test_a_system_role_tool_line_is_a_hint_for_the_model_not_said(
    stack: Stack, path: Path
) -> None:
    """Vapi's ``ToolMessageComplete``: with ``role: system`` the content goes to the model
    as a system message after the tool's result, and the model's answer is spoken; the
    content itself is never said to the caller."""
    export = stack.export(path)
    hint = _hint(path)
    async with stack.admin() as http:
        assistant = _answer(stack, await http.post("/assistant", json=export), 201)
        call = _answer(stack, await http.post("/calls", json={"assistantId": assistant["id"]}), 201)
    ask = "Could you lookup a table for two at eight?"
    async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
        s = Session(ws)
        await _opening(s, export)
        await _sync_lookup(stack, s, call["id"], _function(export, "lookup") or {}, ask)
        await s.send({"type": "end-call"})
        await s.until(lambda e: e.get("type") == "status-update" and e["status"] == "ended")
    assert hint not in s.said(), f"the system hint was said to the caller: {s.said()}"
    after = [
        r
        for r in list(stack.model.requests)
        if any(m["role"] == "user" and m.get("content") == ask for m in r["messages"])
        and r["messages"][-1]["role"] != "user"
    ]
    assert any(
        m["role"] == "system" and hint in str(m.get("content"))
        for r in after
        for m in r["messages"]
    ), "the model never got the hint"
