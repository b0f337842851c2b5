"""PCM16 mono audio: conversions, resampling (soxr) and fixed-size frames."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

Samples = npt.NDArray[np.int16]

#: The engine's internal rate: what VAD and STT take.
RATE = 16_000
FRAME_MS = 20


def to_samples(pcm: bytes) -> Samples:
    """Little-endian PCM16 bytes as samples; a trailing odd byte is dropped."""
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.int16)


def to_float(samples: Samples) -> npt.NDArray[np.float32]:
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def resample(samples: Samples, from_rate: int, to_rate: int) -> Samples:
    """Resample a whole clip (soxr, high quality)."""
    if from_rate == to_rate or samples.size == 0:
        return samples
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype=np.int16)


class StreamResampler:
    """Resample a stream chunk by chunk without clicks at the chunk edges."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.passthrough = from_rate == to_rate
        self._stream = (
            None
            if self.passthrough
            else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality="HQ")
        )

    def __call__(self, samples: Samples, *, last: bool = False) -> Samples:
        if self._stream is None:
            return samples
        return np.asarray(self._stream.resample_chunk(samples, last=last), dtype=np.int16)


def frame_bytes(rate: int, ms: int = FRAME_MS) -> int:
    """Bytes in one PCM16 mono frame of ``ms`` milliseconds."""
    return rate * ms // 1000 * 2


def rms_dbfs(samples: Samples) -> float:
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return float(20.0 * np.log10(max(rms, 1e-9) / 32768.0))
