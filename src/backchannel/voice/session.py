"""A voice call's input side: microphone audio → turns and transcripts → the call.

Frames of PCM16 at the client's rate go to :meth:`VoiceSession.feed`; they are resampled
to 16 kHz and scored by the VAD. When a turn opens, the call hears
``user_started_speaking`` at once (that is what cuts the assistant: barge-in) and the
turn's audio, with a little pre-roll, starts streaming to STT; when it closes, the call
hears ``user_stopped_speaking``, and STT's text ends the user's turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ..call import Call
from ..errors import BackchannelError
from .audio import RATE, Samples, StreamResampler, to_samples
from .stt import STT
from .vad import Activity, TurnDetector

#: Audio kept from before a turn opens and sent to STT with it. Telephone audio can
#: open a turn up to ~0.65 s after the first sound (µ-law softens onsets); with the
#: 0.2 s the detector needs, 0.8 s reaches back past that with room to spare.
PRE_ROLL_SECONDS = 0.8
log = logging.getLogger("backchannel.voice")


class VoiceSession:
    def __init__(self, call: Call, detector: TurnDetector, stt: STT, *, rate: int = RATE) -> None:
        self.call = call
        self.detector = detector
        self.stt = stt
        self._resample = StreamResampler(rate, RATE)
        self._recent: list[Samples] = []
        self._turn: asyncio.Queue[Samples | None] | None = None

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
            else:
                self._finish_turn()
        if self._turn is not None:
            self._turn.put_nowait(samples)

    def _remember(self, samples: Samples) -> None:
        self._recent.append(samples)
        keep = int(PRE_ROLL_SECONDS * RATE + self.detector.start_secs * RATE)
        while sum(s.size for s in self._recent) - self._recent[0].size > keep:
            self._recent.pop(0)

    def _start_turn(self) -> None:
        """Barge in at once, and start transcribing while the user is still talking."""
        self._turn = turn = asyncio.Queue[Samples | None]()
        for samples in self._recent[:-1]:  # pre-roll; the current frame is fed after
            turn.put_nowait(samples)
        self.call.user_started_speaking()
        self.call.spawn(self._transcribe(turn))

    def _finish_turn(self) -> None:
        if self._turn is not None:
            self._turn.put_nowait(None)
        self._turn = None
        self.call.user_stopped_speaking()

    async def _transcribe(self, turn: asyncio.Queue[Samples | None]) -> None:
        async def audio() -> AsyncIterator[Samples]:
            while (samples := await turn.get()) is not None:
                yield samples

        try:
            text = await self.stt.transcribe(audio())
        except BackchannelError as exc:
            # A failed transcription loses this turn's words, not the call.
            log.error("call %s: transcription failed: %s", self.call.call_id, exc)
            text = ""
        if not self.call.ended.is_set():
            self.call.user_transcript(text)
