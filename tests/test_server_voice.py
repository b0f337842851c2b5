"""A web call with real audio through the real server process: the caller's synthesized
speech streams in over the WebSocket in real time, Whisper transcribes it, the assistant
answers in paced PCM16 frames, and an async result is announced aloud later."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from backchannel import Client
from backchannel.voice.audio import resample
from backchannel.voice.tts import PiperTTS, spoken

from .fake_openai import serve as serve_model
from .peers import order_tool, rule_model, server_process
from .peers import stack as server_stack

pytestmark = pytest.mark.anyio


async def test_a_web_call_with_audio_both_ways(tmp_path: Path) -> None:
    piper = PiperTTS()
    caller = resample(await spoken(piper, "Where is my order?"), piper.sample_rate, 16_000)
    audio = np.concatenate([np.zeros(8_000, np.int16), caller, np.zeros(24_000, np.int16)])
    with server_stack(tmp_path) as (server, tools, tools_url):
        tools.modes["check_order"] = "ack"
        assistant = {
            "model": {
                "model": "rule-model",
                "tools": [order_tool(tools_url)],
            }
        }
        async with Client(server.url, api_key=server.api_key) as admin:
            call = await admin.create_call(assistant=assistant, type="web")
        url = f"{call['clientUrl']}?token={call['clientToken']}&sampleRate=16000"
        frames: list[tuple[float, bytes]] = []
        events: list[dict[str, Any]] = []
        async with connect(url, max_size=None) as ws:

            async def listen() -> None:
                async for message in ws:
                    if isinstance(message, bytes):
                        frames.append((time.monotonic(), message))
                    else:
                        events.append(json.loads(message))

            listener = asyncio.ensure_future(listen())
            start = time.monotonic()
            for k, i in enumerate(range(0, audio.size, 320)):
                await ws.send(audio[i : i + 320].tobytes())
                await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - time.monotonic()))

            async def wait_until(check: Any, within: float = 20.0) -> None:
                for _ in range(int(within / 0.05)):
                    if check():
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(
                    f"not in time; events: {[e.get('type') for e in events][-15:]}"
                )

            def said(role: str, text: str) -> bool:
                return any(
                    e.get("type") == "transcript" and e["role"] == role and text in e["transcript"]
                    for e in events
                )

            await wait_until(lambda: said("user", "order"))
            await wait_until(lambda: said("assistant", "I will tell you when it is ready."))
            await wait_until(lambda: len(frames) >= 50)
            assert {len(f) for _, f in frames} == {640}, "20 ms PCM16 frames at 16 kHz"
            order = next(e for e in events if e.get("type") == "tool-calls")
            tcid = order["toolCallList"][0]["id"]
            before = len(frames)
            async with Client(server.url, token=call["token"]) as backend:
                await backend.submit_result(call["id"], tcid, {"status": "shipped"})
            await wait_until(lambda: said("assistant", "Update:"))
            await wait_until(lambda: len(frames) > before + 50)
            played = [t for t, _ in frames[before:]]
            span = played[-1] - played[0]
            assert span >= (len(played) - 1) * 0.02 * 0.8, "paced in real time, not a burst"
            loud = max(int(np.abs(np.frombuffer(f, dtype="<i2")).max()) for _, f in frames[before:])
            assert loud > 1000, "the announcement is audible speech"
            listener.cancel()


async def test_a_sample_rate_the_server_cannot_take_is_refused_not_guessed(tmp_path: Path) -> None:
    with (
        serve_model(rule_model) as (_model, model_url),
        server_process(tmp_path, model_url) as server,
    ):
        async with Client(server.url, api_key=server.api_key) as admin:
            call = await admin.create_call(assistant={"model": {"model": "rule-model"}}, type="web")
        url = f"{call['clientUrl']}?token={call['clientToken']}&sampleRate=96000"
        async with connect(url) as ws:
            received = [json.loads(m) async for m in ws if isinstance(m, str)]
        errors = [m["error"] for m in received if m.get("type") == "error"]
        assert [e["code"] for e in errors] == ["invalid_sample_rate"]
        assert "96000" in errors[0]["message"]
