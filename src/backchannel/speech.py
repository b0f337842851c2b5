"""Assistant speech output: what the engine hands text to, and what tells it back.

The engine queues :class:`Utterance` values (one sentence each) on a
:class:`SpeechOutput`; the output reports back when each started, finished or was cut,
through the :class:`SpeechListener` it was attached to. ``stop`` is synchronous and says
how much of the playing utterance was heard, so barge-in can cut the history at once.

:class:`PacedSpeech` plays utterances for a duration taken from the clock, standing in for
TTS plus a transport's playback; with zero duration it is the text-mode output.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class Utterance:
    id: int
    text: str
    response_id: int


@dataclass(frozen=True, slots=True)
class Cut:
    utterance_id: int
    heard_chars: int


class SpeechListener(Protocol):
    def speech_started(self, utterance_id: int) -> None: ...

    def speech_finished(self, utterance_id: int) -> None: ...


class SpeechOutput(Protocol):
    #: While true the output plays silence in place of speech (``mute-assistant``).
    muted: bool
    #: Whether a response's first clause is worth sending alone: for audio, whose
    #: synthesis must finish a piece before it plays, so a short first piece plays sooner.
    clause_first: bool

    def attach(self, listener: SpeechListener) -> None: ...

    def speak(self, utterance: Utterance) -> None:
        """Queue an utterance for playback after those already queued."""
        ...

    def stop(self, *, hold: float = 0.0) -> Cut | None:
        """Stop now and drop the queue; the cut of the utterance that was playing, if any.
        Nothing starts playing again for ``hold`` seconds (``backoffSeconds`` after a
        barge-in); what is queued meanwhile waits, and its speech is prepared."""
        ...

    def drop(self, utterance_id: int) -> None:
        """Take a queued utterance out of the queue (one playing is not touched)."""
        ...

    async def run(self) -> None:
        """Play the queue until cancelled; runs in the call's task group."""
        ...


class UtteranceQueue:
    """Sentences waiting to be played, in order; ``next`` waits for one to arrive."""

    def __init__(self) -> None:
        self._items: deque[Utterance] = deque()
        self._wake = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self._items)

    def push(self, utterance: Utterance) -> None:
        self._items.append(utterance)
        self._wake.set()

    def clear(self) -> None:
        self._items.clear()

    def remove(self, utterance_id: int) -> None:
        self._items = deque(u for u in self._items if u.id != utterance_id)

    async def next(self) -> Utterance:
        while not self._items:
            self._wake.clear()
            await self._wake.wait()
        return self._items.popleft()


def words_duration(seconds_per_word: float) -> Callable[[str], float]:
    return lambda text: seconds_per_word * max(1, len(text.split()))


class PacedSpeech:
    """Plays each utterance for ``duration(text)`` seconds of the given clock."""

    def __init__(
        self,
        clock: Clock | None = None,
        duration: Callable[[str], float] = lambda _text: 0.0,
    ) -> None:
        self.clock = clock or SystemClock()
        self.duration = duration
        self._listener: SpeechListener | None = None
        self._queue = UtteranceQueue()
        self._playing: Utterance | None = None
        self._started_at = 0.0
        self._player: asyncio.Task[None] | None = None
        self._hold_until = 0.0
        self._held: Utterance | None = None  # taken from the queue, waiting out a hold
        self.played: list[tuple[Utterance, float, float, int]] = []
        self.muted = False
        self.clause_first = False

    def attach(self, listener: SpeechListener) -> None:
        self._listener = listener

    def speak(self, utterance: Utterance) -> None:
        self._queue.push(utterance)

    def drop(self, utterance_id: int) -> None:
        self._queue.remove(utterance_id)
        if self._held is not None and self._held.id == utterance_id:
            self._held = None

    def stop(self, *, hold: float = 0.0) -> Cut | None:
        self._queue.clear()
        self._held = None
        self._hold_until = max(self._hold_until, self.clock.monotonic() + hold)
        playing, self._playing = self._playing, None
        if playing is None:
            return None
        if self._player is not None:
            self._player.cancel()
        elapsed = self.clock.monotonic() - self._started_at
        total = self.duration(playing.text)
        heard = (
            len(playing.text) if total <= 0 else int(len(playing.text) * min(1.0, elapsed / total))
        )
        self.played.append((playing, self._started_at, self.clock.monotonic(), heard))
        return Cut(playing.id, heard)

    async def run(self) -> None:
        while True:
            utterance = await self._queue.next()
            if (wait := self._hold_until - self.clock.monotonic()) > 0:
                self._held = utterance
                await self.clock.sleep(wait)
                if self._held is not utterance:
                    continue  # stopped or dropped meanwhile
                self._held = None
            self._playing = utterance
            self._started_at = self.clock.monotonic()
            if self._listener:
                self._listener.speech_started(utterance.id)
            self._player = asyncio.ensure_future(self.clock.sleep(self.duration(utterance.text)))
            try:
                await self._player
            except asyncio.CancelledError:
                if self._playing is not None:  # cancelled from outside, not by stop()
                    raise
                continue
            finally:
                self._player = None
            self._playing = None
            self.played.append(
                (utterance, self._started_at, self.clock.monotonic(), len(utterance.text))
            )
            if self._listener:
                self._listener.speech_finished(utterance.id)
