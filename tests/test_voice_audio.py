from __future__ import annotations

import numpy as np

from backchannel.voice.audio import StreamResampler, frame_bytes, resample, rms_dbfs, to_samples


def test_pcm_bytes_and_frames() -> None:
    assert to_samples(b"\x01\x00\xff\xff\x05").tolist() == [1, -1]
    assert frame_bytes(16_000) == 640
    assert frame_bytes(8_000) == 320
    assert rms_dbfs(np.zeros(10, dtype=np.int16)) < -100
    assert -4 < rms_dbfs(np.full(100, 32767, dtype=np.int16)) < 1


def test_resampling_keeps_duration_and_pitch() -> None:
    t = np.arange(22_050) / 22_050
    tone = (np.sin(2 * np.pi * 440 * t) * 10_000).astype(np.int16)
    out = resample(tone, 22_050, 16_000)
    assert abs(out.size - 16_000) <= 2
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2, "still 440 Hz"


def test_stream_resampler_matches_the_whole_clip() -> None:
    rng = np.random.default_rng(0)
    clip = (rng.normal(0, 3000, 48_000)).astype(np.int16)
    stream = StreamResampler(48_000, 16_000)
    parts = [stream(clip[i : i + 960]) for i in range(0, clip.size, 960)]
    parts.append(stream(np.zeros(0, dtype=np.int16), last=True))
    joined = np.concatenate(parts)
    assert abs(joined.size - 16_000) <= 2
    assert StreamResampler(16_000, 16_000)(clip[:10]) is not None
