"""The call page in real headless Chromium, the microphone faked from a WAV file.

The WAV says "Where is my order?" (Piper). The page starts a web call, streams the
fake microphone to the real server process, shows the transcript and the tool-call
timeline, and plays the assistant's audio. A screenshot is saved in test-artifacts/.
"""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from backchannel import Client
from backchannel.voice.audio import resample
from backchannel.voice.tts import PiperTTS, spoken

from .peers import stack as server_stack

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed"),
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


async def caller_wav(path: Path, text: str = "Where is my order?", after: float = 4.0) -> Path:
    """A fake microphone's WAV: a second of silence, Piper saying ``text``, then
    ``after`` seconds of silence (Chromium plays it in a loop)."""
    piper = PiperTTS()
    speech = resample(await spoken(piper, text), piper.sample_rate, 16_000)
    silence = np.zeros(int(16_000 * after), np.int16)
    audio = np.concatenate([np.zeros(16_000, np.int16), speech, silence])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(audio.tobytes())
    return path


async def test_talk_to_an_assistant_from_the_browser(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    wav = await caller_wav(tmp_path / "caller.wav")
    with server_stack(tmp_path) as (server, tools, tools_url):
        tools.modes["check_order"] = "ack"
        async with Client(server.url, api_key=server.api_key) as admin:
            await admin.create_assistant(
                {
                    "name": "Order desk",
                    "model": {
                        "model": "rule-model",
                        "tools": [
                            {
                                "type": "function",
                                "async": True,
                                "function": {
                                    "name": "check_order",
                                    "parameters": {"type": "object"},
                                },
                                "server": {"url": f"{tools_url}/tools"},
                            }
                        ],
                    },
                }
            )
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=[*FLAGS, f"--use-file-for-fake-audio-capture={wav}"],
            )
            page = await browser.new_page()
            await page.goto(server.url + "/")
            await page.fill("#apiKey", server.api_key)
            await page.dispatch_event("#apiKey", "change")
            await page.wait_for_selector(
                "#assistant option:has-text('Order desk')", state="attached"
            )
            await page.click("#start")
            await page.wait_for_function(
                "document.querySelector('#transcript').innerText.toLowerCase().includes('order')",
                timeout=30_000,
            )
            await page.wait_for_selector("#transcript .assistant", timeout=30_000)
            await page.wait_for_selector("#tools div", timeout=30_000)
            await page.wait_for_function("window.call.heard", timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "browser-call.png"), full_page=True)
            transcript = await page.inner_text("#transcript")
            await page.click("#end")
            await browser.close()
    assert "You:" in transcript and "order" in transcript.lower()
    assert "Assistant:" in transcript
