"""backchannel on the shared benchmark scenario (``shared/bench/README.md``).

The real server (REST, client WebSocket, engine, Silero VAD through onnxruntime) with
the scenario's stand-ins for the models: an STT that answers 100 ms after each turn, an
LLM with 200 ms to first chunk and 50 ms between chunks, a TTS that makes 250 ms of sine
per word (440 Hz, 880 Hz for the async tool's announcement), and ``check_order``, an
async tool whose result comes 2.0 s after it is called.

    .venv/bin/python benchmarks/bench_server.py --port 9000 [--events FILE]

then drive it with the shared load client and ``benchmarks/bench_handshake.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from backchannel import LLMRequest, TextDelta, ToolCallRequest, ToolRegistry
from backchannel.config import ModelConfig
from backchannel.llm.base import LLM, LLMChunk
from backchannel.server.app import create_app
from backchannel.server.settings import Settings
from backchannel.voice.audio import Samples
from backchannel.voice.stack import VoiceStack

NORMAL = ["Your order shipped ", "yesterday and it ", "should arrive at ", "your door tomorrow."]
PREAMBLE = "One moment, checking now."
ANNOUNCEMENT = [
    "Good news, your ",
    "order is now ",
    "out for delivery ",
    "arriving this afternoon.",
]
ANNOUNCED: set[str] = {c.strip() for c in ANNOUNCEMENT}


class ScenarioLLM:
    """The scenario's model: timings and texts as the shared README fixes them."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.runs = 0

    one_ask_per_response = False

    async def prepare(self, request: LLMRequest) -> None:
        return None

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        self.runs += 1
        await asyncio.sleep(0.2)
        messages = list(request.messages)
        if self.scenario == "async_tool" and self.runs == 1:
            yield TextDelta(PREAMBLE)
            yield ToolCallRequest(f"call_{os.getpid()}_{id(self)}", "check_order", {})
            return
        if messages and messages[-1]["role"] == "tool":
            return  # after the placeholder: nothing more to say now
        chunks = ANNOUNCEMENT if self._owes_announcement(messages) else NORMAL
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(0.05)
            yield TextDelta(chunk)

    @staticmethod
    def _owes_announcement(messages: list[Any]) -> bool:
        has_result = any(
            "Background tool result for check_order" in str(m.get("content")) for m in messages
        )
        spoken = any(
            m["role"] == "assistant" and "arriving this afternoon" in str(m.get("content"))
            for m in messages
        )
        return has_result and not spoken


class ScenarioSTT:
    repeatable = False

    async def transcribe(self, audio: AsyncIterable[Samples], *, listening: bool = False) -> str:
        async for _ in audio:  # the turn's audio, to its end
            pass
        await asyncio.sleep(0.1)
        return "what is the status of my order"


class ToneTTS:
    """250 ms of sine per word at 16 kHz, amplitude 1000; 880 Hz for the announcement."""

    sample_rate = 16_000

    async def synthesize(self, text: str) -> AsyncIterator[Samples]:
        words = max(1, len(text.split()))
        hz = 880.0 if text.strip() in ANNOUNCED else 440.0
        t = np.arange(int(words * 0.25 * self.sample_rate)) / self.sample_rate
        yield (np.sin(2 * np.pi * hz * t) * 1000).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--events", default=None, help="JSONL of tool results (CLOCK_MONOTONIC)")
    parser.add_argument("--dir", default=".bench-server")
    args = parser.parse_args()
    work = Path(args.dir)
    work.mkdir(exist_ok=True)
    settings = Settings(
        port=args.port,
        database_url=f"sqlite+aiosqlite:///{work}/bench.db",
        secrets_file=work / "secrets.json",
        api_key=os.environ.get("BENCH_API_KEY", "bench-key"),
        allow_private_webhooks=True,
    )
    with contextlib.ExitStack() as stack:
        events = stack.enter_context(Path(args.events).open("a")) if args.events else None
        serve(settings, args.port, events)


def serve(settings: Settings, port: int, events: Any) -> None:
    tools = ToolRegistry()

    @tools.tool(is_async=True)
    async def check_order() -> dict[str, str]:
        """Check the caller's order."""
        await asyncio.sleep(2.0)
        if events is not None:
            events.write(
                json.dumps({"t": time.monotonic(), "call": "?", "ev": "tool_result"}) + "\n"
            )
            events.flush()
        return {"status": "ORDER_STATUS_OUT_FOR_DELIVERY"}

    def llm_factory(model: ModelConfig) -> LLM:
        return ScenarioLLM(model.model)

    app = create_app(
        settings,
        llm_factory=llm_factory,
        tools=tools,
        voice=VoiceStack(ScenarioSTT(), ToneTTS()),
        speak_chunks=True,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False)


if __name__ == "__main__":
    main()
