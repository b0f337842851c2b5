"""What the ledger stores: one frozen record per call and per tool call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Delivery
from ..lifecycle import CallState, ToolCallState
from ..results import ResultSource
from ..tools.spec import Route


@dataclass(frozen=True, slots=True)
class Progress:
    """One ``willContinue`` update, in arrival order."""

    at: float
    result: Any = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    state: CallState
    created_at: float
    ended_at: float | None = None
    ended_reason: str | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """Everything known about one tool call, from the model's request to its speech.

    ``state`` is the lifecycle (see :mod:`backchannel.lifecycle`). ``late`` is set when
    the result arrived after the call timed out, was cancelled, or the call itself had
    ended: such a result is kept, but the state it reached first stays.
    """

    call_id: str
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    route: Route
    is_async: bool
    delivery: Delivery
    timeout_seconds: float
    cancel_on_interruption: bool
    created_at: float
    state: ToolCallState = ToolCallState.PENDING
    result: Any = None
    error: str | None = None
    message: str | None = None
    metadata: dict[str, Any] | None = None
    resolved_by: ResultSource | None = None
    late: bool = False
    progress: tuple[Progress, ...] = field(default_factory=tuple)
    started_at: float | None = None
    progress_at: float | None = None
    resolved_at: float | None = None
    result_at: float | None = None
    delivered_at: float | None = None
    spoken_at: float | None = None
    version: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.tool_call_id)

    @property
    def has_result(self) -> bool:
        return self.result_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON for the API and the end-of-call report (camelCase)."""
        return {
            "callId": self.call_id,
            "toolCallId": self.tool_call_id,
            "name": self.name,
            "arguments": self.arguments,
            "route": self.route.value,
            "async": self.is_async,
            "delivery": self.delivery.value,
            "state": self.state.value,
            "result": self.result,
            "error": self.error,
            "message": self.message,
            "metadata": self.metadata,
            "resolvedBy": self.resolved_by.value if self.resolved_by else None,
            "late": self.late,
            "progress": [
                {"at": p.at, "result": p.result, "message": p.message} for p in self.progress
            ],
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "progressAt": self.progress_at,
            "resolvedAt": self.resolved_at,
            "resultAt": self.result_at,
            "deliveredAt": self.delivered_at,
            "spokenAt": self.spoken_at,
        }
