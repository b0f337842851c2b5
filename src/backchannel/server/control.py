"""Live control of a call: the control URL's messages, and the same from the client."""

from __future__ import annotations

from typing import Any

from ..call import Call
from ..engine import Engine
from ..errors import CallEnded
from ..results import ResultSource
from .wire import AddMessage, Control, EndCall, Say, ToolCallResultMessage


async def apply_control(
    engine: Engine,
    call_id: str,
    message: AddMessage | Say | EndCall | Control | ToolCallResultMessage,
    source: ResultSource,
) -> dict[str, Any]:
    """Apply one control message; a result works on ended calls too (kept as late)."""
    if isinstance(message, ToolCallResultMessage):
        resolution = await engine.submit_result(
            call_id, message.result_for(message.tool_call_id), source
        )
        return resolution.to_dict()
    call = live_call(engine, call_id)
    if isinstance(message, AddMessage):
        call.add_message(
            message.message.role,
            message.message.content,
            trigger_response=message.trigger_response_enabled,
        )
    elif isinstance(message, Say):
        call.say(
            message.line,
            end_call_after=message.end_call_after_spoken,
            interrupt=message.interrupt_assistant_enabled,
        )
    elif isinstance(message, EndCall):
        call.request_end("ended-by-control")
    elif message.control in ("mute-assistant", "unmute-assistant"):
        call.set_muted(message.control == "mute-assistant")
    elif message.control in ("mute-customer", "unmute-customer"):
        call.set_customer_muted(message.control == "mute-customer")
    else:
        call.say_first_message()
    return {"ok": True}


def live_call(engine: Engine, call_id: str) -> Call:
    call = engine.live.get(call_id)
    if call is None or call.ended.is_set():
        raise CallEnded(
            f"call {call_id!r} is not live (not connected yet, or ended)", code="call_not_live"
        )
    return call
