"""DeepgramSTT through the official SDK against a local server speaking Deepgram's
live-transcription protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from backchannel.errors import ProviderError
from backchannel.voice import deepgram
from backchannel.voice.audio import Samples
from backchannel.voice.deepgram import DeepgramSTT

from .fake_vendors import KEY, fake_vendors

pytestmark = pytest.mark.anyio


async def spoken_live(seconds: float, sent: list[float]) -> AsyncIterator[Samples]:
    """``seconds`` of audio in 20 ms frames, at real-time pace."""
    loop = asyncio.get_running_loop()
    for _ in range(int(seconds / 0.02)):
        sent.append(loop.time())
        yield np.full(320, 100, np.int16)
        await asyncio.sleep(0.02)


async def test_streams_the_turn_and_joins_the_final_results() -> None:
    async with fake_vendors() as (vendors, url):
        vendors.words = ["check", "on", "my", "order", "four", "four", "one", "seven"]
        stt = DeepgramSTT(KEY, model="nova-3", base_url=url)
        sent: list[float] = []
        text = await stt.transcribe(spoken_live(1.0, sent))
    # 4 words came while the audio streamed (one per 250 ms), the rest with the flush;
    # the interim results in between were not taken.
    assert text == "check on my order four four one seven"
    assert vendors.audio_bytes == [50 * 640]
    assert vendors.control == ["Finalize", "CloseStream"]
    query = vendors.queries[0]
    assert query["model"] == ["nova-3"]
    assert query["encoding"] == ["linear16"]
    assert query["sample_rate"] == ["16000"]
    assert query["interim_results"] == ["false"]


async def test_the_transcribers_keywords_and_key_terms_go_to_deepgram() -> None:
    """As Vapi's Deepgram transcriber sends them: repeated query parameters, each word
    with its intensifier; none at all when the assistant names none."""
    async with fake_vendors() as (vendors, url):
        vendors.words = ["brake", "pads"]
        terms = ["brake pads", "tune-up"]
        stt = DeepgramSTT(KEY, base_url=url, keywords=["Shimano:2"], keyterm=terms)
        assert await stt.transcribe(spoken_live(0.1, [])) == "brake pads"
        await DeepgramSTT(KEY, base_url=url).transcribe(spoken_live(0.1, []))
    assert vendors.queries[0]["keyterm"] == ["brake pads", "tune-up"]
    assert vendors.queries[0]["keywords"] == ["Shimano:2"]
    assert "keyterm" not in vendors.queries[1] and "keywords" not in vendors.queries[1]


async def test_a_turn_of_silence_is_an_empty_transcript() -> None:
    async with fake_vendors() as (_vendors, url):
        stt = DeepgramSTT(KEY, base_url=url)
        assert await stt.transcribe(spoken_live(0.1, [])) == ""


async def test_a_wrong_key_is_a_provider_error_with_a_code() -> None:
    async with fake_vendors() as (_vendors, url):
        stt = DeepgramSTT("wrong", base_url=url)
        with pytest.raises(ProviderError) as caught:
            await stt.transcribe(spoken_live(0.1, []))
    assert caught.value.code == "stt_error"


async def test_no_final_transcript_in_time_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deepgram, "FINALIZE_TIMEOUT", 0.2)
    async with fake_vendors() as (vendors, url):
        vendors.finalize_delay = 5.0
        stt = DeepgramSTT(KEY, base_url=url)
        with pytest.raises(ProviderError) as caught:
            await stt.transcribe(spoken_live(0.1, []))
    assert caught.value.code == "stt_timeout"


async def test_an_unreachable_service_is_a_provider_error() -> None:
    stt = DeepgramSTT(KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(ProviderError, match="Deepgram"):
        await stt.transcribe(spoken_live(0.1, []))
