"""Fuzzing the client WebSocket protocol: any frame a client can send — any JSON shape
and size, nesting thousands deep, text that is not JSON, binary frames on text and web
calls — gets at most an ``error`` event; the call goes on and answers the next message,
and the server logs no traceback.

A real server process; hypothesis draws the frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from backchannel import Client

from .e2e_calls import vapi_assistant
from .fake_openai import serve as serve_model
from .peers import ServerProcess, rule_model, server_process, tool_server

KNOWN = ["user-message", "tool-call-result", "add-message", "say", "control", "nonsense"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
#: Messages of the protocol's own types with any fields: past the type dispatch, into
#: each message's validation and handling. ``end-call`` is left out: it is obeyed.
typed = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(KNOWN),
    st.dictionaries(
        st.sampled_from(
            ["content", "message", "toolCallId", "result", "error", "control", "role", "name"]
        ),
        json_values,
        max_size=5,
    ),
)
frames = st.one_of(
    typed.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=300),
    st.integers(min_value=1, max_value=20_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=20_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.binary(max_size=4000),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with (
        tool_server() as (_tools, _url),
        serve_model(rule_model) as (_model, model_url),
        server_process(tmp, model_url) as running,
    ):
        yield running


def _open_call(server: ServerProcess, kind: str) -> str:
    """A new call's client URL, token included."""
    import asyncio

    async def create() -> dict[str, Any]:
        async with Client(server.url, api_key=server.api_key) as admin:
            assistant = vapi_assistant("http://127.0.0.1:9")
            assistant.pop("server")
            call: dict[str, Any] = await admin.create_call(assistant=assistant, type=kind)
            return call

    call = asyncio.run(create())
    return f"{call['clientUrl']}?token={call['clientToken']}"


def _drain(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    events = []
    try:
        while True:
            frame = ws.recv(timeout=seconds)
            if isinstance(frame, str):
                events.append(json.loads(frame))
    except TimeoutError:
        return events


def _answers(ws: ClientConnection, text: str, within: float = 30.0) -> bool:
    """Whether the call still answers a user message (the rule model says "Okay.")."""
    ws.send(json.dumps({"type": "user-message", "content": text}))
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if isinstance(frame, str):
            event = json.loads(frame)
            said = event.get("type") == "transcript" and event.get("role") == "assistant"
            if said and "Okay." in event.get("transcript", ""):
                return True
    return False


def test_any_frame_on_a_text_call_gets_at_most_an_error_and_the_call_goes_on(
    server: ServerProcess,
) -> None:
    sent = 0
    with connect(_open_call(server, "text"), max_size=None) as ws:

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
        )
        @given(frame=frames)
        def send(frame: str | bytes) -> None:
            nonlocal sent
            ws.send(frame)
            sent += 1
            for event in _drain(ws, 0.02):
                if event.get("type") == "status-update":
                    assert event.get("status") != "ended", event

        try:
            send()
            ws.send("x" * 3_000_000)  # a 3 MB frame
        except ConnectionClosed as exc:
            raise AssertionError(f"the server closed the socket after {sent} frames") from exc
        assert _answers(ws, "Hello?"), "the call stopped answering"
    log = server.log.read_text()
    assert "Traceback" not in log, log[-4000:]


def test_any_binary_frame_on_a_web_call_is_taken_as_audio_or_refused(
    server: ServerProcess,
) -> None:
    with connect(_open_call(server, "web"), max_size=None) as ws:

        @settings(max_examples=40, deadline=None, database=None)
        @given(frame=st.binary(max_size=20_000))
        def send(frame: bytes) -> None:
            ws.send(frame)

        send()
        _drain(ws, 0.5)
        assert _answers(ws, "Hello again?", within=60), "the web call stopped answering"
    log = server.log.read_text()
    assert "Traceback" not in log, log[-4000:]


def test_the_fuzzed_server_wrote_no_traceback(server: ServerProcess, tmp_path: Path) -> None:
    assert "Traceback" not in server.log.read_text()
