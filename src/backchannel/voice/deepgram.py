"""Deepgram streaming speech-to-text through the official ``deepgram-sdk``.

Each user turn opens one live-transcription socket when the user starts speaking; the
turn's audio goes out as it arrives, so by the time the user stops, Deepgram has
already transcribed nearly all of it. At the end of the turn a ``Finalize`` flushes the
rest, and the final results (``is_final``) up to the one answering the flush
(``from_finalize``) make the transcript. Interim results are not asked for.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterable, Sequence
from typing import Any

from ..errors import ProviderError
from .audio import RATE, Samples

#: How long the final transcript may take once the turn's audio has ended.
FINALIZE_TIMEOUT = 5.0


def _client(api_key: str, base_url: str | None) -> Any:
    # The SDK reaches for websockets' deprecated legacy client at import; the warning
    # is theirs to fix and says nothing about this code.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
        from deepgram.listen.v1 import client as _listen  # noqa: F401

    if base_url is None:
        return AsyncDeepgramClient(api_key=api_key)
    ws = base_url.replace("https://", "wss://").replace("http://", "ws://")
    environment = DeepgramClientEnvironment(
        base=base_url, production=ws, agent=ws, agent_rest=base_url
    )
    return AsyncDeepgramClient(api_key=api_key, environment=environment)


class DeepgramSTT:
    repeatable = False  # a streaming service: each turn's audio goes to it once

    def __init__(
        self,
        api_key: str,
        *,
        model: str = "nova-3",
        language: str = "en",
        base_url: str | None = None,
        keywords: Sequence[str] = (),
        keyterm: Sequence[str] = (),
    ) -> None:
        self.client = _client(api_key, base_url)
        self.model = model
        self.language = language
        #: Boosted words and key terms, as the assistant's transcriber names them.
        self.keywords, self.keyterm = list(keywords), list(keyterm)

    async def transcribe(self, audio: AsyncIterable[Samples], *, listening: bool = False) -> str:
        try:
            async with self.client.listen.v1.connect(
                model=self.model,
                language=self.language,
                encoding="linear16",
                sample_rate=str(RATE),
                channels="1",
                interim_results="false",
                punctuate="true",
                smart_format="true",
                keywords=self.keywords or None,
                keyterm=self.keyterm or None,
            ) as socket:
                # No limit while the user talks; FINALIZE_TIMEOUT once the turn is over.
                async with asyncio.timeout(None) as deadline, asyncio.TaskGroup() as group:
                    group.create_task(_send(socket, audio, deadline))
                    text = await _receive(socket)
                await socket.send_close_stream()
                return text
        except Exception as exc:
            raise _provider_error(exc) from None


def _provider_error(exc: BaseException) -> ProviderError:
    while isinstance(exc, BaseExceptionGroup):  # out of the task group
        exc = exc.exceptions[0]
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TimeoutError):
        return ProviderError(
            f"Deepgram sent no final transcript within {FINALIZE_TIMEOUT} s", code="stt_timeout"
        )
    return ProviderError(f"Deepgram transcription failed: {exc!r}", code="stt_error")


async def _send(socket: Any, audio: AsyncIterable[Samples], deadline: asyncio.Timeout) -> None:
    async for samples in audio:
        await socket.send_media(samples.astype("<i2").tobytes())
    await socket.send_finalize()
    deadline.reschedule(asyncio.get_running_loop().time() + FINALIZE_TIMEOUT)


async def _receive(socket: Any) -> str:
    """Final transcripts until the one answering our Finalize."""
    finals: list[str] = []
    while True:
        message = await socket.recv()
        kind = getattr(message, "type", None)
        if kind == "Error":
            raise ProviderError(f"Deepgram error: {message}", code="stt_error")
        if kind != "Results":
            continue
        alternatives = message.channel.alternatives
        if message.is_final and alternatives and alternatives[0].transcript:
            finals.append(alternatives[0].transcript.strip())
        if message.from_finalize:
            return " ".join(finals)
