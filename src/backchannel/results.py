"""A tool result: Vapi's ``ToolCallResult`` plus backchannel's ``delivery`` and ``willContinue``.

:class:`ToolResult` is the frozen value the engine passes around; :class:`ToolResultPayload`
is the pydantic model that parses it off the wire (webhook replies, client messages,
HTTP posts), forgiving the shapes Vapi users really send: a non-string ``result`` is
kept as JSON, a plain-string ``message`` is read as the line to say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from .config import Delivery, WireModel
from .errors import InvalidInput


class ResultSource(StrEnum):
    """Who delivered a result. A client may only answer calls routed to the client."""

    WEBHOOK = "webhook"
    CLIENT = "client"
    API = "api"
    IN_PROCESS = "in-process"
    ENGINE = "engine"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One result (or progress update) for one tool call.

    ``result`` is what the model reads on success (a string or any JSON value), ``error``
    on failure. ``message`` is what to say instead of generating a response.
    ``will_continue`` marks a progress update: recorded, maybe spoken, not terminal.
    """

    tool_call_id: str
    name: str | None = None
    result: Any = None
    error: str | None = None
    message: str | None = None
    metadata: dict[str, Any] | None = None
    delivery: Delivery | None = None
    will_continue: bool = False

    def __post_init__(self) -> None:
        if self.delivery is not None and not isinstance(self.delivery, Delivery):
            object.__setattr__(self, "delivery", Delivery(self.delivery))

    @property
    def ok(self) -> bool:
        return self.error is None

    def same_outcome(self, other: ToolResult) -> bool:
        """Whether two results say the same thing (the test for a harmless duplicate)."""
        return _canonical(self.result) == _canonical(other.result) and self.error == other.error

    def model_content(self) -> str:
        """The result as the model reads it in the conversation."""
        if self.error is not None:
            return json.dumps({"error": self.error})
        if isinstance(self.result, str):
            return self.result
        return json.dumps(self.result, ensure_ascii=False, sort_keys=True)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class ResultMessage(WireModel):
    type: Literal["request-complete", "request-failed"] | None = None
    content: str = ""


class ResultFields(WireModel):
    """Everything a result says besides which tool call it answers."""

    name: str | None = None
    result: Any = None
    error: str | None = None
    message: ResultMessage | str | None = None
    metadata: dict[str, Any] | None = None
    delivery: Delivery | None = None
    trigger_response_enabled: bool | None = None
    will_continue: bool = False

    @model_validator(mode="after")
    def _result_or_error(self) -> ResultFields:
        if self.error is not None and self.result is not None:
            raise ValueError("give either 'result' or 'error', not both")
        return self

    def result_for(self, tool_call_id: str) -> ToolResult:
        """The result as the engine's value, for ``tool_call_id``."""
        delivery = self.delivery
        if delivery is None and self.trigger_response_enabled is not None:
            delivery = Delivery.WHEN_IDLE if self.trigger_response_enabled else Delivery.SILENT
        message = self.message
        if isinstance(message, ResultMessage):
            # Vapi's precedence: a result speaks its message only if it is typed
            # ``request-complete``, an error only ``request-failed`` (untyped: either).
            fits = "request-failed" if self.error is not None else "request-complete"
            message = message.content if message.type in (None, fits) else None
        return ToolResult(
            tool_call_id=tool_call_id,
            name=self.name,
            result=self.result,
            error=self.error,
            message=message or None,
            metadata=self.metadata,
            delivery=delivery,
            will_continue=self.will_continue,
        )


class ToolResultPayload(ResultFields):
    """The wire shape of a result, as Vapi's ``ToolCallResult`` plus our fields."""

    tool_call_id: str = Field(min_length=1, max_length=256)

    def to_result(self) -> ToolResult:
        return self.result_for(self.tool_call_id)


def parse_result(data: Any) -> ToolResult:
    """Parse one wire result; a malformed one raises ``InvalidInput`` with the reasons."""
    try:
        return ToolResultPayload.model_validate(data).to_result()
    except ValidationError as exc:
        raise InvalidInput(
            "tool result is malformed",
            code="invalid_tool_result",
            errors=json.loads(exc.json(include_url=False, include_input=False)),
        ) from exc
