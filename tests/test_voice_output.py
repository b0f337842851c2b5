"""AudioOutput on the manual clock: paced frames, no gaps between sentences, instant stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from backchannel import ManualClock, Utterance
from backchannel.voice.audio import Samples
from backchannel.voice.output import AudioOutput

pytestmark = pytest.mark.anyio


class ToneTTS:
    """250 ms of full-scale square wave per word at 16 kHz: 12.5 frames a word."""

    sample_rate = 16_000

    async def synthesize(self, text: str) -> AsyncIterator[Samples]:
        n = int(len(text.split()) * 0.25 * self.sample_rate)
        yield np.where(np.arange(n) % 16 < 8, 8000, -8000).astype(np.int16)


class Listener:
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def speech_started(self, utterance_id: int) -> None:
        self.log.append(("started", utterance_id))

    def speech_finished(self, utterance_id: int) -> None:
        self.log.append(("finished", utterance_id))


async def test_sentences_play_back_to_back_in_paced_frames() -> None:
    clock = ManualClock()
    frames: list[tuple[float, bytes]] = []

    async def send(frame: bytes) -> None:
        frames.append((clock.monotonic(), frame))

    out = AudioOutput(ToneTTS(), send, rate=16_000, clock=clock)
    listener = Listener()
    out.attach(listener)
    player = asyncio.ensure_future(out.run())
    out.speak(Utterance(1, "one", 1))  # 12.5 frames
    out.speak(Utterance(2, "two", 1))  # 12.5 frames: together exactly 25
    await clock.advance(2)
    assert len(frames) == 25
    assert all(len(f) == 640 for _, f in frames)
    silent = [i for i, (_, f) in enumerate(frames) if np.abs(np.frombuffer(f, "<i2")).min() == 0]
    assert silent == [], "no padding between the sentences"
    times = [t for t, _ in frames]
    assert times == sorted(times) and times[-1] - times[0] == pytest.approx(24 * 0.02)
    assert listener.log == [("started", 1), ("finished", 1), ("started", 2), ("finished", 2)]
    out.speak(Utterance(3, "three", 2))  # alone: its last half frame is padded
    await clock.advance(1)
    assert len(frames) == 38
    player.cancel()


async def test_stop_takes_effect_before_the_next_frame_and_reports_what_was_heard() -> None:
    clock = ManualClock()
    frames: list[bytes] = []
    clears: list[float] = []

    async def send(frame: bytes) -> None:
        frames.append(frame)

    async def clear() -> None:
        clears.append(clock.monotonic())

    out = AudioOutput(ToneTTS(), send, rate=16_000, clock=clock, clear=clear)
    out.attach(Listener())
    player = asyncio.ensure_future(out.run())
    text = "one two three four five six seven eight"  # 2 s
    out.speak(Utterance(1, text, 1))
    out.speak(Utterance(2, "never heard", 1))
    await clock.advance(0.5)
    sent = len(frames)
    cut = out.stop()
    assert cut is not None and cut.utterance_id == 1
    assert cut.heard_chars == pytest.approx(len(text) * sent / 100, abs=2)
    await clock.advance(3)
    assert len(frames) == sent, "not one more frame"
    assert clears, "the transport was told to clear"
    assert out.stop() is None
    out.muted = True
    out.speak(Utterance(3, "muted", 2))
    await clock.advance(1)
    assert np.abs(np.frombuffer(frames[-1], "<i2")).max() == 0, "muted plays silence"
    player.cancel()


async def test_a_sentence_dropped_while_it_is_synthesized_never_plays() -> None:
    clock = ManualClock()
    frames: list[bytes] = []
    release = asyncio.Event()

    class SlowTTS(ToneTTS):
        async def synthesize(self, text: str) -> AsyncIterator[Samples]:
            if text == "checking":
                await release.wait()  # still synthesizing when it is dropped
            async for chunk in super().synthesize(text):
                yield chunk

    async def send(frame: bytes) -> None:
        frames.append(frame)

    out = AudioOutput(SlowTTS(), send, rate=16_000, clock=clock)
    listener = Listener()
    out.attach(listener)
    player = asyncio.ensure_future(out.run())
    out.speak(Utterance(1, "checking", 1))
    out.speak(Utterance(2, "answer", 1))
    await clock.advance(0.1)
    out.drop(1)  # off the queue already, in the synthesizer, not a frame out
    release.set()
    await clock.advance(2)
    assert listener.log == [("started", 2), ("finished", 2)]
    assert len(frames) == 13, "only the answer played (12.5 frames, the last padded)"
    player.cancel()


async def test_after_a_stop_with_a_hold_the_next_sentence_waits_to_play_not_to_be_made() -> None:
    clock = ManualClock()
    frames: list[float] = []
    made: list[float] = []

    class Timed(ToneTTS):
        async def synthesize(self, text: str) -> AsyncIterator[Samples]:
            made.append(clock.monotonic())
            async for chunk in super().synthesize(text):
                yield chunk

    async def send(frame: bytes) -> None:
        frames.append(clock.monotonic())

    out = AudioOutput(Timed(), send, rate=16_000, clock=clock)
    out.attach(Listener())
    player = asyncio.ensure_future(out.run())
    out.speak(Utterance(1, "one two three four", 1))
    await clock.advance(0.5)
    stopped_at = clock.monotonic()
    out.stop(hold=1.0)  # a barge-in, with a second of backoff
    await clock.advance(0.1)
    heard = len(frames)
    out.speak(Utterance(2, "again", 2))
    await clock.advance(0.5)
    assert len(frames) == heard, "nothing plays during the hold"
    assert made[-1] == pytest.approx(stopped_at + 0.1), "the sentence is made at once"
    await clock.advance(1)
    assert frames[heard] == pytest.approx(stopped_at + 1.0)
    player.cancel()
