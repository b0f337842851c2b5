"""Which LLM, STT and TTS a call gets, from its assistant's ``model``, ``transcriber``
and ``voice`` blocks, the way a Vapi assistant names them.

- ``model.provider`` ``llama.cpp`` (or ``local``) runs a local GGUF model (``model.model``
  is ``qwen2.5-1.5b``, ``qwen2.5-0.5b`` or a path); any other provider is taken as an
  OpenAI-compatible server (OpenAI, Groq, vLLM, Ollama, llama.cpp's own server…).
- ``transcriber.provider`` ``deepgram`` streams to Deepgram when a Deepgram key is set.
- ``voice.provider`` ``11labs``/``elevenlabs`` streams from ElevenLabs when its key is set.

Everything else runs on the offline stack (Whisper, Piper or espeak-ng). An assistant
brought over from a hosted platform therefore works before its vendor keys are set up;
the substitution is logged once per provider so it is not a silent surprise.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai

from ..call import Call
from ..config import AssistantConfig, ModelConfig, TranscriberConfig, VoiceConfig
from ..errors import ConfigError
from ..llm.base import LLM
from ..llm.local import LazyLlamaCpp
from ..llm.openai_compat import OpenAICompatibleLLM
from ..phone.twilio_rest import TwilioRest
from ..voice.output import AudioOutput, SendFrame
from ..voice.session import CallInput, VoiceSession
from ..voice.stack import LazyVoice
from ..voice.stt import STT
from ..voice.tts import TTS
from ..voice.vad import TurnDetector
from .settings import Settings

log = logging.getLogger("backchannel.server")

LOCAL_LLM = frozenset({"llama.cpp", "llama-cpp", "local"})
REALTIME = frozenset({"openai-realtime"})
GOOGLE_LIVE = frozenset({"google-live"})
#: The voice providers whose voice a speech-to-speech model speaks in (Vapi: "only
#: OpenAI voices may be selected" with a realtime model).
MODEL_VOICES = {
    "openai-realtime": frozenset({"openai"}),
    "google-live": frozenset({"google", "gemini"}),
}
DEEPGRAM = frozenset({"deepgram"})
ELEVENLABS = frozenset({"11labs", "elevenlabs"})
LOCAL_VOICE = frozenset({"piper", "espeak", "faster-whisper", "whisper"})


class Providers:
    def __init__(self, settings: Settings, voice: LazyVoice | None = None) -> None:
        self.settings = settings
        self.voice = voice or LazyVoice()
        self._openai: dict[str | None, openai.AsyncOpenAI] = {}
        self._local: dict[str, LazyLlamaCpp] = {}
        self._vendors: dict[tuple[Any, ...], Any] = {}
        self._warned: set[str] = set()
        self._http: httpx.AsyncClient | None = None
        self._twilio: TwilioRest | None = None

    def llm(self, model: ModelConfig) -> LLM:
        """The call's model. Local models are loaded once per process and shared; an
        unknown local model is a ``ConfigError`` here, when the call is created."""
        # An assistant that names no model gets the provider's default, not the
        # chat model's.
        named = model.model if "model" in model.model_fields_set else ""
        kind = speech_to_speech(model)
        if kind == "openai-realtime":
            from ..realtime import RealtimeLink, RealtimeLLM

            link = RealtimeLink(
                model=named or "gpt-realtime",
                api_key=self.settings.openai_api_key,
                url=model.url or self.settings.openai_realtime_url,
            )
            return RealtimeLLM(link, turn_detection=model.turn_detection)
        if kind == "google-live":
            from ..realtime import LiveLink, LiveLLM

            live = LiveLink(
                model=named,
                api_key=self.settings.google_api_key,
                url=model.url or self.settings.google_live_url,
            )
            return LiveLLM(live, turn_detection=model.turn_detection)
        if model.provider in LOCAL_LLM:
            if model.model not in self._local:
                self._local[model.model] = LazyLlamaCpp(model.model)
            return self._local[model.model]
        base_url = model.url or self.settings.llm_base_url
        if base_url not in self._openai:
            self._openai[base_url] = OpenAICompatibleLLM(
                model=model.model, base_url=base_url, api_key=self.settings.llm_api_key
            ).client
        return OpenAICompatibleLLM(model=model.model, client=self._openai[base_url])

    async def stt(self, transcriber: TranscriberConfig | None) -> STT:
        provider = transcriber.provider if transcriber else "faster-whisper"
        key = self.settings.deepgram_api_key
        if transcriber is not None and provider in DEEPGRAM and key:
            from ..voice.deepgram import DeepgramSTT

            model = transcriber.model or "nova-3"
            language = transcriber.language or "en"
            words, terms = tuple(transcriber.keywords), tuple(transcriber.keyterm)
            cache = ("deepgram", model, language, words, terms)
            if cache not in self._vendors:
                self._vendors[cache] = DeepgramSTT(
                    key,
                    model=model,
                    language=language,
                    base_url=self.settings.deepgram_url,
                    keywords=words,
                    keyterm=terms,
                )
            stt: STT = self._vendors[cache]
            return stt
        self._substituted("transcriber", provider, "Whisper")
        return (await self.voice.get()).stt

    async def tts(self, voice: VoiceConfig | None) -> TTS:
        provider = voice.provider if voice else "piper"
        key = self.settings.elevenlabs_api_key
        if voice is not None and provider in ELEVENLABS and key and voice.voice_id:
            from ..voice.elevenlabs import ElevenLabsTTS

            model = voice.model or "eleven_flash_v2_5"
            # Each call gets its own: the voice keeps the sentence before as context.
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=20.0)
            return ElevenLabsTTS(
                key,
                voice.voice_id,
                model=model,
                base_url=self.settings.elevenlabs_url,
                http=self._http,
            )
        self._substituted("voice", provider, "the local voice")
        return (await self.voice.get()).tts

    async def audio(
        self,
        assistant: AssistantConfig,
        send: SendFrame,
        clear: Callable[[], Awaitable[None]],
        *,
        rate: int,
    ) -> tuple[AudioOutput, Callable[[Call], CallInput]]:
        """A voice call's two halves at the transport's ``rate``: the assistant's speech
        (sent as PCM16 frames, ``clear`` on barge-in) and, per call, the caller's audio
        in (turns, transcripts)."""
        tts = await self.tts(assistant.voice)
        realtime = speech_to_speech(assistant.model) is not None
        if realtime and assistant.model.turn_detection != "backchannel":
            return self._realtime_audio(tts, send, clear, rate=rate, input_side=None)
        stt = await self.stt(assistant.transcriber)
        voice = await self.voice.get()

        def session(call: Call) -> VoiceSession:
            detector = TurnDetector.for_rate(voice.vad(), rate)
            return VoiceSession(call, detector, stt, rate=rate, turn_model=voice.turn_model)

        if realtime:
            return self._realtime_audio(tts, send, clear, rate=rate, input_side=session)
        output = AudioOutput(tts, send, rate=rate, clear=clear)
        return output, session

    def _realtime_audio(
        self,
        tts: TTS,
        send: SendFrame,
        clear: Callable[[], Awaitable[None]],
        *,
        rate: int,
        input_side: Callable[[Call], VoiceSession] | None,
    ) -> tuple[AudioOutput, Callable[[Call], CallInput]]:
        """A speech-to-speech model's call: the model's own voice out (the assistant's
        voice speaks the lines that are not the model's), the caller's audio to the
        model, whose turn detection and transcripts drive the call, or the pipeline's
        (``input_side``)."""
        from ..realtime import LiveLLM, ModelVoice, RealtimeInput, RealtimeLLM

        voice = ModelVoice(tts)
        output = AudioOutput(voice, send, rate=rate, clear=voice.clearing(clear))

        def listen(call: Call) -> CallInput:
            model = call.llm
            if not isinstance(model, RealtimeLLM | LiveLLM):
                raise ConfigError("this call's model is not a speech-to-speech model")
            voice.clock = call.clock
            model.voice = voice
            if (name := model_voice(call.assistant)) is not None:
                model.speak_as(name)
            session = input_side(call) if input_side is not None else None
            return RealtimeInput(call, model, rate=rate, session=session)

        return output, listen

    def twilio(self) -> TwilioRest:
        """Twilio's REST API, for outbound calls and transfers; needs the account SID and
        auth token."""
        sid, token = self.settings.twilio_account_sid, self.settings.twilio_auth_token
        if not sid or not token:
            raise ConfigError(
                "phone calls need BACKCHANNEL_TWILIO_ACCOUNT_SID and _AUTH_TOKEN",
                code="twilio_not_configured",
            )
        if self._twilio is None:
            self._twilio = TwilioRest(sid, token, base_url=self.settings.twilio_api_url)
        return self._twilio

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._twilio is not None:
            await self._twilio.aclose()

    def _substituted(self, kind: str, provider: str, local: str) -> None:
        if provider in LOCAL_VOICE or provider in self._warned:
            return
        self._warned.add(provider)
        log.warning(
            "%s provider %r is not configured here (no key, or not supported); using %s",
            kind,
            provider,
            local,
        )


def speech_to_speech(model: ModelConfig) -> str | None:
    """The speech-to-speech model an assistant's model block names, if any: by its
    provider (``openai-realtime``, ``google-live``), or as a Vapi assistant names one
    (``provider: openai`` with a realtime model; ``google`` with a Live one)."""
    name = model.model.lower()
    if model.provider in REALTIME or (model.provider == "openai" and "realtime" in name):
        return "openai-realtime"
    live = "live" in name or "native-audio" in name
    if model.provider in GOOGLE_LIVE or (model.provider in ("google", "gemini") and live):
        return "google-live"
    return None


def model_voice(assistant: AssistantConfig) -> str | None:
    """The voice a speech-to-speech model speaks in: the assistant's ``voice.voiceId``,
    when its provider is the model's own (``openai`` for Realtime, ``google`` for Live);
    else the model's default voice."""
    kind, voice = speech_to_speech(assistant.model), assistant.voice
    if kind is None or voice is None or not voice.voice_id:
        return None
    return voice.voice_id if voice.provider in MODEL_VOICES[kind] else None
