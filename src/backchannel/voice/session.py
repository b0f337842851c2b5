"""A voice call's input side: microphone audio → turns and transcripts → the call.

Frames of PCM16 at the client's rate go to :meth:`VoiceSession.feed`; they are resampled
to 16 kHz and scored by the VAD. How a turn goes:

* **Opening.** ``voiceSeconds`` of speech opens a turn, with a little pre-roll. When the
  assistant is quiet, the call hears ``user_started_speaking`` at once (barge-in on a
  response still being prepared). Over the assistant's speech, the turn is *tentative*
  (:mod:`.interruption`): the assistant goes on until the turn has words that are not
  an acknowledgement (the same first word in two partial transcripts in a row, or an
  interruption phrase), or lasts too long to be one; "mm-hmm" never cuts it.
* **Pausing.** After ``waitSeconds`` of silence the turn is transcribed at once (a
  speculative transcript: if the speaker goes on it is thrown away) and the turn model
  is asked whether the speaker is done. A finished turn ends there; an unfinished one
  ("my order number is… uh") waits for more speech or the longer silence.
* **Ending.** The call hears ``user_stopped_speaking`` and then the transcript. A
  barge-in whose turn brought no words (a cough) lets the call resume what it cut.

A streaming recogniser (Deepgram) gets the turn's audio as it is spoken instead, and is
not asked twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from ..call import Call
from ..errors import BackchannelError
from .audio import RATE, Samples, StreamResampler, to_samples
from .interruption import Interruptions, words
from .stt import STT, clip
from .turn_model import TurnModel
from .vad import Activity, TurnDetector

#: Audio kept from before a turn opens and sent to STT with it. Telephone audio can
#: open a turn up to ~0.65 s after the first sound (µ-law softens onsets); with the
#: 0.2 s the detector needs, 0.8 s reaches back past that with room to spare.
PRE_ROLL_SECONDS = 0.8
#: Without a turn model, this much silence ends a turn.
SILENCE_SECONDS = 0.5
#: The turn model's verdict: at or above, the speaker is done.
COMPLETE = 0.5
#: A turn shorter than this (a word or two: "Hello,", "Also,") is a lead-in as often as
#: an answer, and the turn model hears it as finished either way: it ends, if the model
#: says so, only after ``SHORT_TURN_WAIT_SECONDS`` of silence.
SHORT_TURN_SECONDS = 0.8
SHORT_TURN_WAIT_SECONDS = 0.5
#: Over the assistant's speech, a tentative turn is transcribed again each time it has
#: grown by this much, to hear its first real words early.
PARTIAL_EVERY_SECONDS = 0.3
#: Otherwise, each time it has grown by this much: the partial transcript.
TRANSCRIPT_EVERY_SECONDS = 0.5
log = logging.getLogger("backchannel.voice")
T = TypeVar("T")


class CallInput(Protocol):
    """A call's input side as the transports see it: microphone frames in."""

    def feed(self, pcm: bytes) -> None:
        """Take one frame of PCM16 audio at the transport's rate."""
        ...


@dataclass
class _Turn:
    audio: list[Samples]
    committed: bool
    stream: asyncio.Queue[Samples | None] | None = None
    streamed: asyncio.Task[str] | None = None
    #: The transcript of the audio up to the pause, while no speech came after it.
    speculation: asyncio.Task[str] | None = None
    checked: int = 0  # samples covered by the last partial transcript
    #: The first real word of the last partial transcript over the assistant's speech.
    first_word: str | None = None
    opened: int = 0  # samples in the turn when it opened (the pre-roll)
    pauses: int = 0  # pauses in the current silence
    silences: int = 0  # silences so far: a verdict counts only for its own
    ended: bool = False
    #: When the turn ended (the call's monotonic clock), and how long the speaker had
    #: been quiet by then.
    ended_at: float = 0.0
    silent_for: float = 0.0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.size = sum(a.size for a in self.audio)  # samples so far, kept as it grows

    def add(self, samples: Samples) -> None:
        self.audio.append(samples)
        self.size += samples.size

    def samples(self) -> Samples:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)


async def heard_again(
    hear: Callable[[Samples], Awaitable[str]], rules: Interruptions, audio: Samples, text: str
) -> bool:
    """Whether ``text``, the words heard over the assistant in ``audio``, are still words
    when ``hear`` hears it a second time, behind half a second of silence. Whisper writes
    part of a hum as a word ("In a month" for "mm-hmm") or not by where the turn's audio
    starts; real words stay words. An interruption phrase needs no second hearing."""
    if rules.urgent(text):
        return True
    again = await hear(np.concatenate([np.zeros(RATE // 2, np.int16), audio]))
    # Only an acknowledgement or a hum heard the second time undoes the words; no words
    # (or a failed transcription) leaves them as they were.
    return not words(again) or rules.cuts(again, final=True)


class VoiceSession:
    def __init__(
        self,
        call: Call,
        detector: TurnDetector,
        stt: STT,
        *,
        rate: int = RATE,
        turn_model: TurnModel | None = None,
    ) -> None:
        self.call = call
        self.detector = detector
        self.stt = stt
        start, stop = call.assistant.start_speaking_plan, call.assistant.stop_speaking_plan
        self.turn_model = turn_model if start.smart else None
        detector.start_secs = max(stop.voice_seconds, 0.05)
        detector.pause_secs = start.wait_seconds
        detector.later_pauses = (max(SHORT_TURN_WAIT_SECONDS, start.wait_seconds),)
        detector.stop_secs = (
            max(start.transcription_endpointing_plan.on_no_punctuation_seconds, start.wait_seconds)
            if self.turn_model is not None
            else max(SILENCE_SECONDS, start.wait_seconds)
        )
        self.interruptions = Interruptions(stop)
        self._resample = StreamResampler(rate, RATE)
        self._recent: list[Samples] = []
        self._turn: _Turn | None = None
        #: The turn model's verdicts, in order; what was heard over the assistant and
        #: let pass (acknowledgements, sounds): for tests and the curious.
        self.verdicts: list[float] = []
        self.let_pass: list[str] = []

    def feed(self, pcm: bytes) -> None:
        """Take one frame of microphone audio (any length; an odd byte is dropped).
        While the customer is muted, frames are dropped."""
        if self.call.customer_muted:
            return
        samples = self._resample(to_samples(pcm))
        if samples.size == 0:
            return
        self._remember(samples)
        for change in self.detector.feed(samples):
            if change is Activity.STARTED:
                self._start_turn()
            elif change is Activity.PAUSED:
                self._pause()
            elif change is Activity.RESUMED:
                self._resume()
            else:
                self._end_turn()
        turn = self._turn
        if turn is not None:
            turn.add(samples)
            if turn.stream is not None:
                turn.stream.put_nowait(samples)
            self._weigh(turn)

    def _remember(self, samples: Samples) -> None:
        self._recent.append(samples)
        keep = int(PRE_ROLL_SECONDS * RATE + self.detector.start_secs * RATE)
        while sum(s.size for s in self._recent) - self._recent[0].size > keep:
            self._recent.pop(0)

    # -- the turn ----------------------------------------------------------------------

    def _start_turn(self) -> None:
        tolerant = self.call.assistant_speaking and self.interruptions.enabled
        turn = _Turn(audio=self._recent[:-1], committed=not tolerant)  # the current frame
        turn.opened = turn.size  # is appended by ``feed``
        self._turn = turn
        if not self.stt.repeatable:
            turn.stream = asyncio.Queue()
            for samples in turn.audio:
                turn.stream.put_nowait(samples)
            streaming = self._transcribe_stream(turn.stream, listening=not turn.committed)
            turn.streamed = self._spawn(turn, streaming, guard=False)
        if turn.committed:
            self.call.user_started_speaking()

    def _commit(self, turn: _Turn) -> None:
        """A tentative turn is a real one: now it cuts the assistant."""
        if not turn.committed:
            turn.committed = True
            self.call.user_started_speaking()

    def _weigh(self, turn: _Turn) -> None:
        """Transcribe the turn as it grows. Over the assistant's speech, to cut on its
        first real words (or once it is too long for an acknowledgement); otherwise to
        show the words so far and let the model read them ahead."""
        if not turn.committed and not self.detector.paused:  # silence is not speech
            if not self.call.assistant_speaking:
                # The assistant has finished: what the caller says now is a turn.
                self._commit(turn)
                return
            seconds = (turn.size - turn.opened) / RATE + self.detector.start_secs
            if self.interruptions.too_long(seconds):
                self._commit(turn)
                return
        every = PARTIAL_EVERY_SECONDS if not turn.committed else TRANSCRIPT_EVERY_SECONDS
        grown = turn.size - turn.checked >= every * RATE
        busy = any(not t.done() for t in turn.tasks)  # one partial at a time
        if self.stt.repeatable and grown and not busy and not self.detector.paused:
            turn.checked = turn.size
            self._spawn(turn, self._partial(turn, turn.samples()))

    async def _partial(self, turn: _Turn, audio: Samples) -> None:
        was_committed = turn.committed
        text = await self._transcribe(audio, listening=not was_committed)
        if turn.ended:
            return
        if not turn.committed:
            # A word in one partial transcript may be Whisper's guess at a hum cut off
            # mid-way ("Inema" for half an "mm-hmm"): it cuts once two partials in a row
            # begin with the same word. An interruption phrase cuts at once.
            word, turn.first_word = turn.first_word, self.interruptions.first_word(text)
            agreed = word is not None and word == turn.first_word
            cuts = self.interruptions.cuts(text)
            if cuts and (agreed or self.interruptions.urgent(text)):
                self._commit(turn)
        elif was_committed:
            self.call.user_partial(text)

    def _pause(self) -> None:
        turn = self._turn
        if turn is None:
            return
        turn.pauses += 1
        audio = turn.samples()
        if self.stt.repeatable and turn.speculation is None:
            transcript = self._transcribe(audio, listening=not turn.committed)
            turn.speculation = self._spawn(turn, transcript, guard=False)
        spoken = (
            (turn.size - turn.opened) / RATE + self.detector.start_secs - self.detector.pause_secs
        )
        if self.turn_model is not None and (turn.pauses > 1 or spoken >= SHORT_TURN_SECONDS):
            self._spawn(turn, self._check_complete(turn, audio, turn.silences))

    def _resume(self) -> None:
        if self._turn is not None:
            self._turn.speculation = None  # the speaker went on: that transcript is short
            self._turn.pauses = 0
            self._turn.silences += 1

    async def _check_complete(self, turn: _Turn, audio: Samples, silence: int) -> None:
        model = self.turn_model
        assert model is not None
        try:
            done = await asyncio.to_thread(model.complete, audio)
        except Exception:  # a failed check leaves the silence rule in charge
            log.exception("call %s: the turn model failed", self.call.call_id)
            return
        self.verdicts.append(done)
        current = self._turn is turn and turn.silences == silence and self.detector.paused
        if done >= COMPLETE and current:
            self.detector.end_turn()
            self._end_turn()

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None or turn.ended:
            return
        turn.ended = True
        turn.ended_at, turn.silent_for = self.call.clock.monotonic(), self.detector.silent_for
        if turn.stream is not None:
            turn.stream.put_nowait(None)
        if turn.committed:
            self.call.user_stopped_speaking(silent_for=turn.silent_for)
        self.call.spawn(self._conclude(turn))

    async def _conclude(self, turn: _Turn) -> None:
        """The turn's transcript, to the call; a tentative turn that was only an
        acknowledgement (or only a sound) is dropped: the assistant never stopped."""
        if turn.streamed is not None:
            text = await turn.streamed
        elif turn.speculation is not None:
            text = await turn.speculation
        else:
            text = await self._transcribe(turn.samples(), listening=not turn.committed)
        for task in turn.tasks:
            task.cancel()
        if self.call.ended.is_set():
            return
        if not turn.committed:
            words = self.interruptions.cuts(text, final=True)
            if words and not await self._heard_again(turn, text):
                words = False
            if self.call.ended.is_set():
                return
            if not words:
                log.debug("call %s: not an interruption: %r", self.call.call_id, text)
                self.let_pass.append(text)
                return
            self._commit(turn)
            ago = self.call.clock.monotonic() - turn.ended_at
            self.call.user_stopped_speaking(silent_for=turn.silent_for, ago=ago)
        self.call.user_transcript(text)

    async def _heard_again(self, turn: _Turn, text: str) -> bool:
        """:func:`heard_again`, with a recogniser that can hear the turn twice."""
        if not self.stt.repeatable:
            return True
        hear = functools.partial(self._transcribe, listening=True)
        return await heard_again(hear, self.interruptions, turn.samples(), text)

    # -- transcription -----------------------------------------------------------------

    def _spawn(
        self, turn: _Turn, coro: Coroutine[Any, Any, T], *, guard: bool = True
    ) -> asyncio.Task[T]:
        """A task of the turn's, in the call's group. Unguarded ones give their value to
        whoever awaits them, so they must not raise (the transcriptions don't)."""
        task: asyncio.Task[T] = self.call.spawn(coro, guard=guard)
        turn.tasks.add(task)
        task.add_done_callback(turn.tasks.discard)
        return task

    async def _transcribe(self, audio: Samples, *, listening: bool = False) -> str:
        """``listening``: over the assistant's speech (see :meth:`.STT.transcribe`)."""
        return await self._words(self.stt.transcribe(clip(audio), listening=listening))

    async def _words(self, transcription: Coroutine[Any, Any, str]) -> str:
        """A transcription's text; a failed one loses this turn's words, not the call."""
        try:
            return await transcription
        except BackchannelError as exc:
            log.error("call %s: transcription failed: %s", self.call.call_id, exc)
        except Exception:
            log.exception("call %s: transcription failed", self.call.call_id)
        return ""

    async def _transcribe_stream(
        self, stream: asyncio.Queue[Samples | None], *, listening: bool = False
    ) -> str:
        async def audio() -> AsyncIterator[Samples]:
            while (samples := await stream.get()) is not None:
                yield samples

        return await self._words(self.stt.transcribe(audio(), listening=listening))
