"""G.711 µ-law against the standard's fixed points and its quantization bound."""

from __future__ import annotations

import numpy as np

from backchannel.phone import mulaw


def test_the_standards_fixed_points() -> None:
    samples = np.array([0, -1, 32767, -32768], np.int16)
    assert mulaw.encode(samples) == bytes([0xFF, 0x7F, 0x80, 0x00])
    assert mulaw.decode(bytes([0xFF, 0x7F, 0x80, 0x00])).tolist() == [0, 0, 32124, -32124]


def test_round_trip_error_stays_within_one_quantization_step() -> None:
    x = np.arange(-32768, 32768, 3, dtype=np.int16)
    y = mulaw.decode(mulaw.encode(x)).astype(np.int32)
    err = np.abs(y - x.astype(np.int32))
    # Segments double in size; the step is 1/16 of the segment, so error ≤ |x| / 16 + 8.
    assert (err <= np.abs(x.astype(np.int32)) / 16 + 8).all()


def test_every_code_decodes_and_encodes_back_to_itself() -> None:
    codes = bytes(range(256))
    back = mulaw.encode(mulaw.decode(codes))
    # 0x7F and 0xFF are both zero; everything else is its own code.
    assert [a for a, b in zip(codes, back, strict=True) if a != b] == [0x7F]
