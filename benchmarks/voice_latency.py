"""One voice call on the offline models: where the time goes from the end of the caller's
speech to the assistant's first audio, and from a result's arrival to its announcement.

    .venv/bin/python benchmarks/voice_latency.py [--rounds 10] [--llm scripted|local]

Real Silero VAD, Whisper tiny.en and Piper. With ``--llm scripted`` the model answers at
once, so the LLM share is the orchestration around it; with ``--llm local`` it is the
local Qwen2.5 1.5B through llama.cpp (``backchannel model fetch``), and the LLM share is
its time to the first whole sentence. The caller's speech (Piper) is fed in real time,
20 ms a frame.
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
from backchannel.llm.local import LlamaCppLLM, resolve_model
from backchannel.llm.scripted import call, say
from backchannel.voice.audio import resample
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import VoiceSession
from backchannel.voice.stt import WhisperSTT
from backchannel.voice.tts import PiperTTS, spoken
from backchannel.voice.vad import SileroVAD, TurnDetector


class TimedLLM:
    """Wraps the scripted model to note when each reply's first chunk left it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.first_chunk: list[float] = []

    one_ask_per_response = False

    async def prepare(self, request: LLMRequest) -> None:
        return None

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
    parser.add_argument("--llm", choices=["scripted", "local"], default="scripted")
    args = parser.parse_args()
    piper, whisper = PiperTTS(), WhisperSTT()
    question = resample(
        await spoken(piper, "What are your opening hours?"), piper.sample_rate, 16_000
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

    model: Any = ScriptedLLM(respond=respond)
    if args.llm == "local":
        model = LlamaCppLLM(resolve_model("qwen2.5-1.5b"))
    llm = TimedLLM(model)
    engine = Engine(Ledger(MemoryStore()), llm=llm)
    await engine.open()
    frames: list[float] = []

    async def send(_frame: bytes) -> None:
        frames.append(time.time())

    events = EventLog()
    output = AudioOutput(piper, send, rate=16_000)
    queued: list[float] = []  # when each sentence reached the speaker
    speak = output.speak

    def timed_speak(utterance: Any) -> None:
        queued.append(time.time())
        speak(utterance)

    output.speak = timed_speak  # type: ignore[method-assign]
    config = AssistantConfig.from_json(
        {
            "model": {
                "model": "scripted",
                "messages": [{"role": "system", "content": "You are a shop's voice assistant."}],
                "tools": [
                    {
                        "type": "function",
                        "async": True,
                        "function": {
                            "name": "check_order",
                            "description": "Look up where the caller's order is.",
                            "parameters": {
                                "type": "object",
                                "properties": {"order_id": {"type": "string"}},
                            },
                        },
                    }
                ],
            }
        }
    )
    rows: list[dict[str, float]] = []
    announce: list[float] = []
    missed = 0
    unanswered = 0
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
            n_queued = len(queued)
            end = await feed(question, 2.5)

            def answered(
                since: tuple[int, int, int, int] = (n_events, n_llm, n_queued, n_frames),
            ) -> bool:
                """This turn's transcript, model output, sentence and audio all exist
                (audio of an earlier answer still playing does not count)."""
                events_at, llm_at, queued_at, frames_at = since
                return (
                    any(
                        e.type == "transcript" and e.data["role"] == "user"
                        for e in events.events[events_at:]
                    )
                    and len(llm.first_chunk) > llm_at
                    and len(queued) > queued_at
                    and len(frames) > frames_at
                    and frames[-1] >= queued[queued_at]
                )

            for _ in range(600):  # a real model may still be on its first sentence
                if answered():
                    break
                await asyncio.sleep(0.05)
            if not answered():
                unanswered += 1  # the turn was not heard, or the model said nothing
                await asyncio.sleep(3.0)
                continue
            new = events.events[n_events:]
            stopped = next(e.at for e in new if e.data == {"role": "user", "status": "stopped"})
            heard = next(e.at for e in new if e.type == "transcript" and e.data["role"] == "user")
            first_chunk = llm.first_chunk[n_llm]
            sentence = queued[n_queued]
            first_frame = next(f for f in frames[n_frames:] if f >= sentence)
            rows.append(
                {
                    "total": first_frame - end,
                    "vad": stopped - end,
                    "stt": heard - stopped,
                    "llm_first": first_chunk - heard,
                    "llm": sentence - heard,
                    "tts": first_frame - sentence,
                }
            )
            await asyncio.sleep(6.0 if args.llm == "local" else 3.0)  # let the answer finish
    # Result arrival -> first audio of its announcement; a fresh call each round, as the
    # order question comes early in a real call.
    for _ in range(5):
        output = AudioOutput(piper, send, rate=16_000)
        async with engine.call(config, output=output, events=events) as live:
            n_events = len(events.events)
            live.send_text("Where is my order 4417?")
            for _ in range(2000):
                if any(e.type == "tool-calls" for e in events.events[n_events:]):
                    break
                await asyncio.sleep(0.01)
            called = [e for e in events.events[n_events:] if e.type == "tool-calls"]
            if not called:
                missed += 1  # the model answered in words instead
                continue
            tcid = called[0].data["toolCallList"][0]["id"]
            await asyncio.sleep(6.0 if args.llm == "local" else 0.5)  # its placeholder reply
            n_frames = len(frames)
            t0 = time.time()
            result = {"status": "out for delivery"}
            await engine.submit_result(
                live.call_id, ToolResult(tcid, result=result), ResultSource.API
            )
            for _ in range(4000):
                if len(frames) > n_frames:
                    break
                await asyncio.sleep(0.005)
            announce.append(frames[n_frames] - t0)
            await asyncio.sleep(6.0 if args.llm == "local" else 3.0)
    await engine.close()

    def med(key: str) -> str:
        """Median and p90 over the rounds, in ms."""
        values = sorted(r[key] * 1000 for r in rows)
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        return f"{statistics.median(values):.0f} ms (p90 {p90:.0f})"

    if not rows:
        print(f"no round was answered ({unanswered} of {args.rounds})")
        return
    print(
        f"end of caller speech -> first assistant audio frame ({len(rows)} rounds; "
        f"{unanswered} not answered): median (p90)"
    )
    print(f"  total {med('total')}")
    print(f"  VAD (0.5 s of silence to close the turn, by design) {med('vad')}")
    print(f"  STT (Whisper tiny.en, one utterance) {med('stt')}")
    what = "scripted, answers at once" if args.llm == "scripted" else "Qwen2.5 1.5B, llama.cpp"
    print(f"  LLM ({what}): transcript -> first token {med('llm_first')}")
    print(f"  LLM: transcript -> first whole sentence {med('llm')}")
    print(f"  TTS (Piper: first sentence synthesized, resampled, sent) {med('tts')}")
    print(
        "  (per round, VAD + STT + LLM + TTS is the total: each stage ends where the next begins)"
    )
    print(
        f"result arrival -> first audio frame of its announcement ({what}, Piper, 5 rounds): "
        f"p50 {statistics.median(announce or [0]) * 1000:.0f} ms, "
        f"max {max(announce or [0]) * 1000:.0f} ms"
        f" ({missed} of 5 order questions were answered without the tool)"
    )


if __name__ == "__main__":
    asyncio.run(main())
