"""The events that close a call: ``status-update`` (ended) and the ``end-of-call-report``.

A call that ends normally sends them itself. A call its process took down with it (a
crash, an instance declared lost) gets the same events from whoever ends it in the
ledger, built from what the store kept: the tool calls with their final states and the
transcript as last stored. Both carry stable event ids, so making them twice (a crash
while reporting, two recoveries) stores and sends them once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .events import Event, event_id
from .ledger.records import ToolCallRecord


def ended_events(
    call_id: str,
    reason: str,
    records: Sequence[ToolCallRecord],
    *,
    at: float,
    transcript: Sequence[Mapping[str, Any]] = (),
    messages: Sequence[Mapping[str, Any]] = (),
    vapi_messages: Sequence[Mapping[str, Any]] | None = None,
    call: Mapping[str, Any] | None = None,
) -> list[Event]:
    """``status-update`` with ``endedReason``, then the end-of-call report listing every
    tool call's final state. Its ``artifact`` is Vapi's: the transcript as text, the
    messages in Vapi's form (when known) and in OpenAI's; ``analysis`` is empty
    (backchannel runs no post-call analysis). ``transcript`` and ``messages`` (OpenAI
    form) are also kept at the top, as earlier versions sent them."""
    artifact: dict[str, Any] = {
        "transcript": transcript_text(transcript),
        "messagesOpenAIFormatted": list(messages),
    }
    if vapi_messages is not None:
        artifact["messages"] = list(vapi_messages)
    return [
        Event(
            "status-update",
            call_id,
            at,
            {"status": "ended", "endedReason": reason},
            call=call,
            id=event_id("status-update", "ended", call_id),
        ),
        Event(
            "end-of-call-report",
            call_id,
            at,
            {
                "endedReason": reason,
                "artifact": artifact,
                "analysis": {},
                "transcript": list(transcript),
                "messages": list(messages),
                "toolCalls": [r.to_dict() for r in records],
            },
            call=call,
            id=event_id("end-of-call-report", call_id),
        ),
    ]


def transcript_text(transcript: Sequence[Mapping[str, Any]]) -> str:
    """The transcript as Vapi writes it: ``AI: …`` and ``User: …`` lines."""
    names = {"assistant": "AI", "user": "User"}
    return "\n".join(
        f"{names.get(str(t.get('role')), str(t.get('role')))}: {t.get('content')}"
        for t in transcript
    )
