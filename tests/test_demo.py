"""The demo as a whole call, fully offline: the server on Whisper, Piper and Silero, the
order desk's tool server, and a caller speaking synthesized audio over the WebSocket.

With the real local LLM (Qwen2.5 1.5B through llama.cpp) this is the end-to-end proof:
the caller's spoken question becomes an async tool call, and the announcement of its
result, cut out of the recorded call audio and transcribed back with Whisper, says
what the tool returned.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from backchannel.demo.feel import STATUS_WORDS
from backchannel.demo.run import DemoResult, run_demo
from backchannel.voice.audio import RATE
from backchannel.voice.stt import WhisperSTT, clip

pytestmark = pytest.mark.anyio


def check_the_call(result: DemoResult) -> float:
    """The tool call's life in the ledger; returns when its result arrived (timeline s)."""
    [order] = result.tool_calls
    assert order["name"] == "check_order"
    assert "4417" in str(order["arguments"]["order_id"]).replace(",", "")
    assert order["state"] == "succeeded"
    assert order["result"]["status"] == "out for delivery"
    assert order["resolvedAt"] <= order["deliveredAt"] <= order["spokenAt"]
    assert order["late"] is False
    return float(order["resolvedAt"] - result.wall0)


def assistant_audio_after(result: DemoResult, at: float) -> np.ndarray:
    frames = [np.frombuffer(f, dtype="<i2") for t, f in result.heard if t >= at]
    return np.concatenate(frames).astype(np.int16)


async def test_offline_call_with_the_local_llm_announces_the_result(
    tmp_path: Path, whisper: WhisperSTT
) -> None:
    lines: list[str] = []
    result = await run_demo(
        workdir=tmp_path,
        wav=tmp_path / "call.wav",
        llm="local",
        lookup_seconds=7.0,
        timeline=lambda at, who, text: lines.append(f"{at:6.2f} {who} {text}"),
    )
    arrived = check_the_call(result)
    # What the assistant said after the result arrived, heard back through Whisper.
    heard = await whisper.transcribe(clip(assistant_audio_after(result, arrived)))
    assert any(w in heard.lower() for w in STATUS_WORDS), (heard, lines)
    # The call's audio, both sides, is in the WAV: caller left, assistant right.
    with wave.open(str(result.wav)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, RATE)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    assert abs(stereo[:, 0]).max() > 1000 and abs(stereo[:, 1]).max() > 1000
    # On one timeline: the greeting (right) comes before the caller's first words (left).
    first_loud = [int(np.flatnonzero(abs(stereo[:, side]) > 1000)[0]) for side in (0, 1)]
    assert first_loud[1] < first_loud[0]
    assert stereo.shape[0] / RATE == pytest.approx(result.seconds)
