"""Vapi's official TypeScript server SDK (``@vapi-ai/server-sdk``) drives a real backchannel
server with only the base URL and the key changed, through the same flow as
``test_vapi_sdk.py``: ``tests/vapi_ts/flow.mjs`` creates a tool and an assistant that uses
it by ``toolIds``, creates a call with ``assistantOverrides.variableValues``, runs it over
backchannel's client socket (the model calls the async tool; its result is posted later),
ends it and reads it back. Needs Node.js and ``npm ci --prefix tests/vapi_ts``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .peers import ServerProcess, ToolServer
from .peers import stack as server_stack

FLOW_DIR = Path(__file__).parent / "vapi_ts"
NODE = shutil.which("node")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServerProcess, ToolServer, str]]:
    if NODE is None:
        pytest.skip("node is not on PATH")
    if not (FLOW_DIR / "node_modules").is_dir():
        pytest.skip("tests/vapi_ts/node_modules is missing: npm ci --prefix tests/vapi_ts")
    with server_stack(tmp_path) as (server, tools, tools_url):
        tools.modes["check_order"] = "ack"
        yield server, tools, tools_url


def test_vapis_typescript_sdk_runs_a_whole_call(
    stack: tuple[ServerProcess, ToolServer, str],
) -> None:
    assert NODE is not None
    server, tools, tools_url = stack
    env = {**os.environ, "BASE_URL": server.url, "API_KEY": server.api_key, "TOOLS_URL": tools_url}
    try:
        run = subprocess.run(
            [NODE, "flow.mjs"],
            cwd=FLOW_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"flow.mjs ran over 90 s\n{_output(exc.stdout, exc.stderr, server)}")
    lines = [line for line in run.stdout.splitlines() if line.startswith('{"ok"')]
    report = json.loads(lines[-1]) if run.returncode == 0 and lines else {}
    assert run.returncode == 0 and report.get("ok") is True, _output(run.stdout, run.stderr, server)

    # The tool server saw the call and the end-of-call report, all signed.
    assert any(c["call"].id == report["toolCallId"] for c in tools.calls)
    deadline = time.monotonic() + 15
    while not any(e["type"] == "end-of-call-report" for e in tools.events):
        assert time.monotonic() < deadline, f"no end-of-call-report: {tools.events}"
        time.sleep(0.05)
    assert tools.bad_signatures == 0


def _output(stdout: str | bytes | None, stderr: str | bytes | None, server: ServerProcess) -> str:
    def text(out: str | bytes | None) -> str:
        return out.decode(errors="replace") if isinstance(out, bytes) else out or ""

    return (
        f"node stdout:\n{text(stdout)}\nnode stderr:\n{text(stderr)}\n"
        f"server log:\n{server.log.read_text(errors='replace')}"
    )
