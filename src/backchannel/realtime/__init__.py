"""Speech-to-speech models (OpenAI Realtime, Gemini Live) with the call's ledger and
arbiter around them."""

from .link import RealtimeLink, session_config
from .listening import RealtimeInput
from .live_link import LiveLink
from .live_model import LiveLLM
from .live_setup import live_setup
from .model import RealtimeLLM
from .voice import ModelVoice

__all__ = [
    "LiveLLM",
    "LiveLink",
    "ModelVoice",
    "RealtimeInput",
    "RealtimeLLM",
    "RealtimeLink",
    "live_setup",
    "session_config",
]
