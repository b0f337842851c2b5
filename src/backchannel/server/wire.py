"""The HTTP and WebSocket edge: request and response models, camelCase as Vapi writes it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ..config import AssistantConfig, WireModel
from ..results import ResultFields


class ErrorDetail(WireModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(WireModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "the body could not be read"),
        (401, "missing or wrong credentials"),
        (403, "not allowed for this sender"),
        (404, "unknown id"),
        (409, "conflicts with what is recorded"),
        (413, "body too large"),
        (422, "malformed request"),
    )
}


class AssistantOut(AssistantConfig):
    id: str
    created_at: float
    updated_at: float


#: Fields the server owns on an assistant. An assistant exported from Vapi (a
#: ``GET /assistant/{id}`` answer) carries them; on import and update they are ignored.
SERVER_OWNED = frozenset({"id", "orgId", "createdAt", "updatedAt", "isServerUrlSecretSet"})


def without_owned(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` less the server-owned fields."""
    return {k: v for k, v in data.items() if k not in SERVER_OWNED}


def assistant_document(config: AssistantConfig) -> dict[str, Any]:
    """What is stored for an assistant: the config as given, less server-owned fields."""
    return without_owned(config.to_json())


class Customer(WireModel):
    number: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164, e.g. +15551234567")


class CreateCall(WireModel):
    """Start a call from a stored assistant (``assistantId``) or an inline ``assistant``.

    A ``phone`` call is placed through Twilio to ``customer.number``, from the number
    ``phoneNumberId`` names (see ``/phone-numbers``).
    """

    type: Literal["web", "text", "phone"] = "text"
    assistant_id: str | None = Field(default=None, max_length=64)
    assistant: AssistantConfig | None = None
    customer: Customer | None = None
    phone_number_id: str | None = Field(default=None, max_length=64)
    #: Vapi's ``assistantOverrides``: fields that replace the assistant's for this call,
    #: and ``variableValues`` for its ``{{name}}`` templates.
    assistant_overrides: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_assistant(self) -> CreateCall:
        if (self.assistant_id is None) == (self.assistant is None):
            raise ValueError("give exactly one of 'assistantId' and 'assistant'")
        if self.type == "phone" and (self.customer is None or self.phone_number_id is None):
            raise ValueError("a phone call needs 'customer.number' and 'phoneNumberId'")
        return self


class Monitor(WireModel):
    control_url: str


class CallOut(WireModel):
    id: str
    type: str
    status: str
    assistant_id: str | None = None
    created_at: float
    ended_at: float | None = None
    ended_reason: str | None = None
    monitor: Monitor
    client_url: str
    #: Only in the answer to ``POST /calls``: the call's bearer token (every route of
    #: this call) and the client token (its WebSocket only; hand this one to the app).
    token: str | None = None
    client_token: str | None = None
    #: Phone calls: who was called or called in, and our number.
    customer: Customer | None = None
    phone_number: Customer | None = None
    transcript: list[dict[str, Any]] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    #: Each answered turn: ``turn``, ``speechEndedAt`` (ms), ``latencyMs`` by stage.
    turns: list[dict[str, Any]] = Field(default_factory=list)


class ResultBody(ResultFields):
    """A result posted for one tool call; the path names the call, the body may repeat it."""

    tool_call_id: str | None = Field(default=None, max_length=256)


class ResolutionOut(WireModel):
    tool_call_id: str
    state: str
    outcome: str
    duplicate: bool
    late: bool


class ChatMessage(WireModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=100_000)


class AddMessage(WireModel):
    type: Literal["add-message"]
    message: ChatMessage
    trigger_response_enabled: bool = True


class Say(WireModel):
    type: Literal["say"]
    content: str | None = Field(default=None, max_length=10_000)
    #: Older clients send the line as ``message``.
    message: str | None = Field(default=None, max_length=10_000)
    end_call_after_spoken: bool = False
    interrupt_assistant_enabled: bool = False

    @model_validator(mode="after")
    def _has_line(self) -> Say:
        if not (self.content or self.message):
            raise ValueError("'say' needs 'content'")
        return self

    @property
    def line(self) -> str:
        return self.content or self.message or ""


class EndCall(WireModel):
    type: Literal["end-call"]


class Control(WireModel):
    type: Literal["control"]
    control: Literal[
        "mute-assistant",
        "unmute-assistant",
        "mute-customer",
        "unmute-customer",
        "say-first-message",
    ]


class ToolCallResultMessage(ResultFields):
    type: Literal["tool-call-result"]
    tool_call_id: str = Field(min_length=1, max_length=256)


class UserMessage(WireModel):
    """A typed user turn (client WebSocket only)."""

    type: Literal["user-message"]
    content: str = Field(min_length=1, max_length=100_000)


ControlMessage = Annotated[
    AddMessage | Say | EndCall | Control | ToolCallResultMessage, Field(discriminator="type")
]
ClientMessage = Annotated[
    AddMessage | Say | EndCall | Control | ToolCallResultMessage | UserMessage,
    Field(discriminator="type"),
]


class Accepted(WireModel):
    ok: bool = True
