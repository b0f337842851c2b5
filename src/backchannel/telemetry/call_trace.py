"""What one call reports to tracing and metrics.

The call's span opens with the call and ends with it. Under it: a span per answered
turn (from the end of the caller's speech to the first audio) with a child per stage,
a span per model request, and a span per tool call from the model's call to the end of
its life in the call (its result in the conversation for a sync or silent call, its
announcement heard for the others, or the call's end), with an event for each step; a
failed or timed-out call's span has an error status.

It is fed by the call's events (:meth:`CallTelemetry.event`) and a few marks the
events do not carry (a result taken into the conversation, an announcement heard).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ..clock import Clock
from ..config import Delivery
from ..events import Event
from ..tools.spec import ToolSpec
from . import metrics, tracing
from .tracing import CALL_ID
from .turns import STAGES, TurnLatency, TurnTimer

TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_NAME = "gen_ai.tool.name"
_FAILED = frozenset({"failed", "timed_out"})


@dataclass(slots=True)
class _ToolSpan:
    span: Span
    is_async: bool
    #: The delivery policy in force: the tool's, unless its result chose another.
    delivery: str


class CallTelemetry:
    def __init__(
        self,
        call_id: str,
        clock: Clock,
        specs: Mapping[str, ToolSpec],
        *,
        model: str = "",
        provider: str = "",
        assistant: str | None = None,
    ) -> None:
        self.call_id = call_id
        self.clock = clock
        self.specs = specs
        self.model = model
        self.provider = provider
        self.assistant = assistant
        self._call: Span | None = None
        self._turn: Span | None = None
        self._tools: dict[str, _ToolSpan] = {}
        self._live = False

    # -- the call ----------------------------------------------------------------------

    def opened(self) -> None:
        attributes = {CALL_ID: self.call_id}
        if self.assistant:
            attributes["backchannel.assistant.name"] = self.assistant
        self._call = tracing.start("call", self.clock, attributes=attributes)
        self._live = True
        metrics.CALLS.inc()
        metrics.CALLS_LIVE.inc()

    def closed(self, reason: str) -> None:
        if not self._live:
            return
        self._live = False
        metrics.CALLS_LIVE.dec()
        metrics.CALLS_ENDED.labels(reason=reason).inc()
        self.turn_dropped()
        for tool in self._tools.values():
            tool.span.set_attribute("backchannel.tool_call.open_at_end", True)
            tracing.end(tool.span, self.clock)
        self._tools.clear()
        if self._call is not None:
            self._call.set_attribute("backchannel.call.ended_reason", reason)
            tracing.end(self._call, self.clock)

    def context(self) -> Context | None:
        """The parent for a span made now: the open turn's, else the call's."""
        return tracing.under(self._turn or self._call)

    # -- turns -------------------------------------------------------------------------

    def timer(self, answered: Callable[[TurnLatency], None] | None = None) -> TurnTimer:
        """A turn timer whose turns become spans here (and go to ``answered`` too)."""

        def done(latency: TurnLatency) -> None:
            self.turn_answered(latency)
            if answered is not None:
                answered(latency)

        return TurnTimer(self.clock, done, opened=self.turn_opened, dropped=self.turn_dropped)

    def turn_opened(self, speech_ended: float) -> None:
        self.turn_dropped()
        self._turn = tracing.start(
            "turn", self.clock, parent=tracing.under(self._call), at=speech_ended
        )
        self._turn.set_attribute(CALL_ID, self.call_id)

    def turn_dropped(self) -> None:
        if self._turn is not None:
            self._turn.set_attribute("backchannel.turn.answered", False)
            tracing.end(self._turn, self.clock)
            self._turn = None

    def turn_answered(self, latency: TurnLatency) -> None:
        stages = latency.stages()
        for name, seconds in stages.items():
            metrics.TURN_SECONDS.labels(stage=name).observe(seconds)
        metrics.TURN_SECONDS.labels(stage="total").observe(latency.total)
        turn, self._turn = self._turn, None
        if turn is None:
            return
        turn.set_attributes(
            {
                "backchannel.turn.index": latency.index,
                "backchannel.turn.answered": True,
                **{f"backchannel.turn.{k}_ms": round(v * 1000) for k, v in stages.items()},
            }
        )
        at = latency.speech_ended
        parent = tracing.under(turn)
        for name in STAGES:
            if name not in stages:
                continue
            stage = tracing.start(name, self.clock, parent=parent, at=at)
            stage.set_attribute(CALL_ID, self.call_id)
            at += stages[name]
            tracing.end(stage, self.clock, at=at)
        tracing.end(turn, self.clock, at=at)

    # -- model requests ----------------------------------------------------------------

    @contextmanager
    def model_request(self) -> Iterator[Span]:
        """A span around one request to the model (GenAI conventions: ``chat {model}``)."""
        attributes = {
            CALL_ID: self.call_id,
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
        }
        name = f"chat {self.model}" if self.model else "chat"
        with tracing.span(
            name, self.clock, parent=self.context(), attributes=attributes, kind=SpanKind.CLIENT
        ) as span:
            yield span

    # -- tool calls --------------------------------------------------------------------

    def event(self, event: Event) -> None:
        """Follow the tool calls' lifecycle through the call's events."""
        data = event.data
        if event.type == "tool-calls":
            for item in data.get("toolCallList", ()):
                self._tool_called(item)
        elif event.type == "tool-call-progress":
            self._step(str(data.get("toolCallId")), "progress")
        elif event.type == "tool-calls-result":
            result = data.get("toolCallResult") or {}
            self._tool_result(result)
        elif event.type == "tool-calls-cancelled":
            for result in data.get("toolCallList", ()):
                self._step(str(result.get("toolCallId")), "cancelled", close=True)
        elif event.type == "user-interrupted" and self._call is not None:
            self._call.add_event("user-interrupted", timestamp=tracing.ns(event.at))

    def in_conversation(self, tool_call_id: str) -> None:
        """The result is in the model's history: the end of a sync or silent tool
        call's life here (no announcement follows)."""
        tool = self._tools.get(tool_call_id)
        ends = tool is not None and (not tool.is_async or tool.delivery == Delivery.SILENT)
        self._step(tool_call_id, "in-conversation", close=ends)

    def spoken(self, tool_call_id: str) -> None:
        """The result's announcement was heard whole: the tool call's life here ends."""
        self._step(tool_call_id, "spoken", close=True)

    def _tool_called(self, item: Mapping[str, Any]) -> None:
        tool_call_id, name = str(item.get("id")), str(item.get("name"))
        is_async = bool(item.get("async"))
        route = str(item.get("route", ""))
        metrics.TOOL_CALLS.labels(route=route, mode="async" if is_async else "sync").inc()
        if not self._live:
            return
        spec = self.specs.get(name)
        delivery = spec.delivery.value if spec is not None else Delivery.WHEN_IDLE.value
        attributes = {
            CALL_ID: self.call_id,
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.type": "function",
            TOOL_NAME: name,
            TOOL_CALL_ID: tool_call_id,
            "backchannel.tool.route": route,
            "backchannel.tool.async": is_async,
            "backchannel.tool.delivery": delivery,
        }
        span = tracing.start(
            f"execute_tool {name}",
            self.clock,
            parent=tracing.under(self._call),
            attributes=attributes,
        )
        self._tools[tool_call_id] = _ToolSpan(span, is_async, delivery)

    def _tool_result(self, result: Mapping[str, Any]) -> None:
        tool_call_id = str(result.get("toolCallId"))
        tool = self._tools.get(tool_call_id)
        if tool is None:
            return
        state = str(result.get("state"))
        tool.delivery = str(result.get("delivery") or tool.delivery)  # a result may choose
        tool.span.set_attributes(
            {"backchannel.tool_call.state": state, "backchannel.tool.delivery": tool.delivery}
        )
        if result.get("late"):
            tool.span.set_attribute("backchannel.tool_call.late", True)
        if state in _FAILED:
            tool.span.set_attribute("error.type", state)
            tool.span.set_status(Status(StatusCode.ERROR, str(result.get("error") or state)))
        # A sync call that timed out or was cancelled brings nothing into the history.
        ends = not tool.is_async and state in ("timed_out", "cancelled")
        self._step(tool_call_id, "result", close=ends, attributes={"state": state})

    def _step(
        self,
        tool_call_id: str,
        name: str,
        *,
        close: bool = False,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        tool = self._tools.get(tool_call_id)
        if tool is None:
            return
        tool.span.add_event(name, attributes=attributes, timestamp=tracing.ns(self.clock.wall()))
        if close:
            del self._tools[tool_call_id]
            tracing.end(tool.span, self.clock)
