"""Real peers for end-to-end tests: a backchannel server process, a tool server, a model.

The tool server is written the way Vapi's docs show a tool server: it reads
``message.toolCallList`` and answers ``{"results": [...]}``. It checks every request's
Standard Webhooks signature with :func:`backchannel.verify_webhook` and records events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from backchannel import parse_tool_calls, results, verify_webhook

from .fake_openai import chunk
from .fake_openai import serve as serve_model

POSTGRES_URL = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("BACKCHANNEL_TEST_REDIS_URL")
needs_postgres_and_redis = pytest.mark.skipif(
    not (POSTGRES_URL and REDIS_URL),
    reason="BACKCHANNEL_TEST_POSTGRES_URL and BACKCHANNEL_TEST_REDIS_URL are not set",
)
#: What a server process runs on: the embedded defaults, or shared PostgreSQL and Redis.
BACKENDS = ["embedded", pytest.param("postgres+redis", marks=needs_postgres_and_redis)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ToolServer:
    secret: str = ""
    #: per tool name: "sync" | "ack" | "slow" | "garbage" | "object"
    modes: dict[str, str] = field(default_factory=dict)
    slow_seconds: float = 3.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        tools = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    payload = verify_webhook(tools.secret, raw, dict(self.headers))
                except Exception:
                    with tools.lock:
                        tools.bad_signatures += 1
                    self._send(401, b'{"error": "bad signature"}')
                    return
                if self.path == "/events":
                    with tools.lock:
                        tools.events.append({"headers": dict(self.headers), **payload["message"]})
                    self._send(200, b"{}")
                    return
                answers = []
                for call in parse_tool_calls(payload):
                    with tools.lock:
                        tools.calls.append(
                            {"headers": dict(self.headers), "call": call, "payload": payload}
                        )
                    mode = tools.modes.get(call.name, "sync")
                    if mode == "ack":
                        continue
                    if mode == "garbage":
                        self._send(200, b"<html>oops</html>")
                        return
                    if mode == "slow":
                        time.sleep(tools.slow_seconds)
                    answer = {
                        "toolCallId": call.id,
                        "result": {"tool": call.name, **call.arguments},
                    }
                    if mode == "object":
                        self._send(200, json.dumps({"results": answer}).encode())
                        return
                    answers.append(answer)
                self._send(200, json.dumps(results(*answers)).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@contextmanager
def tool_server() -> Iterator[tuple[ToolServer, str]]:
    tools = ToolServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), tools.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tools, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def order_tool(tools_url: str) -> dict[str, Any]:
    """The async ``check_order`` server tool the end-to-end tests give their assistants."""
    return {
        "type": "function",
        "async": True,
        "function": {"name": "check_order", "parameters": {"type": "object"}},
        "server": {"url": f"{tools_url}/tools"},
    }


_ids = itertools.count(1)


def _tool_call(name: str, arguments: dict[str, Any], count: int = 1) -> list[dict[str, Any]]:
    """``count`` calls of one tool in a single model step."""
    calls = [
        {
            "index": i,
            "id": f"call_{next(_ids)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        for i in range(count)
    ]
    return [*(chunk({"tool_calls": [c]}) for c in calls), chunk({}, finish="tool_calls")]


def _text(text: str) -> list[dict[str, Any]]:
    return [chunk({"role": "assistant", "content": text}), chunk({}, finish="stop")]


def rule_model(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A model with fixed rules, so end-to-end runs are exact."""
    messages = body["messages"]
    # Lines the assistant said while tools ran follow the tool messages; look past them.
    last = next(m for m in reversed(messages) if m["role"] != "assistant")
    content = str(last.get("content") or "")
    if last["role"] == "user":
        lowered = content.lower()
        if "transfer" in lowered:
            return _tool_call("transferCall", {"destination": "+15550002222"})
        if "bye" in lowered:
            return _tool_call("endCall", {})
        if "order" in lowered:
            return [
                chunk({"role": "assistant", "content": "Let me check your order. "}),
                *_tool_call("check_order", {"id": "42"}),
            ]
        if lowered.startswith("batch "):
            return _tool_call("check_order", {"id": "batch"}, int(lowered.split()[1]))
        if "refund" in lowered:
            return _tool_call("check_refund", {"id": "7"})
        if "lookup" in lowered:
            return _tool_call("lookup", {"q": "hours"})
        if "style" in lowered:
            return _tool_call("get_style", {})
        if "slow" in lowered:
            return _tool_call("slow_lookup", {"q": "slow"})
        if "broken" in lowered:
            return _tool_call("broken", {})
        return _text("Okay.")
    if last["role"] == "tool":
        if "runs in the background" in content:
            return _text("I will tell you when it is ready.")
        return _text(f"The tool said: {content}")
    if last["role"] == "system" and "background tool calls" in content:
        notes = [
            str(m["content"])
            for m in messages
            if m["role"] == "system" and "Background tool result" in str(m.get("content"))
        ]
        return _text("Update: " + notes[-1].split(": ", 1)[1] if notes else "Update.")
    return _text("Okay.")


@dataclass
class ServerProcess:
    url: str
    api_key: str
    webhook_secret: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kw)


async def _admin(sql: str) -> None:
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database for the block (dropped after), at its newest
    schema through ``backchannel db upgrade``. Call outside a running event loop."""
    assert POSTGRES_URL is not None
    name = f"bc_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "db", "upgrade", "--db", url],
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def backend(kind: str) -> Iterator[dict[str, str]]:
    """The environment that puts a server process on ``kind`` (one of ``BACKENDS``)."""
    if kind == "embedded":
        yield {}
        return
    assert REDIS_URL is not None
    with fresh_postgres() as url:
        yield {
            "BACKCHANNEL_DATABASE_URL": url,
            "BACKCHANNEL_REDIS_URL": REDIS_URL,
            "BACKCHANNEL_HEARTBEAT_SECONDS": "0.5",
            "BACKCHANNEL_HEARTBEAT_TIMEOUT_SECONDS": "3",
        }


@contextmanager
def server_process(
    tmp: Path,
    llm_url: str,
    *,
    db_url: str | None = None,
    env: dict[str, str] | None = None,
    name: str = "server",
) -> Iterator[ServerProcess]:
    """``backchannel serve`` on a free port; processes sharing ``tmp`` share secrets."""
    port = free_port()
    env = {
        **os.environ,
        "BACKCHANNEL_SECRETS_FILE": str(tmp / "secrets.json"),
        "BACKCHANNEL_DATABASE_URL": db_url or f"sqlite+aiosqlite:///{tmp}/server.db",
        "BACKCHANNEL_ALLOW_PRIVATE_WEBHOOKS": "true",
        "BACKCHANNEL_LLM_BASE_URL": llm_url,
        "BACKCHANNEL_TOOL_REPLY_LIMIT_SECONDS": "10",
        "BACKCHANNEL_PORT": str(port),
        **(env or {}),
    }
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backchannel.cli", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        secrets = json.loads((tmp / "secrets.json").read_text())
        yield ServerProcess(url, secrets["apiKey"], secrets["webhookSecret"], proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def stack(
    tmp: Path, *, env: dict[str, str] | None = None
) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    """A server process on the rule model, with a tool server that checks its
    signatures: ``(server, tools, tools_url)``."""
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (_model, model_url),
        server_process(tmp, model_url, env=env) as server,
    ):
        tools.secret = server.webhook_secret
        yield server, tools, tools_url


async def browser_call(
    server: ServerProcess,
    model: dict[str, Any],
    pcm: bytes,
    *,
    rate: int,
    voice: dict[str, Any] | None = None,
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """A web call to the server process, as a browser makes it: ``pcm`` sent in 20 ms
    frames at ``rate``, until the model's long answer ("Our store opens…") is heard and
    a second of its audio has come; the frames and events the browser got."""
    from websockets.asyncio.client import connect

    from backchannel import Client

    assistant = {"model": model, **({"voice": voice} if voice else {})}
    async with Client(server.url, api_key=server.api_key) as admin:
        call = await admin.create_call(assistant=assistant, type="web")
    url = f"{call['clientUrl']}?token={call['clientToken']}&sampleRate={rate}"
    frames: list[bytes] = []
    events: list[dict[str, Any]] = []
    async with connect(url, max_size=None) as ws:
        answered = asyncio.Event()

        async def listen() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    frames.append(message)
                else:
                    events.append(json.loads(message))
                if len(frames) >= 50 and any(
                    e.get("type") == "transcript"
                    and e["role"] == "assistant"
                    and e["transcript"].startswith("Our store opens")
                    for e in events
                ):
                    answered.set()

        async with asyncio.TaskGroup() as group:
            listener = group.create_task(listen())
            step = rate // 50 * 2
            for start in range(0, len(pcm), step):
                await ws.send(pcm[start : start + step])
                await asyncio.sleep(0.02)
            async with asyncio.timeout(90):
                await answered.wait()
            listener.cancel()
    return frames, events
