"""SPEC §6 scenarios with real audio through the real VAD, STT and TTS (scripted LLM).

The caller's words are synthesized with Piper and fed to the call in real-time 20 ms
frames; the assistant's replies are synthesized with Piper and played out in paced
frames. Scenario 12: barge-in stops playback within a frame and cuts the history to what
was heard. Scenario 2: a result that lands while the caller speaks waits for the end of
their turn, and one reply covers both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from backchannel import (
    AssistantConfig,
    Delivery,
    Engine,
    EventLog,
    Ledger,
    MemoryStore,
    ResultSource,
    ScriptedLLM,
    ToolResult,
)
from backchannel.call import Call
from backchannel.llm.base import LLMChunk, LLMRequest
from backchannel.llm.scripted import call, say
from backchannel.voice.audio import Samples, resample
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import VoiceSession
from backchannel.voice.stt import WhisperSTT
from backchannel.voice.tts import PiperTTS, spoken
from backchannel.voice.vad import SileroVAD, TurnDetector

pytestmark = pytest.mark.anyio

LONG = (
    "Our store opens at nine in the morning and closes at six in the evening, "
    "every single weekday, and on Saturdays we open a little later at ten."
)


@dataclass
class Line:
    """What the caller hears: every frame with its send time."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)

    async def send(self, frame: bytes) -> None:
        self.frames.append((time.time(), frame))  # wall time, as events carry

    async def clear(self) -> None:
        self.clears.append(time.time())


async def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def said(events: EventLog, text: str) -> bool:
    return any(
        e.data["role"] == "assistant" and text in str(e.data["transcript"])
        for e in events.of_type("transcript")
    )


def final_user(events: EventLog) -> list[Any]:
    """The caller's final transcripts (partials come while they talk)."""
    return [
        e
        for e in events.of_type("transcript")
        if e.data["role"] == "user" and e.data["transcriptType"] == "final"
    ]


async def voice(piper: PiperTTS, text: str) -> Samples:
    return resample(await spoken(piper, text), piper.sample_rate, 16_000)


async def speak(session: VoiceSession, audio: Samples, *, then_silence: float = 1.0) -> None:
    """Feed audio in real time, 20 ms a frame, then silence."""
    padded = np.concatenate([audio, np.zeros(int(then_silence * 16_000), np.int16)])
    start = time.monotonic()
    for k, i in enumerate(range(0, padded.size, 320)):
        session.feed(padded[i : i + 320].tobytes())
        await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - time.monotonic()))


@asynccontextmanager
async def voice_call(
    llm: ScriptedLLM, piper: PiperTTS, whisper: WhisperSTT, config: AssistantConfig
) -> AsyncIterator[tuple[Call, VoiceSession, Line, EventLog, Engine]]:
    engine = Engine(Ledger(MemoryStore()), llm=llm)
    await engine.open()
    line, events = Line(), EventLog()
    output = AudioOutput(piper, line.send, rate=16_000, clear=line.clear)
    async with engine.call(config, output=output, events=events) as live:
        session = VoiceSession(live, TurnDetector(SileroVAD()), whisper)
        yield live, session, line, events, engine
    await engine.close()


def order_call(
    respond: Callable[[LLMRequest], list[LLMChunk]],
) -> tuple[ScriptedLLM, AssistantConfig]:
    """A model that starts the async order lookup ("c1"), then answers by ``respond``."""
    llm = ScriptedLLM(
        [[*say("Let me check."), call("check_order", {"id": "42"}, id="c1")], say("One moment.")],
        respond=respond,
    )
    config = AssistantConfig.from_json(
        {
            "model": {
                "model": "scripted",
                "tools": [{"type": "function", "async": True, "function": {"name": "check_order"}}],
            }
        }
    )
    return llm, config


def plain() -> AssistantConfig:
    return AssistantConfig.from_json({"model": {"model": "scripted"}})


async def test_12_barge_in_stops_playback_within_a_frame_and_cuts_history(
    piper: PiperTTS, whisper: WhisperSTT
) -> None:
    llm = ScriptedLLM([say(LONG), say("Sure, go ahead.")])
    async with voice_call(llm, piper, whisper, plain()) as (live, session, line, events, _engine):
        await speak(session, await voice(piper, "When are you open?"))

        def user_heard() -> bool:
            return bool(final_user(events))

        await eventually(user_heard)  # Whisper may still be at work on a busy machine
        heard = final_user(events)[0]
        assert "open" in heard.data["transcript"].lower()
        await eventually(lambda: len(line.frames) >= 100)  # 2 s of the assistant's answer
        interruption = await voice(piper, "Wait, one question.")
        await speak(session, interruption, then_silence=1.5)
        await eventually(lambda: bool(events.of_type("user-interrupted")))
        barge = next(e for e in events.of_type("user-interrupted"))
        frame_times = [t for t, _ in line.frames]
        assert len(frame_times) > 100
        # Playback stops within one frame of the barge-in, and the buffer is cleared.
        # (the next reply can only start after the caller's turn ends, well over 0.5 s on)
        assert len([t for t in frame_times if barge.at < t < barge.at + 0.5]) <= 1
        assert line.clears and line.clears[0] >= barge.at
        # The history holds what was heard: a prefix of the sentence, not all of it.
        assistant = [
            m["content"]
            for m in live.conversation.to_openai()
            if m["role"] == "assistant" and m["content"]
        ]
        cut = assistant[0]
        assert LONG.startswith(cut.strip())
        assert 10 < len(cut) < len(LONG) * 0.8, cut


async def test_2_result_while_the_caller_speaks_waits_and_one_reply_covers_both(
    piper: PiperTTS, whisper: WhisperSTT
) -> None:
    def respond(request: LLMRequest) -> list[LLMChunk]:
        last = request.messages[-1]
        if "background tool calls" in str(last.get("content")):
            return say("The warehouse says it shipped, and yes, we deliver on Sundays.")
        return say("Okay.")

    llm, config = order_call(respond)
    async with voice_call(llm, piper, whisper, config) as (live, session, line, events, engine):
        await speak(session, await voice(piper, "Where is my order?"))
        await eventually(lambda: said(events, "One moment"))
        question = await voice(piper, "Also, do you deliver on Sundays?")
        feeding = asyncio.ensure_future(speak(session, question, then_silence=1.5))
        await asyncio.sleep(0.8)  # the caller is mid-sentence
        assert session.detector.speaking
        before = len(line.frames)
        await engine.submit_result(
            live.call_id, ToolResult("c1", result="shipped"), ResultSource.API
        )
        await asyncio.sleep(0.5)
        assert len(line.frames) == before, "nothing is said over the caller"
        await feeding
        await eventually(lambda: said(events, "Sundays"))
        reply_request = llm.requests[-1]
        user = [m for m in reply_request.messages if m["role"] == "user"][-1]
        assert "sunday" in str(user["content"]).lower()
        assert "c1" in str(reply_request.messages[-1]["content"])
        await eventually(lambda: bool(live.announced))  # recorded as the response closes
        assert [a.tool_call_id for a in live.announced] == ["c1"]


@pytest.mark.parametrize("policy", ["when-idle", "interrupt"])
async def test_3_result_mid_sentence_with_real_audio(
    piper: PiperTTS, whisper: WhisperSTT, policy: str
) -> None:
    def respond(request: LLMRequest) -> list[LLMChunk]:
        if "background tool calls" in str(request.messages[-1].get("content")):
            return say("Your order has shipped.")
        return say(LONG)

    llm, config = order_call(respond)
    async with voice_call(llm, piper, whisper, config) as (live, session, _line, events, engine):
        await speak(session, await voice(piper, "Where is my order?"))
        await eventually(lambda: said(events, "One moment"))
        await speak(session, await voice(piper, "When are you open?"))
        await eventually(lambda: said_started(events, 3))  # the long answer is playing
        await asyncio.sleep(1.0)
        await engine.submit_result(
            live.call_id,
            ToolResult("c1", result="shipped", delivery=Delivery(policy)),
            ResultSource.API,
        )
        await eventually(lambda: said(events, "Your order has shipped."))
        lines = [
            e.data["transcript"]
            for e in events.of_type("transcript")
            if e.data["role"] == "assistant"
        ]
        # The long answer goes out clause by clause; then the result.
        start = next(i for i, t in enumerate(lines) if LONG.startswith(t[:20]))
        end = lines.index("Your order has shipped.")
        answer = " ".join(lines[start:end])
        if policy == "when-idle":
            assert answer == LONG, "the sentence played whole, then the result"
        else:
            assert LONG.startswith(answer) and len(answer) < len(LONG) * 0.6, lines
        await eventually(lambda: bool(live.announced))  # recorded as the response closes
        assert [a.tool_call_id for a in live.announced] == ["c1"]


def said_started(events: EventLog, count: int) -> bool:
    """Whether the assistant has started speaking at least ``count`` times."""
    started = [
        e
        for e in events.of_type("speech-update")
        if e.data == {"role": "assistant", "status": "started"}
    ]
    return len(started) >= count
