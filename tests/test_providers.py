"""Which providers a call gets from its assistant's blocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from backchannel.config import AssistantConfig, ModelConfig, TranscriberConfig, VoiceConfig
from backchannel.errors import ConfigError
from backchannel.llm.local import LazyLlamaCpp
from backchannel.llm.openai_compat import OpenAICompatibleLLM
from backchannel.realtime import LiveLLM, RealtimeLLM
from backchannel.server.providers import Providers, model_voice, speech_to_speech
from backchannel.server.settings import Settings
from backchannel.voice.audio import Samples
from backchannel.voice.deepgram import DeepgramSTT
from backchannel.voice.elevenlabs import ElevenLabsTTS
from backchannel.voice.stack import VoiceStack
from backchannel.voice.stt import ScriptedSTT

pytestmark = pytest.mark.anyio


class SilentTTS:
    sample_rate = 16_000

    async def synthesize(self, text: str) -> AsyncIterator[Samples]:
        yield np.zeros(160, np.int16)


def providers(tmp_path: Path, **settings: str) -> Providers:
    p = Providers(Settings(secrets_file=tmp_path / "s.json", **settings))  # type: ignore[arg-type]
    p.voice.preload(VoiceStack(ScriptedSTT(), SilentTTS()))
    return p


async def test_vendor_blocks_use_the_vendor_when_its_key_is_set(tmp_path: Path) -> None:
    p = providers(tmp_path, deepgram_api_key="dg", elevenlabs_api_key="el")
    stt = await p.stt(TranscriberConfig(provider="deepgram", model="nova-2"))
    tts = await p.tts(VoiceConfig(provider="11labs", voice_id="burt"))
    assert isinstance(stt, DeepgramSTT) and stt.model == "nova-2"
    assert isinstance(tts, ElevenLabsTTS) and tts.voice_id == "burt"
    assert await p.stt(TranscriberConfig(provider="deepgram", model="nova-2")) is stt
    boosted = TranscriberConfig.model_validate(
        {"provider": "deepgram", "model": "nova-2", "keywords": ["Shimano:2"]}
    )
    other = await p.stt(boosted)
    assert isinstance(other, DeepgramSTT) and other is not stt, "one per vocabulary"
    assert other.keywords == ["Shimano:2"] and other.keyterm == []
    await p.aclose()


async def test_without_keys_every_block_runs_on_the_offline_stack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = providers(tmp_path)
    local = await p.voice.get()
    assert await p.stt(TranscriberConfig(provider="deepgram")) is local.stt
    assert await p.tts(VoiceConfig(provider="11labs", voice_id="burt")) is local.tts
    assert await p.tts(None) is local.tts
    assert "using Whisper" in caplog.text and "using the local voice" in caplog.text


def test_model_blocks_pick_the_local_model_or_an_openai_compatible_server(
    tmp_path: Path,
) -> None:
    p = providers(tmp_path)
    local = p.llm(ModelConfig(provider="llama.cpp", model="qwen2.5-1.5b"))
    assert isinstance(local, LazyLlamaCpp)
    assert p.llm(ModelConfig(provider="local", model="qwen2.5-1.5b")) is local, "loaded once"
    remote = p.llm(ModelConfig(provider="groq", model="llama-3.1-8b", url="http://x/v1"))
    assert isinstance(remote, OpenAICompatibleLLM)
    with pytest.raises(ConfigError):
        p.llm(ModelConfig(provider="llama.cpp", model="no-such-model"))


def test_speech_to_speech_models_are_picked_by_provider_or_as_vapi_names_them(
    tmp_path: Path,
) -> None:
    p = providers(tmp_path)
    for provider, model in [
        ("openai-realtime", "gpt-realtime"),
        ("openai", "gpt-realtime-2025-08-28"),
        ("openai", "gpt-4o-mini-realtime-preview-2024-12-17"),
    ]:
        assert isinstance(p.llm(ModelConfig(provider=provider, model=model)), RealtimeLLM)
    for provider, model in [
        ("google-live", "gemini-2.5-flash-native-audio-preview-12-2025"),
        ("google", "gemini-live-2.5-flash-preview"),
        ("google", "gemini-2.5-flash-native-audio-preview-12-2025"),
    ]:
        assert isinstance(p.llm(ModelConfig(provider=provider, model=model)), LiveLLM)
    chat = ModelConfig(provider="openai", model="gpt-4o-mini", url="http://x/v1")
    assert speech_to_speech(chat) is None and isinstance(p.llm(chat), OpenAICompatibleLLM)
    # The voice block names the model's voice when it is the model's own provider's.
    realtime = {"provider": "openai", "model": "gpt-realtime"}
    named = AssistantConfig.from_json(
        {"model": realtime, "voice": {"provider": "openai", "voiceId": "marin"}}
    )
    assert model_voice(named) == "marin"
    other = AssistantConfig.from_json(
        {"model": realtime, "voice": {"provider": "11labs", "voiceId": "abc"}}
    )
    assert model_voice(other) is None


def test_phone_calls_need_twilio_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        providers(tmp_path).twilio()
    assert caught.value.code == "twilio_not_configured"
