"""Events a call emits, by Vapi's names, for the client and the server URL.

The engine only emits; where an event goes (the client's WebSocket, a signed webhook
through the outbox, a test's list) is the sink's business, filtered there by the
assistant's ``clientMessages`` / ``serverMessages``.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# Vapi's names, then backchannel's own.
EVENT_TYPES = frozenset(
    {
        "status-update",
        "transcript",
        "speech-update",
        "conversation-update",
        "tool-calls",
        "tool-calls-result",
        "model-output",
        "user-interrupted",
        "hang",
        "end-of-call-report",
        "tool-call-progress",
        "tool-calls-cancelled",
        "tool-result-after-call",
        "turn-latency",
    }
)
#: backchannel's own events that a client or server gets only when its
#: ``clientMessages`` / ``serverMessages`` list names them.
OPT_IN_EVENT_TYPES = frozenset({"turn-latency"})


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    call_id: str
    at: float
    data: Mapping[str, Any] = field(default_factory=dict)
    #: More about the call for the ``call`` object, e.g. a phone call's numbers.
    call: Mapping[str, Any] | None = None
    #: The event's identity: the ``webhook-id`` of every delivery attempt and ``id`` in
    #: the webhook body. Reports that recovery may make again use :func:`event_id`.
    id: str = field(default_factory=lambda: f"evt_{uuid.uuid4().hex}")

    def to_message(self) -> dict[str, Any]:
        """The event as Vapi's ``{"message": {"type", "timestamp", "call", ...}}`` body."""
        return {
            "message": {
                "type": self.type,
                "timestamp": int(self.at * 1000),
                "call": {"id": self.call_id, **(self.call or {})},
                **self.data,
            }
        }


def event_id(*parts: str) -> str:
    """A stable event id for a report that may be made more than once (after a crash,
    on a repeated result): the same parts give the same id, so it is stored once."""
    return "evt_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class EventSink(Protocol):
    def emit(self, event: Event) -> None:
        """Take an event without blocking the conversation (queue it if sending is slow)."""
        ...


@runtime_checkable
class DurableSink(Protocol):
    """A sink that stores events (the outbox): ``stored`` resolves once an event is
    durable, or is ``None`` when there is nothing to wait for."""

    def emit(self, event: Event) -> None: ...

    def stored(self, event_id: str) -> asyncio.Future[None] | None: ...


class EventLog:
    """A sink that keeps every event in order; for tests and the end-of-call report."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]


class FanOut:
    """Send every event to several sinks."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)
