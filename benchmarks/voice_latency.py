"""One voice call on the offline models: where the time goes from the end of the caller's
speech to the assistant's first audio, and from a result's arrival to its announcement.

    .venv/bin/python benchmarks/voice_latency.py [--rounds 10]

Real Silero VAD, Whisper tiny.en and Piper; the LLM is scripted and answers at once, so
its share is the orchestration around it (a real model adds its time to first token).
The caller's speech (Piper) is fed in real time, 20 ms a frame.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from backchannel import (
    AssistantConfig,
    Engine,
    EventLog,
    Ledger,
    LLMRequest,
    MemoryStore,
    ResultSource,
    ScriptedLLM,
    ToolResult,
)
from backchannel.llm.base import LLMChunk
from backchannel.llm.scripted import call, say
from backchannel.voice.audio import resample
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import VoiceSession
from backchannel.voice.stt import WhisperSTT
from backchannel.voice.tts import PiperTTS
from backchannel.voice.vad import SileroVAD, TurnDetector


class TimedLLM:
    """Wraps the scripted model to note when each reply's first chunk left it."""

    def __init__(self, inner: ScriptedLLM) -> None:
        self.inner = inner
        self.first_chunk: list[float] = []

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        first = True
        async for chunk in self.inner.stream(request):
            if first:
                self.first_chunk.append(time.time())
                first = False
            yield chunk


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    piper, whisper = PiperTTS(), WhisperSTT()
    question = resample(
        await piper.synthesize("What are your opening hours?"), piper.sample_rate, 16_000
    )
    counter = iter(range(10_000))

    def respond(request: LLMRequest) -> list[LLMChunk]:
        last = request.messages[-1]
        if "background tool calls" in str(last.get("content")):
            return say("Good news, your order is out for delivery.")
        if last["role"] == "tool":
            return []
        if "order" in str(last.get("content")).lower():
            return [call("check_order", id=f"c{next(counter)}")]
        return say("We are open from nine to six, every weekday.")

    llm = TimedLLM(ScriptedLLM(respond=respond))
    engine = Engine(Ledger(MemoryStore()), llm=llm)
    await engine.open()
    frames: list[float] = []

    async def send(_frame: bytes) -> None:
        frames.append(time.time())

    events = EventLog()
    output = AudioOutput(piper, send, rate=16_000)
    config = AssistantConfig.from_json(
        {
            "model": {
                "model": "scripted",
                "tools": [{"type": "function", "async": True, "function": {"name": "check_order"}}],
            }
        }
    )
    rows: list[dict[str, float]] = []
    announce: list[float] = []
    async with engine.call(config, output=output, events=events) as live:
        session = VoiceSession(live, TurnDetector(SileroVAD()), whisper)

        async def feed(audio: Any, seconds_after: float) -> float:
            """Feed in real time; returns the wall time of the last speech sample."""
            padded = np.concatenate([audio, np.zeros(int(seconds_after * 16_000), np.int16)])
            start, end_of_speech = time.monotonic(), 0.0
            for k, i in enumerate(range(0, padded.size, 320)):
                session.feed(padded[i : i + 320].tobytes())
                if i + 320 >= audio.size and not end_of_speech:
                    end_of_speech = time.time()
                await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - time.monotonic()))
            return end_of_speech

        for _ in range(args.rounds):
            n_events, n_frames, n_llm = len(events.events), len(frames), len(llm.first_chunk)
            end = await feed(question, 2.5)
            new = events.events[n_events:]
            stopped = next(e.at for e in new if e.data == {"role": "user", "status": "stopped"})
            heard = next(e.at for e in new if e.type == "transcript" and e.data["role"] == "user")
            first_chunk = llm.first_chunk[n_llm]
            first_frame = frames[n_frames]
            rows.append(
                {
                    "total": first_frame - end,
                    "vad": stopped - end,
                    "stt": heard - stopped,
                    "llm": first_chunk - heard,
                    "tts": first_frame - first_chunk,
                }
            )
            await asyncio.sleep(3.0)  # let the answer finish
        # Result arrival -> first audio of its announcement.
        for _ in range(5):
            n_events = len(events.events)
            live.send_text("Where is my order?")
            for _ in range(200):
                if any(e.type == "tool-calls" for e in events.events[n_events:]):
                    break
                await asyncio.sleep(0.01)
            tcid = next(e for e in events.events[n_events:] if e.type == "tool-calls").data[
                "toolCallList"
            ][0]["id"]
            await asyncio.sleep(0.5)
            n_frames = len(frames)
            t0 = time.time()
            await engine.submit_result(
                live.call_id, ToolResult(tcid, result="out"), ResultSource.API
            )
            for _ in range(500):
                if len(frames) > n_frames:
                    break
                await asyncio.sleep(0.005)
            announce.append(frames[n_frames] - t0)
            await asyncio.sleep(3.0)
    await engine.close()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows) * 1000

    print(f"end of caller speech -> first assistant audio frame ({len(rows)} rounds, medians):")
    print(f"  total {med('total'):.0f} ms")
    print(f"  VAD (0.5 s of silence to close the turn, by design) {med('vad'):.0f} ms")
    print(f"  STT (Whisper tiny.en, one utterance) {med('stt'):.0f} ms")
    print(f"  LLM step (scripted: orchestration to the model's first chunk) {med('llm'):.1f} ms")
    print(f"  TTS (Piper: first sentence synthesized, resampled, sent) {med('tts'):.0f} ms")
    print(
        "result arrival -> first audio frame of its announcement (Piper, 5 rounds): "
        f"p50 {statistics.median(announce) * 1000:.0f} ms, max {max(announce) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
