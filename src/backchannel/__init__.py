"""backchannel: a self-hosted voice-agent server where background tool results land in the
live conversation under their tool-call id, are spoken at the right moment, exactly once,
and are never lost."""

from .arbiter import Announcement, Arbiter, Plan, PlanKind, SayRequest, Verdict
from .call import Call
from .client import Client, ToolCall, parse_tool_calls, results, verify_webhook
from .clock import Clock, ManualClock, SystemClock
from .config import (
    AssistantConfig,
    BackchannelToolSettings,
    Delivery,
    FunctionDefinition,
    ModelConfig,
    ServerConfig,
    ToolConfig,
    ToolMessage,
)
from .conversation import Conversation, Message
from .engine import Engine
from .errors import (
    BackchannelError,
    CallEnded,
    ConfigError,
    Conflict,
    Forbidden,
    IllegalTransition,
    InvalidInput,
    NotFound,
    ProviderError,
    Unauthorized,
    Unavailable,
)
from .events import Event, EventLog, EventSink, FanOut
from .ledger.ledger import Ledger, Outcome, Resolution
from .ledger.memory import MemoryStore
from .ledger.records import CallRecord, Progress, ToolCallRecord
from .ledger.sql import SqlStore
from .ledger.store import LedgerStore
from .lifecycle import CallState, ToolCallState, TurnState, transition
from .llm.base import LLM, LLMRequest, TextDelta, ToolCallRequest
from .llm.local import LlamaCppLLM
from .llm.openai_compat import OpenAICompatibleLLM
from .llm.scripted import ScriptedLLM
from .realtime import LiveLink, LiveLLM, ModelVoice, RealtimeInput, RealtimeLink, RealtimeLLM
from .results import ResultSource, ToolResult, ToolResultPayload, parse_result
from .speech import Cut, PacedSpeech, SpeechOutput, Utterance
from .telemetry import TurnLatency, configure_tracing
from .tools.executors import Invocation, ToolServer
from .tools.registry import ToolContext, ToolRegistry
from .tools.spec import Route, ToolSpec

__all__ = [
    "LLM",
    "Announcement",
    "Arbiter",
    "AssistantConfig",
    "BackchannelError",
    "BackchannelToolSettings",
    "Call",
    "CallEnded",
    "CallRecord",
    "CallState",
    "Client",
    "Clock",
    "ConfigError",
    "Conflict",
    "Conversation",
    "Cut",
    "Delivery",
    "Engine",
    "Event",
    "EventLog",
    "EventSink",
    "FanOut",
    "Forbidden",
    "FunctionDefinition",
    "IllegalTransition",
    "InvalidInput",
    "Invocation",
    "LLMRequest",
    "Ledger",
    "LedgerStore",
    "LiveLLM",
    "LiveLink",
    "LlamaCppLLM",
    "ManualClock",
    "MemoryStore",
    "Message",
    "ModelConfig",
    "ModelVoice",
    "NotFound",
    "OpenAICompatibleLLM",
    "Outcome",
    "PacedSpeech",
    "Plan",
    "PlanKind",
    "Progress",
    "ProviderError",
    "RealtimeInput",
    "RealtimeLLM",
    "RealtimeLink",
    "Resolution",
    "ResultSource",
    "Route",
    "SayRequest",
    "ScriptedLLM",
    "ServerConfig",
    "SpeechOutput",
    "SqlStore",
    "SystemClock",
    "TextDelta",
    "ToolCall",
    "ToolCallRecord",
    "ToolCallRequest",
    "ToolCallState",
    "ToolConfig",
    "ToolContext",
    "ToolMessage",
    "ToolRegistry",
    "ToolResult",
    "ToolResultPayload",
    "ToolServer",
    "ToolSpec",
    "TurnLatency",
    "TurnState",
    "Unauthorized",
    "Unavailable",
    "Utterance",
    "Verdict",
    "configure_tracing",
    "parse_result",
    "parse_tool_calls",
    "results",
    "transition",
    "verify_webhook",
]
