"""Assistant speech as audio: TTS per utterance, paced 20 ms frames, instant stop.

:class:`AudioOutput` is the :class:`~backchannel.speech.SpeechOutput` of voice calls. It
synthesizes each queued sentence, resamples it to the rate the listener asked for, and
sends it frame by frame on the clock, so what was *sent* is what was *heard* (up to the
transport's buffer, which ``clear`` empties). ``stop`` takes effect before the next frame
and reports the share of the sentence that was played.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from ..clock import Clock, SystemClock
from ..errors import BackchannelError
from ..speech import Cut, SpeechListener, Utterance, UtteranceQueue
from .audio import FRAME_MS, Samples
from .tts import TTS, synthesized

SendFrame = Callable[[bytes], Awaitable[None]]
CHARS_PER_SECOND = 14.0
log = logging.getLogger("backchannel.voice")


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
        self.clause_first = True
        self.frames_sent = 0
        self._listener: SpeechListener | None = None
        self._queue = UtteranceQueue()
        self._playing: Utterance | None = None
        self._played = 0
        self._total = 0
        self._complete = False
        self._stopped = False
        self._hold_until = 0.0  # no frame goes out before (a barge-in's backoff)
        self._carry: Samples = np.zeros(0, np.int16)
        #: The utterance being synthesized or played, whether a frame of it has gone
        #: out, and whether it was dropped before that.
        self._current: int | None = None
        self._began = False
        self._skip = False

    def attach(self, listener: SpeechListener) -> None:
        self._listener = listener

    def speak(self, utterance: Utterance) -> None:
        self._queue.push(utterance)

    def drop(self, utterance_id: int) -> None:
        """Out of the queue; or, if it is the one being synthesized and not a frame of it
        has played, skipped (it started nothing the listener could hear)."""
        self._queue.remove(utterance_id)
        if self._current == utterance_id and not self._began:
            self._skip = True

    def stop(self, *, hold: float = 0.0) -> Cut | None:
        """Stop before the next frame; drop the queue; ask the transport to clear. The
        next sentence's first frame waits ``hold`` seconds; its synthesis does not."""
        self._hold_until = max(self._hold_until, self.clock.monotonic() + hold)
        self._queue.clear()
        self._carry = np.zeros(0, np.int16)
        playing, self._playing = self._playing, None
        self._stopped = True
        if playing is None:
            return None
        return Cut(playing.id, int(len(playing.text) * self._heard_share(playing.text)))

    def _heard_share(self, text: str) -> float:
        """How much of the sentence was played. While the TTS is still streaming, the
        sentence's length is estimated from its text (about 14 characters a second)."""
        total = self._total
        if not self._complete:
            total = max(total, int(len(text) / CHARS_PER_SECOND * self.rate))
        return min(1.0, self._played / total) if total else 0.0

    async def run(self) -> None:
        while True:
            utterance = await self._queue.next()
            self._stopped = False
            cut = await self._play(utterance)
            if cut:
                self._carry = np.zeros(0, np.int16)
                if self.clear is not None:
                    await self.clear()

    async def _play(self, utterance: Utterance) -> bool:
        """Play one sentence while its audio is still streaming in; True if it was cut
        while playing. The TTS is read by a task of its own, so the sentence's length is
        known as soon as the TTS has finished, not when playback reaches the end."""
        self._played, self._total, self._complete = 0, 0, False
        self._current, self._began, self._skip = utterance.id, False, False
        audio: asyncio.Queue[Samples | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:
            fetch = group.create_task(self._fetch(utterance.text, audio))
            try:
                return await self._pace(utterance, audio)
            finally:
                fetch.cancel()

    async def _fetch(self, text: str, audio: asyncio.Queue[Samples | None]) -> None:
        try:
            async for chunk in self._audio(text):
                self._total += chunk.size
                audio.put_nowait(chunk)
        except BackchannelError as exc:
            # A failed sentence is skipped, not fatal: the call goes on.
            log.error("TTS failed for %r: %s", text[:60], exc)
        finally:
            self._complete = True
            audio.put_nowait(None)

    async def _pace(self, utterance: Utterance, audio: asyncio.Queue[Samples | None]) -> bool:
        if (wait := self._hold_until - self.clock.monotonic()) > 0:
            await self.clock.sleep(wait)  # a barge-in's backoff; the TTS goes on meanwhile
        frame = self.rate * FRAME_MS // 1000
        pending, self._carry = self._carry, np.zeros(0, np.int16)
        offset = pending.size  # the head of ``pending`` is the sentence before's tail
        began, sent, started = False, 0, 0.0
        while (chunk := await audio.get()) is not None:
            if self._stopped:
                return began
            if self._skip and not began:
                self._carry = pending  # the sentence before's tail goes to the next
                return False
            pending = np.concatenate([pending, chunk])
            if not began:
                began, self._playing, started = True, utterance, self.clock.monotonic()
                self._began = True
                if self._listener:
                    self._listener.speech_started(utterance.id)
            elif self.clock.monotonic() > started + (sent + 1) * FRAME_MS / 1000:
                # The TTS fell behind real time: pace on from now instead of bursting.
                started = self.clock.monotonic() - sent * FRAME_MS / 1000
            while pending.size >= frame:
                if self._stopped:
                    return True
                await self._send(pending[:frame])
                pending, sent = pending[frame:], sent + 1
                self._played = max(0, sent * frame - offset)
                # Pace on the clock from the start, so frames never drift or burst.
                await self.clock.sleep(started + sent * FRAME_MS / 1000 - self.clock.monotonic())
        if self._stopped:
            return began
        if self._skip and not began:
            self._carry = pending
            return False
        if not began:  # no audio at all: the sentence is over at once
            self._playing = utterance
            if self._listener:
                self._listener.speech_started(utterance.id)
        if pending.size and self._queue:
            # Another sentence follows: hand it the rest instead of padding, so
            # consecutive sentences play with no silence between them.
            self._carry = pending
        elif pending.size:
            await self._send(np.concatenate([pending, np.zeros(frame - pending.size, np.int16)]))
        self._played, self._playing = self._total, None
        if self._listener:
            self._listener.speech_finished(utterance.id)
        return False

    async def _send(self, chunk: Samples) -> None:
        await self.send((np.zeros_like(chunk) if self.muted else chunk).tobytes())
        self.frames_sent += 1

    def _audio(self, text: str) -> AsyncIterator[Samples]:
        """The sentence's audio at the listener's rate, chunk by chunk."""
        return synthesized(self.tts, text.strip(), self.rate)
