"""Speech-to-speech models (OpenAI Realtime) with the call's ledger and arbiter around them."""

from .link import RealtimeLink, session_config
from .listening import RealtimeInput
from .model import RealtimeLLM
from .voice import ModelVoice

__all__ = ["ModelVoice", "RealtimeInput", "RealtimeLLM", "RealtimeLink", "session_config"]
