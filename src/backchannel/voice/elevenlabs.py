"""ElevenLabs streaming text-to-speech through the official ``elevenlabs`` SDK.

Each sentence is one request to the streaming endpoint asking for raw PCM16 at a rate
ElevenLabs offers; chunks are handed on as they arrive, so playback starts after the
first chunk rather than after the whole sentence. The text of the sentence before is
sent as ``previous_text`` so the intonation carries across the sentence boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np

from ..errors import ProviderError
from .audio import Samples

#: PCM rates the streaming endpoint offers, as ``output_format=pcm_<rate>``.
RATES = (16_000, 22_050, 24_000, 44_100)


class ElevenLabsTTS:
    def __init__(
        self,
        api_key: str,
        voice_id: str,
        *,
        model: str = "eleven_flash_v2_5",
        sample_rate: int = 16_000,
        base_url: str | None = None,
        timeout: float = 20.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        from elevenlabs.client import AsyncElevenLabs

        if sample_rate not in RATES:
            raise ProviderError(
                f"ElevenLabs streams PCM at {RATES}, not {sample_rate}", code="invalid_config"
            )
        # A server shares one connection pool between its calls' voices.
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self.client: Any = AsyncElevenLabs(
            api_key=api_key, base_url=base_url, httpx_client=self._http
        )
        self.voice_id = voice_id
        self.model = model
        self.sample_rate = sample_rate
        self._previous = ""

    async def synthesize(self, text: str) -> AsyncIterator[Samples]:
        carry = b""  # an odd byte split across two chunks
        try:
            context = {"previous_text": self._previous} if self._previous else {}
            stream = self.client.text_to_speech.stream(
                self.voice_id,
                text=text,
                model_id=self.model,
                output_format=f"pcm_{self.sample_rate}",
                **context,
            )
            async for chunk in stream:
                data, carry = _whole_samples(carry + chunk)
                if data:
                    yield np.frombuffer(data, dtype="<i2").astype(np.int16)
        except ProviderError:
            raise
        except Exception as exc:  # the SDK's ApiError, httpx's transport errors
            raise ProviderError(f"ElevenLabs speech failed: {exc}", code="tts_error") from exc
        self._previous = text

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def _whole_samples(data: bytes) -> tuple[bytes, bytes]:
    cut = len(data) - len(data) % 2
    return data[:cut], data[cut:]
