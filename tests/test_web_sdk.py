"""The browser SDK in real headless Chromium against the real server process.

The page is an app's own page on another origin: it imports the SDK from the server
(``/sdk/backchannel.js``), its backend (the test) creates the call and hands it the
call's client URL and token, and it uses nothing but the SDK: the fake microphone
(a WAV of Piper saying "What style am I using?") goes to the call, a client tool
answers 3 s later with the tool's result, and the assistant says it once. A
screenshot is saved in test-artifacts/. The committed module is the one the
TypeScript builds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backchannel import Client

from .peers import stack as server_stack
from .test_browser import ARTIFACTS, FLAGS, caller_wav

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "clients" / "web"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed"),
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>An app's page</title></head>
<body>
<h1>Style studio</h1>
<div id="log"></div>
<script type="module">
import Backchannel from "%(server)s/sdk/backchannel.js";

const log = (text) => {
  const p = document.createElement("p");
  p.textContent = text;
  document.getElementById("log").appendChild(p);
};
window.seen = { events: [], starts: 0, ends: 0, speech: 0, levels: 0, errors: [] };
const call = new Backchannel();
call.clientTool("get_style", async (args, tool) => {
  log(`get_style called (${tool.toolCallId})`);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  log("get_style answered");
  return { template: "bold", fontSize: 60 };
});
call.on("call-start", () => { window.seen.starts++; log("call-start"); });
call.on("call-end", () => { window.seen.ends++; log("call-end"); });
call.on("speech-start", () => window.seen.speech++);
call.on("volume-level", (level) => { if (level > 0) window.seen.levels++; });
call.on("error", (e) => window.seen.errors.push(e));
call.on("message", (m) => {
  window.seen.events.push(m);
  if (m.type === "transcript" && m.transcriptType === "final") log(`${m.role}: ${m.transcript}`);
});
window.call = call;
await call.start(%(handle)s);
</script>
</body></html>
"""


def serve_page(html: str) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    page = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    return page, f"http://127.0.0.1:{page.server_address[1]}/"


async def test_a_page_using_only_the_sdk_answers_a_client_tool_later(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    wav = await caller_wav(tmp_path / "caller.wav", "What style am I using?", after=10.0)
    assistant = {
        "name": "Style studio",
        "firstMessage": "Hi, style studio.",
        "model": {
            "model": "rule-model",
            "tools": [
                {
                    "type": "function",
                    "async": True,
                    "function": {"name": "get_style", "parameters": {"type": "object"}},
                    "backchannel": {"runsOn": "client"},
                }
            ],
        },
    }
    with server_stack(tmp_path) as (server, _tools, _tools_url):
        async with Client(server.url, api_key=server.api_key) as backend:
            call = await backend.create_call(assistant=assistant, type="web")
        handle = {"clientUrl": call["clientUrl"], "clientToken": call["clientToken"]}
        page_server, page_url = serve_page(
            PAGE % {"server": server.url, "handle": json.dumps(handle)}
        )
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=shutil.which("chromium"),
                    args=[*FLAGS, f"--use-file-for-fake-audio-capture={wav}"],
                )
                page = await browser.new_page()
                await page.goto(page_url)
                await page.wait_for_function(
                    "window.seen && window.seen.starts === 1", timeout=30_000
                )
                # The tool is called, answered 3 s later by the handler, and said once.
                await page.wait_for_function(
                    "window.seen.events.some((m) => m.type === 'tool-call-result-ack')",
                    timeout=90_000,
                )
                await page.wait_for_function(
                    "window.seen.events.some((m) => m.type === 'transcript'"
                    " && m.role === 'assistant' && m.transcript.includes('bold'))",
                    timeout=60_000,
                )
                await page.wait_for_timeout(2000)  # nothing said twice meanwhile
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "web-sdk-call.png"), full_page=True)
                seen = await page.evaluate("window.seen")
                await page.evaluate("window.call.stop()")
                await page.wait_for_function("window.seen.ends === 1", timeout=30_000)
                await browser.close()
        finally:
            page_server.shutdown()
            page_server.server_close()
    events = seen["events"]
    calls = [t for e in events if e["type"] == "tool-calls" for t in e["toolCallList"]]
    assert [c["name"] for c in calls] == ["get_style"]
    [ack] = [e for e in events if e["type"] == "tool-call-result-ack"]
    assert ack["toolCallId"] == calls[0]["id"] and ack["outcome"] == "accepted"
    results = [e["toolCallResult"] for e in events if e["type"] == "tool-calls-result"]
    assert results[0]["result"] == {"template": "bold", "fontSize": 60}
    # Said once: the placeholder line, then the result, once.
    said = [
        e["transcript"] for e in events if e["type"] == "transcript" and e["role"] == "assistant"
    ]
    spoken_text = " ".join(said)
    assert spoken_text.count("Update:") == 1, said
    assert spoken_text.count("bold") == 1, said  # the result, said once
    assert seen["speech"] >= 2 and seen["levels"] > 0
    assert seen["errors"] == []


def test_the_served_module_is_the_one_the_typescript_builds(tmp_path: Path) -> None:
    """``clients/web`` builds (esbuild) into the module ``backchannel serve`` serves."""
    if not (WEB / "node_modules" / ".bin" / "esbuild").exists():
        pytest.skip("clients/web/node_modules is missing: npm ci --prefix clients/web")
    out = tmp_path / "backchannel.js"
    esbuild = WEB / "node_modules" / ".bin" / "esbuild"
    subprocess.run(
        [
            str(esbuild),
            "src/index.ts",
            "--bundle",
            "--format=esm",
            "--target=es2020",
            f"--outfile={out}",
        ],
        cwd=WEB,
        check=True,
        capture_output=True,
    )
    served = ROOT / "src" / "backchannel" / "server" / "static" / "backchannel.js"
    assert out.read_text() == served.read_text(), "run `npm run build --prefix clients/web`"
