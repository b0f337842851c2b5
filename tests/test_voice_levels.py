"""Every caller heard: after any length of silence, quiet or loud, on the telephone.

Real audio throughout (Piper's voice, Silero VAD, Smart Turn, Whisper tiny.en). Where a
test measures how soon a turn opens, it measures it in *audio* time (how far into the
phrase), which does not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from backchannel import AssistantConfig, Engine, EventLog, Ledger, MemoryStore, ScriptedLLM
from backchannel.call import Call
from backchannel.llm.scripted import say
from backchannel.phone import mulaw
from backchannel.voice.audio import RATE, Samples, resample
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import VoiceSession
from backchannel.voice.stt import WhisperSTT
from backchannel.voice.tts import PiperTTS
from backchannel.voice.vad import Activity, SileroVAD, TurnDetector

from .test_voice_pipeline import Line, eventually, final_user, said, voice

pytestmark = pytest.mark.anyio

QUESTION = "Do you ship to Canada?"
ANSWER = "Yes, we ship to Canada."


def at_level(audio: Samples, dbfs: float) -> Samples:
    """The phrase with its RMS level set to ``dbfs`` (clipped where it overflows)."""
    x = audio.astype(np.float64)
    x *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(x**2))
    return np.clip(x, -32768, 32767).astype(np.int16)


def telephone(audio: Samples) -> Samples:
    """16 kHz audio as a phone line carries it: 8 kHz, through µ-law and back."""
    return mulaw.decode(mulaw.encode(resample(audio, RATE, 8_000)))


def opens_after(detector: TurnDetector, audio: Samples, rate: int, frame: int) -> float | None:
    """Seconds of ``audio`` fed when the detector opened a turn (None: it never did)."""
    for i in range(0, audio.size, frame):
        if Activity.STARTED in detector.feed(resample(audio[i : i + frame], rate, RATE)):
            return (i + frame) / rate
    return None


@pytest.mark.parametrize("lead", [0.5, 30.0])
@pytest.mark.parametrize("level", [-20.0, -35.0, -10.0])
async def test_a_question_opens_its_turn_soon_after_any_silence_at_any_level(
    piper: PiperTTS, lead: float, level: float
) -> None:
    phrase = at_level(await voice(piper, QUESTION), level)
    silence = np.zeros(int(lead * RATE), np.int16)
    opened = opens_after(TurnDetector(SileroVAD()), np.concatenate([silence, phrase]), RATE, 320)
    assert opened is not None, "the question never opened a turn"
    assert opened - lead <= 0.6, f"opened {opened - lead:.2f} s into the phrase"


@pytest.mark.parametrize("lead", [0.5, 30.0])
async def test_a_telephone_question_opens_its_turn_soon_after_any_silence(
    piper: PiperTTS, lead: float
) -> None:
    phrase = telephone(await voice(piper, QUESTION))
    silence = np.full(int(lead * 8_000), 0, np.int16)
    detector = TurnDetector.for_rate(SileroVAD(), 8_000)
    opened = opens_after(detector, np.concatenate([silence, phrase]), 8_000, 160)
    assert opened is not None, "the question never opened a turn"
    assert opened - lead <= 0.6, f"opened {opened - lead:.2f} s into the phrase"


@asynccontextmanager
async def voice_call(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any, *, rate: int = RATE
) -> AsyncIterator[tuple[Call, VoiceSession, EventLog]]:
    engine = Engine(Ledger(MemoryStore()), llm=ScriptedLLM([say(ANSWER)]))
    await engine.open()
    line, events = Line(), EventLog()
    output = AudioOutput(piper, line.send, rate=16_000, clear=line.clear)
    assistant = AssistantConfig.from_json({"model": {"model": "scripted"}})
    async with engine.call(assistant, output=output, events=events) as live:
        detector = TurnDetector.for_rate(SileroVAD(), rate)
        session = VoiceSession(live, detector, whisper, rate=rate, turn_model=turn_model)
        yield live, session, events
    await engine.close()


async def feed(session: VoiceSession, audio: Samples, frame: int) -> None:
    """Feed audio in frames as a client sends them (as fast as the machine takes them:
    the detector counts audio, not wall time), then a second of silence."""
    padded = np.concatenate([audio, np.zeros(frame * 50, np.int16)])
    for k, i in enumerate(range(0, padded.size, frame)):
        session.feed(padded[i : i + frame].tobytes())
        if k % 10 == 0:
            await asyncio.sleep(0)  # let the turn's transcriptions run


@pytest.mark.parametrize(
    "caller",
    ["after 30 s of digital silence", "quiet, at -35 dBFS", "on the telephone, after 30 s"],
)
async def test_the_caller_is_heard_and_answered(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any, caller: str
) -> None:
    phrase = await voice(piper, QUESTION)
    rate, frame, lead = RATE, 320, 30.0
    if "quiet" in caller:
        phrase, lead = at_level(phrase, -35.0), 2.0
    if "telephone" in caller:
        phrase, rate, frame = telephone(phrase), 8_000, 160
    audio = np.concatenate([np.zeros(int(lead * rate), np.int16), phrase])
    async with voice_call(piper, whisper, turn_model, rate=rate) as (_live, session, events):
        await feed(session, audio, frame)
        await eventually(lambda: bool(final_user(events)), within=60)
        heard = [e.data["transcript"] for e in final_user(events)]
        assert len(heard) == 1 and "canada" in heard[0].lower(), heard
        await eventually(lambda: said(events, "ship to Canada"), within=60)
