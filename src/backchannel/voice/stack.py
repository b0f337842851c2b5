"""The voice models a server shares between its calls, loaded once, on first use."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from .stt import STT, WhisperSTT
from .tts import TTS, EspeakTTS
from .turn_model import TurnModel, load_turn_model
from .vad import VAD, SileroVAD

log = logging.getLogger("backchannel.voice")


@dataclass
class VoiceStack:
    stt: STT
    tts: TTS
    #: Ends turns by meaning as well as silence; ``None``: silence alone.
    turn_model: TurnModel | None = None

    def vad(self) -> VAD:
        """A VAD per call (each keeps its own stream state) on one shared model session."""
        if self._silero is None:
            self._silero = SileroVAD.load()
        return SileroVAD(session=self._silero)

    _silero: Any = field(default=None, init=False, repr=False)


def default_tts() -> TTS:
    """Piper's en_US voice when the ``piper`` extra is installed, else espeak-ng."""
    try:
        from .tts import PiperTTS

        return PiperTTS()
    except ImportError:
        log.warning("piper-tts is not installed; speaking with espeak-ng")
        return EspeakTTS()


class LazyVoice:
    """Loads the models the first time a voice call needs them (a second or two)."""

    def __init__(self) -> None:
        self._stack: VoiceStack | None = None
        self._lock = asyncio.Lock()

    def preload(self, stack: VoiceStack) -> None:
        """Use these providers instead of loading the defaults."""
        self._stack = stack

    async def get(self) -> VoiceStack:
        async with self._lock:
            if self._stack is None:
                stt, tts, turns = await asyncio.to_thread(
                    lambda: (WhisperSTT(), default_tts(), load_turn_model())
                )
                self._stack = VoiceStack(stt, tts, turns)
            return self._stack
