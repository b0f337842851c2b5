"""A voice call's input side: microphone audio → turns and transcripts → the call.

Frames of PCM16 at the client's rate go to :meth:`VoiceSession.feed`; they are resampled
to 16 kHz and scored by the VAD. When a turn opens, the call hears
``user_started_speaking`` at once (that is what cuts the assistant: barge-in); when it
closes, ``user_stopped_speaking``, and the turn's audio (with a little pre-roll) goes to
STT, whose text ends the user's turn.
"""

from __future__ import annotations

import numpy as np

from ..call import Call
from .audio import RATE, Samples, StreamResampler, to_samples
from .stt import STT
from .vad import Activity, TurnDetector

PRE_ROLL_SECONDS = 0.3


class VoiceSession:
    def __init__(self, call: Call, detector: TurnDetector, stt: STT, *, rate: int = RATE) -> None:
        self.call = call
        self.detector = detector
        self.stt = stt
        self._resample = StreamResampler(rate, RATE)
        self._recent: list[Samples] = []
        self._turn: list[Samples] | None = None

    def feed(self, pcm: bytes) -> None:
        """Take one frame of microphone audio (any length; an odd byte is dropped)."""
        samples = self._resample(to_samples(pcm))
        if samples.size == 0:
            return
        self._remember(samples)
        for change in self.detector.feed(samples):
            if change is Activity.STARTED:
                self._turn = list(self._recent)
                self.call.user_started_speaking()
            else:
                self._finish_turn()
        if self._turn is not None:
            self._turn.append(samples)

    def _remember(self, samples: Samples) -> None:
        self._recent.append(samples)
        keep = int(PRE_ROLL_SECONDS * RATE + self.detector.start_secs * RATE)
        while sum(s.size for s in self._recent) - self._recent[0].size > keep:
            self._recent.pop(0)

    def _finish_turn(self) -> None:
        turn, self._turn = self._turn or [], None
        self.call.user_stopped_speaking()
        audio = np.concatenate(turn) if turn else np.zeros(0, np.int16)
        self.call.spawn(self._transcribe(audio))

    async def _transcribe(self, audio: Samples) -> None:
        text = await self.stt.transcribe(audio)
        if not self.call.ended.is_set():
            self.call.user_transcript(text)
