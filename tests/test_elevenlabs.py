"""ElevenLabsTTS through the official SDK against a local server speaking ElevenLabs'
streaming text-to-speech endpoint."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from backchannel import Utterance
from backchannel.errors import ProviderError
from backchannel.voice.elevenlabs import ElevenLabsTTS
from backchannel.voice.output import AudioOutput
from backchannel.voice.tts import spoken

from .fake_vendors import KEY, fake_vendors

pytestmark = pytest.mark.anyio


async def test_streams_pcm_chunks_at_the_asked_rate() -> None:
    async with fake_vendors() as (vendors, url):
        tts = ElevenLabsTTS(KEY, "voice-1", sample_rate=22_050, base_url=url)
        chunks = [c async for c in tts.synthesize("Your order is out for delivery.")]
        await spoken(tts, "It arrives this afternoon.")
        await tts.aclose()
    assert len(chunks) > 1, "audio arrives in chunks, not as one blob"
    audio = np.concatenate(chunks)
    assert audio.size == int(6 * 0.2 * 22_050)  # the fake's 200 ms per word
    first, second = vendors.speech_requests
    assert first["voice_id"] == "voice-1"
    assert first["query"]["output_format"] == "pcm_22050"
    assert first["body"]["model_id"] == "eleven_flash_v2_5"
    assert "previous_text" not in first["body"]
    assert second["body"]["previous_text"] == "Your order is out for delivery."


async def test_plays_through_audio_output_while_still_streaming() -> None:
    frames: list[bytes] = []

    async def send(frame: bytes) -> None:
        frames.append(frame)

    async with fake_vendors() as (_vendors, url):
        tts = ElevenLabsTTS(KEY, "voice-1", sample_rate=24_000, base_url=url)
        output = AudioOutput(tts, send, rate=16_000)  # real time: 1 s of speech
        task = asyncio.ensure_future(output.run())
        output.speak(Utterance(1, "one two three four five", 1))
        for _ in range(200):
            if len(frames) >= 50:  # 1 s at 20 ms frames: the whole sentence
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await tts.aclose()
    assert len(frames) == 50
    assert {len(f) for f in frames} == {640}


async def test_a_wrong_key_is_a_provider_error_with_a_code() -> None:
    async with fake_vendors() as (_vendors, url):
        tts = ElevenLabsTTS("wrong", "voice-1", base_url=url)
        with pytest.raises(ProviderError) as caught:
            await spoken(tts, "Hello.")
        await tts.aclose()
    assert caught.value.code == "tts_error"


def test_a_rate_elevenlabs_does_not_offer_is_refused() -> None:
    with pytest.raises(ProviderError, match="streams PCM"):
        ElevenLabsTTS(KEY, "v", sample_rate=8_000)
