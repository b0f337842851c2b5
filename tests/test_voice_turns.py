"""Turn-taking with real audio: Silero VAD, Smart Turn v3, Whisper tiny.en and Piper.

Each test feeds the caller's synthesized speech in real time and then *stops feeding*
where timing matters, so what ends a turn is the turn model's verdict and never the
machine's speed: waits are on events, with generous bounds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from backchannel import AssistantConfig, Engine, EventLog, Ledger, MemoryStore, ScriptedLLM
from backchannel.call import Call
from backchannel.llm.scripted import say
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import VoiceSession
from backchannel.voice.stt import STT, ScriptedSTT, WhisperSTT
from backchannel.voice.tts import PiperTTS
from backchannel.voice.vad import SileroVAD, TurnDetector

from .test_voice_pipeline import LONG, Line, eventually, final_user, said, speak, voice

pytestmark = pytest.mark.anyio


def user_stopped(events: EventLog) -> bool:
    return any(
        e.data == {"role": "user", "status": "stopped"} for e in events.of_type("speech-update")
    )


def user_lines(events: EventLog) -> list[str]:
    return [e.data["transcript"] for e in final_user(events)]


def assistant_lines(events: EventLog) -> list[str]:
    return [
        e.data["transcript"] for e in events.of_type("transcript") if e.data["role"] == "assistant"
    ]


@asynccontextmanager
async def voice_call(
    llm: ScriptedLLM,
    piper: PiperTTS,
    stt: STT,
    turn_model: Any,
    config: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Call, VoiceSession, Line, EventLog]]:
    engine = Engine(Ledger(MemoryStore()), llm=llm)
    await engine.open()
    line, events = Line(), EventLog()
    output = AudioOutput(piper, line.send, rate=16_000, clear=line.clear)
    assistant = AssistantConfig.from_json(config or {"model": {"model": "scripted"}})
    async with engine.call(assistant, output=output, events=events) as live:
        session = VoiceSession(live, TurnDetector(SileroVAD()), stt, turn_model=turn_model)
        yield live, session, line, events
    await engine.close()


async def answer_playing(session: VoiceSession, piper: PiperTTS, line: Line) -> None:
    """Ask "When are you open?" and wait until 1 s of the long answer has played."""
    await speak(session, await voice(piper, "When are you open?"), then_silence=1.5)
    await eventually(lambda: len(line.frames) >= 50, within=30)


async def test_a_finished_question_ends_the_turn_after_a_short_pause(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any
) -> None:
    llm = ScriptedLLM([say("Yes, we ship to Canada.")])
    async with voice_call(llm, piper, whisper, turn_model) as (_live, session, _line, events):
        # 0.4 s of silence: past the 0.2 s pause, far short of the 1.0 s silence rule.
        await speak(session, await voice(piper, "Do you ship to Canada?"), then_silence=0.4)
        await eventually(lambda: user_stopped(events), within=30)
        assert session.verdicts and session.verdicts[-1] >= 0.5
        await eventually(lambda: bool(user_lines(events)), within=30)
        assert "canada" in user_lines(events)[0].lower()
        await eventually(lambda: said(events, "Canada"), within=30)


async def test_a_trailing_filler_keeps_the_turn_open_until_the_silence_rule(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any
) -> None:
    llm = ScriptedLLM([say("Thanks, let me look.")])
    async with voice_call(llm, piper, whisper, turn_model) as (_live, session, _line, events):
        await speak(session, await voice(piper, "My order number is, uh"), then_silence=0.4)
        await eventually(lambda: bool(session.verdicts), within=30)
        assert session.verdicts[-1] < 0.5, "the model heard an unfinished turn"
        assert not user_stopped(events) and session.detector.speaking
        await speak(session, await voice(piper, "four four one seven."), then_silence=0.4)
        await eventually(lambda: user_stopped(events), within=30)
        await eventually(lambda: bool(user_lines(events)), within=30)
        heard = user_lines(events)
        assert len(heard) == 1, "one turn, both halves"
        assert "number" in heard[0].lower() and ("4" in heard[0] or "four" in heard[0].lower())


async def test_an_unfinished_turn_still_ends_on_the_silence_rule(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any
) -> None:
    llm = ScriptedLLM([say("Take your time.")])
    async with voice_call(llm, piper, whisper, turn_model) as (_live, session, _line, events):
        await speak(session, await voice(piper, "I would like to, um"), then_silence=1.5)
        await eventually(lambda: user_stopped(events), within=30)
        await eventually(lambda: said(events, "Take your time."), within=30)


@pytest.mark.parametrize("acknowledgement", ["Okay.", "Mm-hmm."])
async def test_an_acknowledgement_over_the_assistant_does_not_cut_it(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any, acknowledgement: str
) -> None:
    llm = ScriptedLLM([say(LONG)])
    async with voice_call(llm, piper, whisper, turn_model) as (live, session, line, events):
        await answer_playing(session, piper, line)
        assert live.assistant_speaking
        # A microphone goes on sending silence: the turn ends by the silence rule when
        # the turn model is unsure (it scored "Mm-hmm." 0.47 to 0.6, by where the pause
        # fell in a frame, on a busy machine).
        await speak(session, await voice(piper, acknowledgement), then_silence=2.5)
        await eventually(
            lambda: bool(session.let_pass or events.of_type("user-interrupted")), within=30
        )
        assert session.let_pass, f"heard as words: {user_lines(events)}, {session.verdicts}"
        if acknowledgement == "Okay.":
            assert "okay" in session.let_pass[0].lower()
        await eventually(lambda: said(events, LONG[-30:]), within=60)
        assert not events.of_type("user-interrupted")
        assert " ".join(assistant_lines(events)) == LONG, "said whole, once"
        assert len(user_lines(events)) == 1, "the acknowledgement was not a turn"


async def test_words_over_the_assistant_cut_it(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any
) -> None:
    llm = ScriptedLLM([say(LONG), say("Sure, what is it?")])
    async with voice_call(llm, piper, whisper, turn_model) as (_live, session, line, events):
        await answer_playing(session, piper, line)
        await speak(
            session, await voice(piper, "Sorry, I have another question."), then_silence=0.6
        )
        await eventually(lambda: bool(events.of_type("user-interrupted")), within=30)
        barge = events.of_type("user-interrupted")[0]
        # Playback stops within one frame of the cut; the buffer is cleared.
        assert len([t for t, _ in line.frames if barge.at < t < barge.at + 0.3]) <= 1
        assert line.clears and line.clears[0] >= barge.at
        await eventually(lambda: said(events, "what is it?"), within=30)  # after "Sure,"


async def test_a_wordless_barge_in_resumes_the_cut_sentence(
    piper: PiperTTS, turn_model: Any
) -> None:
    # Real audio and VAD; the recogniser hears no words in the second turn (a cough,
    # a door): the speech is long enough to cut, and then the sentence comes again.
    stt = ScriptedSTT(["When are you open?", ""])
    llm = ScriptedLLM([say(LONG)])
    async with voice_call(llm, piper, stt, turn_model) as (live, session, line, events):
        await answer_playing(session, piper, line)
        noise = await voice(piper, "Let me think about that for a second or two.")
        await speak(session, noise, then_silence=1.5)
        await eventually(lambda: bool(events.of_type("user-interrupted")), within=30)
        await eventually(lambda: said(events, LONG[-30:]), within=60)
        lines = assistant_lines(events)
        # The clause that was cut is said again from its start, and what followed it.
        resumed, cut = lines[-1], lines[-2]
        assert LONG.endswith(resumed) and len(resumed) > 20
        assert resumed.startswith(cut), (cut, resumed)
        assert len(llm.requests) == 1, "resumed without asking the model again"
        assert [m["role"] for m in live.conversation.to_openai()].count("user") == 1
