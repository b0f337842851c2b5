"""G.711 µ-law, the phone network's 8-bit audio, to and from PCM16 (numpy, table-driven).

The standard library's ``audioop`` did this until it was deprecated (3.11) and removed
(3.13); the codec is a few lines of arithmetic, so it is ours.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..voice.audio import Samples

_BIAS = 0x84
_CLIP = 32635


def _decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


_DECODE = _decode_table()


def decode(data: bytes) -> Samples:
    """µ-law bytes → PCM16 samples (one sample a byte)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def encode(samples: Samples) -> bytes:
    """PCM16 samples → µ-law bytes."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    codes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return bytes(codes.tobytes())
