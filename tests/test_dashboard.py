"""The calls dashboard in real headless Chromium, against the real server process,
during and after a spoken call with an async tool: the caller speaks Piper's audio
over the call's WebSocket; the page shows the transcript, each turn's latency bar
(VAD, STT, LLM, TTS), every state of the tool call, and the webhook deliveries.
Screenshots are saved in test-artifacts/."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from backchannel import Client
from backchannel.demo.caller import Caller
from backchannel.voice.tts import PiperTTS

from .e2e_calls import tool_call_id, vapi_assistant
from .peers import stack as server_stack
from .test_browser import ARTIFACTS, FLAGS

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed"),
]


async def test_the_dashboard_follows_a_call_live_and_keeps_it(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    with server_stack(tmp_path) as (server, tools, tools_url):
        tools.modes["check_order"] = "ack"
        async with Client(server.url, api_key=server.api_key) as admin:
            call = await admin.create_call(assistant=vapi_assistant(tools_url), type="web")
        hang_up = asyncio.Event()

        async def conversation(caller: Caller) -> None:
            await caller.reply(after=0.0)  # the greeting
            await caller.say("Where is my order?")
            await caller.until(lambda: caller.seen("tool-calls"), within=60)
            await caller.reply(after=caller.now(), within=60)
            await hang_up.wait()

        caller = Caller(
            f"{call['clientUrl']}?token={call['clientToken']}&sampleRate=16000",
            voice=PiperTTS(),
            timeline=lambda *_line: None,
        )
        talking = asyncio.create_task(caller.run(conversation))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(server.url + "/dashboard")
            await page.fill("#api-key", server.api_key)
            await page.click("#save-key")
            row = f"#calls tr.call[data-id='{call['id']}']"
            await page.wait_for_selector(row, timeout=30_000)
            await page.click(row)
            # Live: the turn's four stages, the tool call under way.
            await page.wait_for_selector("#call-status.status-in-progress", timeout=30_000)
            await page.wait_for_selector(".turn .stage.tts", timeout=90_000)
            for stage in ("vad", "stt", "llm", "tts"):
                assert await page.locator(f".turn[data-turn='1'] .stage.{stage}").count() == 1
            await page.wait_for_selector(".tool li[data-step='called']", timeout=60_000)
            await page.wait_for_function(
                "document.querySelector('#transcript').innerText.includes('my order?')",
                timeout=30_000,
            )
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"), full_page=True)
            # The result arrives: it lands, enters the conversation and is spoken, live.
            order = tool_call_id(
                next(e for e in caller.events if e.get("type") == "tool-calls"), "check_order"
            )
            async with Client(server.url, token=call["token"]) as backend:
                await backend.submit_result(call["id"], order, "shipped")
            for step in ("result", "in-conversation", "spoken"):
                await page.wait_for_selector(f".tool li[data-step='{step}']", timeout=90_000)
            assert await page.inner_text(".tool .state") == "succeeded"
            hang_up.set()
            await asyncio.wait_for(talking, 60)
            # After: the call is kept, with its end-of-call report delivered.
            await page.wait_for_selector("#call-status.status-ended", timeout=30_000)
            await page.wait_for_function(
                "[...document.querySelectorAll('#deliveries tr.delivery.delivered')]"
                ".some((r) => r.innerText.includes('end-of-call-report'))",
                timeout=60_000,
            )
            await page.screenshot(path=str(ARTIFACTS / "dashboard-ended.png"), full_page=True)
            transcript = await page.inner_text("#transcript")
            steps = await page.locator(".tool li").evaluate_all(
                "(items) => items.map((li) => li.dataset.step)"
            )
            await browser.close()
    # Said once: as an update, or in the reply itself when it came before that was heard.
    assert transcript.count("shipped") == 1, transcript
    assert steps == ["called", "started", "result", "in-conversation", "spoken"]
    said = [e for e in caller.events if e.get("type") == "turn-latency"]
    assert said == []  # not in the client's events unless asked for
