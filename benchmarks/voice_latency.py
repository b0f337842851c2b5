"""Voice calls on the offline models: where the time goes from the end of the caller's
speech to the assistant's first audio, and from a result's arrival to its announcement.

    .venv/bin/python benchmarks/voice_latency.py [--calls 4] [--turns 5] [--llm scripted|local]

Real Silero VAD, Smart Turn v3, Whisper tiny.en and Piper; the callers' questions are the
recorded WAVs in ``benchmarks/audio/``, fed in real time, 20 ms a frame, with a silent
gap between turns. ``--calls`` times ``--turns`` turns in all (20 by default). With ``--llm
scripted`` the model answers at once, so the LLM share is the orchestration around it;
with ``--llm local`` it is Qwen2.5 1.5B through llama.cpp (``backchannel model fetch``)
and the first call is the model's cold start (its opening prompt not yet evaluated).

Per turn, the stages follow one another, so they add up to the total:
VAD (end of speech → end of the turn: the pause and the turn model's verdict),
STT (→ the final transcript), LLM (→ the first clause handed to speech),
TTS (→ its first audio frame sent).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
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
from backchannel.voice.audio import Samples, to_samples
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import VoiceSession
from backchannel.voice.stt import WhisperSTT
from backchannel.voice.tts import PiperTTS
from backchannel.voice.turn_model import SmartTurn
from backchannel.voice.vad import SileroVAD, TurnDetector

AUDIO = Path(__file__).parent / "audio"
SYSTEM = (
    "You are the voice assistant of Kettle and Crumb, a bakery, on a phone call. Answer in "
    "one short spoken sentence. We are open from eight to six every day. We ship within "
    "the US and to Canada. We take cards and cash. The shop is at 12 Mill Street. Gift "
    "cards are sold in the shop."
)
ANSWERS = {
    "hours": "We are open from eight to six, every day.",
    "canada": "Yes, we ship to Canada.",
    "card": "Yes, we take cards and cash.",
    "where": "We are at 12 Mill Street.",
    "gift": "Yes, gift cards are sold in the shop.",
}


def load(name: str) -> Samples:
    with wave.open(str(AUDIO / f"{name}.wav")) as w:
        return to_samples(w.readframes(w.getnframes()))


class TimedLLM:
    """Wraps the model to note when each reply's first chunk left it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.first_chunk: list[float] = []
        self.one_ask_per_response = inner.one_ask_per_response

    async def prepare(self, request: LLMRequest) -> None:
        await self.inner.prepare(request)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        first = True
        async for chunk in self.inner.stream(request):
            if first:
                self.first_chunk.append(time.time())
                first = False
            yield chunk


def scripted() -> ScriptedLLM:
    counter = iter(range(10_000))

    def respond(request: LLMRequest) -> list[LLMChunk]:
        last = request.messages[-1]
        text = str(last.get("content")).lower()
        if last["role"] == "tool":
            return say("Good news, your order is out for delivery.")
        if "background tool calls" in text:
            return say("Good news, your order is out for delivery.")
        if "order" in text:
            return [call("check_order", id=f"c{next(counter)}")]
        for key, answer in ANSWERS.items():  # each question is named by a word in it
            if key in text:
                return say(answer)
        return say("Sorry, could you say that again?")

    return ScriptedLLM(respond=respond)


CONFIG = {
    "firstMessage": "Hi, this is Kettle and Crumb. How can I help?",
    "model": {
        "model": "benchmark",
        "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM}],
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
                        "required": ["order_id"],
                    },
                },
            }
        ],
    },
}


class Meter:
    """The frames sent and the sentences queued, with their wall times."""

    def __init__(self) -> None:
        self.frames: list[float] = []
        self.queued: list[float] = []

    async def send(self, _frame: bytes) -> None:
        self.frames.append(time.time())

    def output(self, piper: PiperTTS) -> AudioOutput:
        out = AudioOutput(piper, self.send, rate=16_000)
        speak = out.speak

        def timed(utterance: Any) -> None:
            self.queued.append(time.time())
            speak(utterance)

        out.speak = timed  # type: ignore[method-assign]
        return out


async def feed(session: VoiceSession, audio: Samples, seconds_after: float) -> float:
    """Feed in real time; returns the wall time of the last speech sample."""
    padded = np.concatenate([audio, np.zeros(int(seconds_after * 16_000), np.int16)])
    start, end_of_speech = time.monotonic(), 0.0
    for k, i in enumerate(range(0, padded.size, 320)):
        session.feed(padded[i : i + 320].tobytes())
        if i + 320 >= audio.size and not end_of_speech:
            end_of_speech = time.time()
        await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - time.monotonic()))
    return end_of_speech


async def one_turn(
    session: VoiceSession, events: EventLog, llm: TimedLLM, meter: Meter, audio: Samples
) -> dict[str, float] | None:
    n_events, n_llm = len(events.events), len(llm.first_chunk)
    n_queued, n_frames = len(meter.queued), len(meter.frames)
    feeding = asyncio.create_task(feed(session, audio, 6.0))

    def answered() -> bool:
        """This turn's transcript, model output, clause and audio all exist (audio of an
        earlier answer still playing does not count)."""
        return (
            any(
                e.type == "transcript"
                and e.data == {**e.data, "role": "user", "transcriptType": "final"}
                for e in events.events[n_events:]
            )
            and len(llm.first_chunk) > n_llm
            and len(meter.queued) > n_queued
            and any(f >= meter.queued[n_queued] for f in meter.frames[n_frames:])
        )

    for _ in range(1000):  # until answered, or the audio and its silence are through
        if feeding.done() or answered():
            break
        await asyncio.sleep(0.02)
    end = await feeding
    if not answered():
        return None
    new = events.events[n_events:]
    stopped = next(e.at for e in new if e.data == {"role": "user", "status": "stopped"})
    heard = next(
        e.at
        for e in new
        if e.type == "transcript"
        and e.data["role"] == "user"
        and e.data["transcriptType"] == "final"
    )
    sentence = meter.queued[n_queued]
    first_frame = next(f for f in meter.frames[n_frames:] if f >= sentence)
    return {
        "total": first_frame - end,
        "vad": stopped - end,
        "stt": heard - stopped,
        "llm_first": llm.first_chunk[n_llm] - heard,
        "llm": sentence - heard,
        "tts": first_frame - sentence,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--llm", choices=["scripted", "local"], default="scripted")
    args = parser.parse_args()
    piper, whisper, turns_model = PiperTTS(), WhisperSTT(), SmartTurn()
    names = list(ANSWERS)
    questions = {name: load(name) for name in names}
    model: Any = (
        scripted() if args.llm == "scripted" else LlamaCppLLM(resolve_model("qwen2.5-1.5b"))
    )
    llm = TimedLLM(model)
    engine = Engine(Ledger(MemoryStore()), llm=llm)
    await engine.open()
    config = AssistantConfig.from_json(CONFIG)
    meter = Meter()
    rows: list[dict[str, float]] = []
    first_rows: list[dict[str, float]] = []
    unanswered = 0
    for c in range(args.calls):
        events = EventLog()
        async with engine.call(config, output=meter.output(piper), events=events) as live:
            session = VoiceSession(live, TurnDetector(SileroVAD()), whisper, turn_model=turns_model)
            await asyncio.sleep(4.0)  # the greeting
            for t in range(args.turns):
                row = await one_turn(
                    session, events, llm, meter, questions[names[(c + t) % len(names)]]
                )
                if row is None:
                    unanswered += 1
                    continue
                rows.append(row)
                if t == 0:
                    first_rows.append(row)
    announce = await announcements(engine, config, meter, piper, args.llm)
    await engine.close()
    report(rows, first_rows, unanswered, announce, args)


async def announcements(
    engine: Engine, config: AssistantConfig, meter: Meter, piper: PiperTTS, llm: str
) -> list[float]:
    """Result arrival → first audio of its announcement, the floor free: a fresh call
    each round, the result posted once the placeholder reply has been said."""
    out: list[float] = []
    for _ in range(5):
        events = EventLog()
        async with engine.call(config, output=meter.output(piper), events=events) as live:
            await asyncio.sleep(4.0)  # the greeting
            live.send_text("Where is my order 4417?")
            for _ in range(3000):
                if any(e.type == "tool-calls" for e in events.events):
                    break
                await asyncio.sleep(0.01)
            called = [e for e in events.events if e.type == "tool-calls"]
            if not called:
                continue  # the model answered in words instead
            tcid = called[0].data["toolCallList"][0]["id"]
            await asyncio.sleep(8.0 if llm == "local" else 3.0)  # its placeholder reply
            n_frames = len(meter.frames)
            t0 = time.time()
            await engine.submit_result(
                live.call_id,
                ToolResult(tcid, result={"status": "out for delivery"}),
                ResultSource.API,
            )
            for _ in range(4000):
                if len(meter.frames) > n_frames:
                    break
                await asyncio.sleep(0.005)
            if len(meter.frames) > n_frames:
                out.append(meter.frames[n_frames] - t0)
            await asyncio.sleep(6.0 if llm == "local" else 3.0)
    return out


def report(
    rows: list[dict[str, float]],
    first_rows: list[dict[str, float]],
    unanswered: int,
    announce: list[float],
    args: argparse.Namespace,
) -> None:
    def med(values: list[float]) -> str:
        """Median and p90 in ms."""
        ms = sorted(v * 1000 for v in values)
        p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        return f"{statistics.median(ms):4.0f} ms (p90 {p90:4.0f})"

    if not rows:
        print(f"no turn was answered ({unanswered})")
        return
    what = "scripted, answers at once" if args.llm == "scripted" else "Qwen2.5 1.5B, llama.cpp"
    print(
        f"end of caller speech -> first assistant audio frame, {len(rows)} turns in "
        f"{args.calls} calls ({unanswered} not answered), LLM {what}: median (p90)"
    )
    print(f"  total                                      {med([r['total'] for r in rows])}")
    print(f"  VAD + turn model (pause, then the verdict) {med([r['vad'] for r in rows])}")
    print(f"  STT (Whisper tiny.en, final transcript)    {med([r['stt'] for r in rows])}")
    print(f"  LLM: transcript -> first token             {med([r['llm_first'] for r in rows])}")
    print(f"  LLM: transcript -> first clause            {med([r['llm'] for r in rows])}")
    print(f"  TTS (Piper: first clause -> first frame)   {med([r['tts'] for r in rows])}")
    later = [r["total"] for r in rows if r not in first_rows]
    firsts = ", ".join(f"{r['total'] * 1000:.0f}" for r in first_rows)
    print(f"  first turn of each call (ms): {firsts}; later turns: {med(later) if later else '-'}")
    if announce:
        print(
            f"result arrival -> first audio frame of its announcement ({len(announce)} calls): "
            f"median {statistics.median(announce) * 1000:.0f} ms, "
            f"max {max(announce) * 1000:.0f} ms"
        )
    else:
        print("result arrival -> announcement: the model never called the tool")


if __name__ == "__main__":
    asyncio.run(main())
