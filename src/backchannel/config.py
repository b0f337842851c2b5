"""Assistant configuration as Vapi writes it (camelCase JSON), loaded at the edge.

These pydantic models accept a Vapi assistant export as it is: every field we do not use
is kept (``extra="allow"``) and written back out unchanged. backchannel's own per-tool
settings live under a single ``backchannel`` key, so a config stays valid for Vapi too.
Inside the engine, tools are turned into frozen :class:`~backchannel.tools.spec.ToolSpec`
values; nothing past the edge reads these models directly.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .errors import ConfigError


class Delivery(StrEnum):
    """How an async result that arrives later is spoken."""

    SILENT = "silent"
    WHEN_IDLE = "when-idle"
    INTERRUPT = "interrupt"


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        alias_generator=to_camel,
        serialize_by_alias=True,
    )


class ToolMessage(WireModel):
    """One entry of a tool's ``messages``: what to say around the call."""

    type: str
    content: str | None = None
    blocking: bool = False
    timing_milliseconds: int | None = None
    #: ``system``: the line is a hint for the model, not words to say (Vapi's ``role``).
    role: str | None = None


class ServerConfig(WireModel):
    """Where a server tool's webhook (or the assistant's event webhook) goes."""

    url: str | None = None
    timeout_seconds: float = 20.0
    headers: dict[str, str] = Field(default_factory=dict)
    secret: str | None = None


class FunctionDefinition(WireModel):
    """The OpenAI function the model sees."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class BackchannelToolSettings(WireModel):
    """backchannel's own per-tool settings, under the tool's ``backchannel`` key."""

    delivery: Delivery | None = None
    timeout_seconds: float | None = None
    cancel_on_interruption: bool = False
    #: Force where the tool runs; ``client`` keeps a URL-less tool on the client even
    #: when the assistant has a server URL (which it would otherwise fall back to).
    runs_on: Literal["client", "server"] | None = None


class ToolConfig(WireModel):
    """A tool in Vapi's shape. ``type`` other than ``function`` names a built-in."""

    type: str = "function"
    async_: bool = Field(default=False, alias="async")
    function: FunctionDefinition | None = None
    server: ServerConfig | None = None
    messages: list[ToolMessage] = Field(default_factory=list)
    backchannel: BackchannelToolSettings = Field(default_factory=BackchannelToolSettings)
    #: ``transferCall``: where the caller may be transferred, Vapi's
    #: ``[{"type": "number", "number": "+1…"}]``.
    destinations: list[dict[str, Any]] = Field(default_factory=list)


class ModelConfig(WireModel):
    """The LLM: provider, model, sampling, system prompt and tools."""

    provider: str = "openai"
    model: str = "gpt-4o-mini"
    temperature: float | None = None
    max_tokens: int | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[ToolConfig] = Field(default_factory=list)
    url: str | None = None
    #: A speech-to-speech model's turn detection: the model server's ``server_vad`` or
    #: ``semantic_vad``, or ``backchannel`` (Silero, the turn model and the
    #: ``stopSpeakingPlan`` rules, as in the pipeline, with Whisper's transcripts).
    turn_detection: Literal["server_vad", "semantic_vad", "backchannel"] = "server_vad"
    #: Said when the model fails (unreachable, a wrong key), so the caller never waits
    #: in silence; empty to say nothing.
    fallback_message: str = "Sorry, I'm having trouble answering right now."


class VoiceConfig(WireModel):
    provider: str = "piper"
    voice_id: str | None = None
    model: str | None = None


class TranscriberConfig(WireModel):
    provider: str = "faster-whisper"
    model: str | None = None
    language: str | None = None
    #: Deepgram's boosted words (``"Shimano:2"``, nova-2) and key terms (phrases,
    #: nova-3), as on Vapi: sent to Deepgram as they are (Whisper does not use them).
    keywords: list[str] = Field(default_factory=list)
    keyterm: list[str] = Field(default_factory=list)


#: Vapi's defaults: words that show the caller is listening, and never cut the assistant.
ACKNOWLEDGEMENT_PHRASES = (
    "i understand", "i see", "i got it", "i hear you", "im listening", "im with you",
    "right", "okay", "ok", "sure", "alright", "got it", "understood", "yeah", "yes",
    "uh-huh", "mm-hmm", "gotcha", "mhmm", "ah", "yeah okay", "yeah sure",
)  # fmt: skip
#: Vapi's defaults: words that always cut the assistant.
INTERRUPTION_PHRASES = (
    "stop", "shut", "up", "enough", "quiet", "silence", "but", "dont", "not", "no",
    "hold", "wait", "cut", "pause", "nope", "nah", "nevermind", "never", "bad", "actually",
)  # fmt: skip


class TranscriptionEndpointingPlan(WireModel):
    on_punctuation_seconds: float = 0.1
    #: Silence that ends a turn the turn model judges unfinished ("my order is… uh").
    on_no_punctuation_seconds: float = 1.0
    on_number_seconds: float = 0.5


class StartSpeakingPlan(WireModel):
    """When the caller's turn is over (Vapi's ``startSpeakingPlan``).

    After ``waitSeconds`` of silence the turn model is asked; a finished turn ends
    there. An unfinished one ends after ``transcriptionEndpointingPlan.
    onNoPunctuationSeconds`` of silence. With ``smartEndpointingEnabled: false`` (or no
    turn model installed) every turn ends after 0.5 s of silence.
    """

    wait_seconds: float = Field(default=0.2, ge=0.0, le=5.0)
    smart_endpointing_enabled: bool | str = True
    smart_endpointing_plan: dict[str, Any] | None = None
    transcription_endpointing_plan: TranscriptionEndpointingPlan = Field(
        default_factory=TranscriptionEndpointingPlan
    )

    @property
    def smart(self) -> bool:
        return self.smart_endpointing_enabled is not False


class StopSpeakingPlan(WireModel):
    """When the caller's speech cuts the assistant (Vapi's ``stopSpeakingPlan``).

    ``voiceSeconds`` of speech opens a caller's turn. Over the assistant's speech, the
    turn cuts it only once it has words that are not acknowledgements ("mm-hmm",
    "okay"; at least ``numWords`` of them when that is set), an interruption phrase, or
    has gone on too long to be an acknowledgement; a sound with no words never does.
    After a cut the assistant starts speaking again no sooner than ``backoffSeconds``
    later (its reply is prepared meanwhile).
    """

    num_words: float = Field(default=0, ge=0, le=10)
    voice_seconds: float = Field(default=0.2, ge=0.0, le=0.5)
    backoff_seconds: float = Field(default=1.0, ge=0.0, le=10.0)
    acknowledgement_phrases: list[str] = Field(default_factory=lambda: [*ACKNOWLEDGEMENT_PHRASES])
    interruption_phrases: list[str] = Field(default_factory=lambda: [*INTERRUPTION_PHRASES])


class AssistantConfig(WireModel):
    """A Vapi-compatible assistant. Only ``model`` shapes the engine; the rest rides along."""

    name: str | None = None
    first_message: str | None = None
    first_message_mode: Literal[
        "assistant-speaks-first",
        "assistant-waits-for-user",
        "assistant-speaks-first-with-model-generated-message",
    ] = "assistant-speaks-first"
    model: ModelConfig = Field(default_factory=ModelConfig)
    voice: VoiceConfig | None = None
    transcriber: TranscriberConfig | None = None
    server: ServerConfig | None = None
    server_messages: list[str] | None = None
    client_messages: list[str] | None = None
    end_call_phrases: list[str] = Field(default_factory=list)
    silence_timeout_seconds: float | None = None
    start_speaking_plan: StartSpeakingPlan = Field(default_factory=StartSpeakingPlan)
    stop_speaking_plan: StopSpeakingPlan = Field(default_factory=StopSpeakingPlan)
    max_duration_seconds: float | None = None

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> AssistantConfig:
        """Load a Vapi assistant export; a bad one raises ``ConfigError`` with the reasons."""
        try:
            if isinstance(data, dict):
                return cls.model_validate(data)
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ConfigError(
                "assistant configuration is invalid",
                code="invalid_assistant",
                errors=json.loads(exc.json(include_url=False, include_input=False)),
            ) from exc

    @classmethod
    def from_file(cls, path: str | Path) -> AssistantConfig:
        return cls.from_json(Path(path).read_bytes())

    def to_json(self) -> dict[str, Any]:
        """The config as Vapi-style JSON: what was given, unknown fields included, and
        no defaults added (they apply when the config is used, not written into it)."""
        return self.model_dump(mode="json", exclude_unset=True)
