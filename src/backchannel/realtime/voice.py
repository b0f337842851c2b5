"""The speech-to-speech model's own voice, as the call's :class:`~backchannel.voice.tts.TTS`.

With a speech-to-speech model there is nothing to synthesize: the model sends its audio
with a transcript of it. The call still works sentence by sentence (the response splits
the transcript into sentences, the output plays each one and reports what was heard), so
:class:`ModelVoice` hands the output, for each sentence of the model's, the model's audio
for it: consecutive stretches of the response's audio, cut at the sentence's share of the
transcript. Sentence edges are therefore approximate; the start of the first sentence and
the end of the last are exact. A line that is not the model's (a tool's ``request-start``
message, the first message, a ``say``) is spoken by the fallback voice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from ..clock import Clock, SystemClock
from ..voice.audio import Samples
from ..voice.tts import TTS, synthesized

#: The rate of OpenAI Realtime's ``audio/pcm`` output (and Gemini Live's).
MODEL_RATE = 24_000
_SPACE = re.compile(r"\s+")


def _squash(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


class _Take:
    """One response's speech from the model: its transcript and audio so far."""

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self.text = ""
        self.audio: list[Samples] = []
        self.samples = 0
        self.complete = False
        self.spoken_chars = 0  # transcript handed out as sentences
        self.spoken_samples = 0  # audio handed out
        self.changed = asyncio.Event()
        #: When its first audio went to the output (the call's monotonic clock).
        self.started_at: float | None = None
        #: Where each sentence handed out began: (character, sample).
        self.starts: list[tuple[int, int]] = []

    def audio_between(self, start: int, end: int) -> Samples:
        joined = np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)
        if len(self.audio) > 1:
            self.audio = [joined]
        return joined[start:end]


class ModelVoice:
    """The model's audio for its own sentences; ``fallback`` speaks every other line."""

    sample_rate = MODEL_RATE

    def __init__(self, fallback: TTS | None = None, *, clock: Clock | None = None) -> None:
        self.fallback = fallback
        self.clock = clock or SystemClock()
        #: Told when the output stops in the middle of the model's audio: the item, and
        #: about how many milliseconds of it were heard.
        self.on_cut: Callable[[str, int], None] | None = None
        self._playing: _Take | None = None
        self._takes: list[_Take] = []

    # -- fed by the model --------------------------------------------------------------

    def begin(self, item_id: str) -> None:
        """The model has started an audio answer (one output item)."""
        self._takes.append(_Take(item_id))
        del self._takes[:-4]  # only the latest few can still be playing

    def add_text(self, item_id: str, delta: str) -> None:
        if (take := self._find(item_id)) is not None:
            take.text += delta
            take.changed.set()

    def add_audio(self, item_id: str, samples: Samples) -> None:
        if (take := self._find(item_id)) is not None and samples.size:
            take.audio.append(samples)
            take.samples += samples.size
            take.changed.set()

    def finish(self, item_id: str) -> None:
        """The item's audio is complete (done, cancelled or failed)."""
        if (take := self._find(item_id)) is not None:
            take.complete = True
            take.changed.set()

    def abandon(self, item_id: str) -> None:
        """The answer was cut: what it had not yet said is never said."""
        if (take := self._find(item_id)) is not None:
            take.spoken_chars = len(take.text)
            take.complete = True
            take.changed.set()

    def abandon_all(self) -> None:
        """The session is gone: no answer of it goes on."""
        for take in self._takes:
            if not take.complete:  # a whole answer still playing here plays on
                self.abandon(take.item_id)
        self._playing = None  # its items are not the new session's to truncate

    def played_ms(self, item_id: str) -> int:
        """About how much of the item's audio the listener has heard: the output plays
        in real time from the moment its first audio went out."""
        take = self._find(item_id)
        if take is None or take.started_at is None:
            return 0
        heard = int((self.clock.monotonic() - take.started_at) * 1000)
        # Not more than went to the output, however long ago it started.
        return max(0, min(heard, take.spoken_samples * 1000 // MODEL_RATE))

    def stopped(self) -> None:
        """The output stopped mid-sentence (a barge-in): if the model's answer was
        playing, the model is told how much of it was heard."""
        take, self._playing = self._playing, None
        if take is not None:
            if self.on_cut is not None:
                self.on_cut(take.item_id, self.played_ms(take.item_id))
            self.abandon(take.item_id)

    def clearing(self, clear: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """The transport's ``clear`` (called by the output after a cut), telling this
        voice first."""

        async def both() -> None:
            self.stopped()
            await clear()

        return both

    def _find(self, item_id: str) -> _Take | None:
        return next((t for t in reversed(self._takes) if t.item_id == item_id), None)

    # -- the TTS side ------------------------------------------------------------------

    async def synthesize(self, text: str) -> AsyncIterator[Samples]:
        take = self._playing = self._owner(text)
        if take is None:
            replay = self._replay(text)
            if replay is not None:  # said again after a cough: in the model's voice
                yield replay
                return
            async for chunk in self._fallback(text):
                yield chunk
            return
        take.starts.append((take.spoken_chars, take.spoken_samples))
        take.spoken_chars = end = take.spoken_chars + len(text)
        async for chunk in self._share(take, end):
            yield chunk

    def _replay(self, text: str) -> Samples | None:
        """The model's audio again for words of an answer that was cut (a false
        interruption resumes the cut sentence), from the start of the sentence."""
        said = _squash(text)
        if not said:
            return None
        for take in reversed(self._takes):
            for chars, samples in reversed(take.starts):
                if _squash(take.text[chars:]).startswith(said):
                    whole = len(take.text.rstrip()) or 1
                    end = min(whole, chars + len(text.strip()))
                    upto = take.samples if end >= whole else int(take.samples * end / whole)
                    return take.audio_between(samples, upto)
        return None

    async def _share(self, take: _Take, end: int) -> AsyncIterator[Samples]:
        """The take's audio for the sentence that ends at ``end`` in its transcript."""
        yielded = False
        while True:
            take.changed.clear()
            if take.complete:
                # The last sentence takes the rest; an earlier one, its share.
                said = len(take.text.rstrip())  # trailing space carries no audio
                share = 1.0 if end >= said else end / said
            else:
                share = end / max(end + 1, len(take.text))
            upto = int(take.samples * share)
            if upto > take.spoken_samples:
                chunk = take.audio_between(take.spoken_samples, upto)
                take.spoken_samples, yielded = upto, True
                if take.started_at is None:
                    take.started_at = self.clock.monotonic()
                yield chunk
            if take.complete or (yielded and len(take.text) > end):
                return  # what is left is the next sentence's
            await take.changed.wait()

    def _owner(self, text: str) -> _Take | None:
        """The take whose unspoken transcript starts with this sentence, if any."""
        said = _squash(text)
        if not said:
            return None
        for take in reversed(self._takes):  # the latest answer first
            rest = _squash(take.text[take.spoken_chars :])
            if rest.startswith(said):
                # Whitespace between sentences belongs to the sentence before.
                while take.text[take.spoken_chars : take.spoken_chars + 1].isspace():
                    take.spoken_chars += 1
                return take
        return None

    async def _fallback(self, text: str) -> AsyncIterator[Samples]:
        if self.fallback is not None:
            async for chunk in synthesized(self.fallback, text, MODEL_RATE):
                yield chunk
