"""Assistant speech as audio: TTS per utterance, paced 20 ms frames, instant stop.

:class:`AudioOutput` is the :class:`~backchannel.speech.SpeechOutput` of voice calls. It
synthesizes each queued sentence, resamples it to the rate the listener asked for, and
sends it frame by frame on the clock, so what was *sent* is what was *heard* (up to the
transport's buffer, which ``clear`` empties). ``stop`` takes effect before the next frame
and reports the share of the sentence that was played.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

from ..clock import Clock, SystemClock
from ..speech import Cut, SpeechListener, Utterance, UtteranceQueue
from .audio import FRAME_MS, Samples, resample
from .tts import TTS

SendFrame = Callable[[bytes], Awaitable[None]]


class AudioOutput:
    def __init__(
        self,
        tts: TTS,
        send: SendFrame,
        *,
        rate: int = 16_000,
        clock: Clock | None = None,
        clear: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.tts = tts
        self.send = send
        self.rate = rate
        self.clock = clock or SystemClock()
        self.clear = clear
        self.muted = False
        self.frames_sent = 0
        self._listener: SpeechListener | None = None
        self._queue = UtteranceQueue()
        self._playing: Utterance | None = None
        self._played = 0
        self._total = 0
        self._stopped = False
        self._carry: Samples = np.zeros(0, np.int16)

    def attach(self, listener: SpeechListener) -> None:
        self._listener = listener

    def speak(self, utterance: Utterance) -> None:
        self._queue.push(utterance)

    def stop(self) -> Cut | None:
        """Stop before the next frame; drop the queue; ask the transport to clear."""
        self._queue.clear()
        self._carry = np.zeros(0, np.int16)
        playing, self._playing = self._playing, None
        self._stopped = True
        if playing is None:
            return None
        share = self._played / self._total if self._total else 0.0
        return Cut(playing.id, int(len(playing.text) * min(1.0, share)))

    async def run(self) -> None:
        frame = self.rate * FRAME_MS // 1000
        while True:
            utterance = await self._queue.next()
            self._stopped = False
            audio = await self._synthesize(utterance.text)
            if self._stopped:  # cut while synthesizing: never started
                continue
            own = audio.size
            if self._carry.size:  # the last partial frame of the sentence before
                audio = np.concatenate([self._carry, audio])
                self._carry = np.zeros(0, np.int16)
            self._playing, self._played, self._total = utterance, 0, own
            if self._listener:
                self._listener.speech_started(utterance.id)
            started = self.clock.monotonic()
            offset = audio.size - own
            for i in range(0, audio.size, frame):
                if self._playing is not utterance:
                    break
                chunk = audio[i : i + frame]
                if chunk.size < frame:
                    if self._queue:
                        # Another sentence follows: hand it the rest instead of padding,
                        # so consecutive sentences play with no silence between them.
                        self._carry = chunk
                        self._played = own
                        break
                    chunk = np.concatenate([chunk, np.zeros(frame - chunk.size, np.int16)])
                await self.send((np.zeros_like(chunk) if self.muted else chunk).tobytes())
                self.frames_sent += 1
                self._played = max(0, min(own, i + frame - offset))
                # Pace on the clock from the start, so frames never drift or burst.
                due = started + (i // frame + 1) * FRAME_MS / 1000
                await self.clock.sleep(due - self.clock.monotonic())
            if self._playing is utterance:  # played to the end (or handed on its tail)
                self._playing = None
                if self._listener:
                    self._listener.speech_finished(utterance.id)
                continue
            self._carry = np.zeros(0, np.int16)
            if self.clear is not None:
                await self.clear()

    async def _synthesize(self, text: str) -> Samples:
        audio = await self.tts.synthesize(text.strip())
        return resample(audio, self.tts.sample_rate, self.rate)
