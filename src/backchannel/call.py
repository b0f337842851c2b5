"""One live conversation: owns its task group, its history, its arbiter and its tools.

A :class:`Call` is driven by events — the user started or stopped speaking, a final
transcript, the output started or finished an utterance, a tool result arrived — and
turns them into responses through the :class:`~backchannel.arbiter.Arbiter`. Every task
it starts (the speech player, tool executors, timeouts, responses) lives in the call's
own task group and ends with the call.

Use it as an async context manager from :meth:`backchannel.engine.Engine.call`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .arbiter import Announcement, SayRequest, Verdict
from .config import AssistantConfig, Delivery
from .conversation import Message, Role
from .errors import BackchannelError, CallEnded, Conflict
from .events import Event, EventSink
from .ledger.ledger import Outcome, Resolution, stored_result
from .ledger.records import ToolCallRecord
from .lifecycle import CallState, ToolCallState, transition
from .llm.base import LLM
from .response import Response, Step
from .results import ResultSource, ToolResult
from .speech import SpeechOutput
from .tools.executors import Invocation, executors_for
from .tools.spec import Route, ToolSpec, resolve_tools
from .waiting import wait_for_result

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("backchannel.call")

PLACEHOLDER = (
    "This tool runs in the background. Its result is not available yet; it will be added "
    "to this conversation when it arrives. Tell the user it has started; do not guess the result."
)


class Call:
    def __init__(
        self,
        engine: Engine,
        assistant: AssistantConfig,
        *,
        call_id: str,
        output: SpeechOutput,
        events: EventSink,
        llm: LLM,
    ) -> None:
        from .arbiter import Arbiter
        from .conversation import Conversation

        self.engine = engine
        self.call_id = call_id
        self.assistant = assistant
        self.clock = engine.clock
        self.ledger = engine.ledger
        self.llm = llm
        self.output = output
        self.events = events
        self.specs = resolve_tools(assistant, engine.tools.specs())
        self._schemas = [spec.openai_schema() for spec in self.specs.values()]
        self.conversation = Conversation(assistant.model.messages)
        self.arbiter = Arbiter()
        self.state = CallState.QUEUED
        self.ended = asyncio.Event()
        self.ended_reason: str | None = None
        #: Every announcement that reached the listener whole, in order.
        self.announced: list[Announcement] = []
        self._executors = executors_for(engine.tools, engine.tool_server)
        self._tg = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._response: Response | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[ToolResult]] = {}
        self._open: dict[str, ToolSpec] = {}
        self._timers: dict[str, asyncio.Task[Any]] = {}
        self._runs: dict[str, asyncio.Task[Any]] = {}
        self._closing = False
        self._gathering: asyncio.Task[Any] | None = None
        output.attach(self)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Call:
        await self._tg.__aenter__()
        await self.ledger.open_call(self.call_id)
        self.state = transition(self.state, CallState.IN_PROGRESS)
        self.engine.live[self.call_id] = self
        self.spawn(self.output.run(), guard=False)
        self.emit("status-update", status=self.state.value)
        first = self.assistant.first_message
        if first and self.assistant.first_message_mode == "assistant-speaks-first":
            self._apply(self.arbiter.say(SayRequest(first)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.ended.is_set():
                await self.hang_up("customer-ended-call" if exc is None else "pipeline-error")
        finally:
            for task in list(self._tasks):
                task.cancel()
            self.engine.live.pop(self.call_id, None)
            await self._tg.__aexit__(exc_type, exc, tb)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, guard: bool = True) -> asyncio.Task[Any]:
        """Start a task in the call's group; a guarded task's crash is logged, not fatal."""
        task = self._tg.create_task(self._guarded(coro) if guard else coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never starts ``coro``: close it quietly.
        task.add_done_callback(lambda _t: coro.close())
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except BackchannelError as exc:
            log.warning("call %s: %s (%s)", self.call_id, exc.message, exc.code)
        except Exception:
            log.exception("call %s: background task failed", self.call_id)

    async def hang_up(self, reason: str = "customer-ended-call") -> None:
        """End the call: stop speaking, keep pending tool calls in the ledger, report."""
        if self._closing:
            await self.ended.wait()
            return
        self._closing = True
        self.arbiter.close()
        task = self._response_task
        if self._response is not None and task is not None:
            self._cut_response()
            await asyncio.wait([task])
        self.output.stop()
        for t in [*self._timers.values(), *self._runs.values()]:
            t.cancel()
        self.state = transition(self.state, CallState.ENDED)
        self.ended_reason = reason
        await self.ledger.end_call(self.call_id, reason)
        records = await self.ledger.list_for_call(self.call_id)
        self.emit("status-update", status=self.state.value, endedReason=reason)
        self.emit(
            "end-of-call-report",
            endedReason=reason,
            transcript=self.conversation.transcript(),
            messages=self.conversation.to_openai(),
            toolCalls=[r.to_dict() for r in records],
        )
        self.ended.set()

    def request_end(self, reason: str) -> None:
        if not self._closing:
            self.spawn(self.hang_up(reason))

    # -- events in: the user -----------------------------------------------------------

    def user_started_speaking(self) -> None:
        self.emit("speech-update", role="user", status="started")
        if self.arbiter.user_started() is Verdict.CUT:
            self.emit("user-interrupted")
            self._cut_response()
            self.spawn(self._cancel_on_interruption())

    def user_stopped_speaking(self) -> None:
        self.emit("speech-update", role="user", status="stopped")
        self.arbiter.user_stopped()

    def user_transcript(self, text: str, *, final: bool = True) -> None:
        """A transcript of the user; a final one ends their turn once they are quiet."""
        self.emit(
            "transcript",
            role="user",
            transcriptType="final" if final else "partial",
            transcript=text,
        )
        if final:
            self._apply(self.arbiter.user_transcript(text))

    def send_text(self, text: str) -> None:
        """A typed user message (text calls): a whole user turn at once."""
        self.user_transcript(text)

    # -- events in: the speech output (SpeechListener) ---------------------------------

    def speech_started(self, utterance_id: int) -> None:
        if self._response is not None and self._response.tracker.owns(utterance_id):
            self._response.tracker.started(utterance_id)
            self.arbiter.audible()
        self.emit("speech-update", role="assistant", status="started")

    def speech_finished(self, utterance_id: int) -> None:
        if self._response is not None and self._response.tracker.owns(utterance_id):
            self._response.tracker.finished(utterance_id)
        self.emit("speech-update", role="assistant", status="stopped")

    # -- events in: control ------------------------------------------------------------

    def say(self, content: str, *, end_call_after: bool = False, interrupt: bool = False) -> None:
        self._ensure_live()
        self._apply(self.arbiter.say(SayRequest(content, end_call_after), interrupt=interrupt))

    def add_message(self, role: Role, content: str, *, trigger_response: bool = False) -> None:
        """Add a message to the history; with ``trigger_response`` the assistant responds."""
        self._ensure_live()
        if role == "tool":  # a tool message needs a tool call to follow; keep it as a note
            role, content = "system", f"Tool message: {content}"
        self.conversation.add_note(Message(role, content))
        self.emit("conversation-update", messages=self.conversation.to_openai())
        if trigger_response:
            self._apply(self.arbiter.trigger())

    # -- events in: results ------------------------------------------------------------

    async def submit_result(self, result: ToolResult, source: ResultSource) -> Resolution:
        """Record a result in the ledger, then bring it into the conversation once."""
        resolution = await self.ledger.resolve(self.call_id, result, source)
        if resolution.duplicate:
            return resolution
        record = resolution.record
        if resolution.outcome is Outcome.PROGRESS:
            self.emit(
                "tool-call-progress",
                toolCallId=record.tool_call_id,
                name=record.name,
                result=result.result,
                message=result.message,
            )
            self._on_progress(record, result)
            return resolution
        self.emit("tool-calls-result", toolCallResult=_result_event(record))
        self._settled(record.tool_call_id)
        waiter = self._waiters.get(record.tool_call_id)
        if waiter is not None and not waiter.done() and resolution.outcome is Outcome.ACCEPTED:
            waiter.set_result(stored_result(record))
        elif record.state is not ToolCallState.CANCELLED:
            await self._deliver_in_background(record)
        return resolution

    # -- the turn loop's helpers -------------------------------------------------------

    def tool_schemas(self) -> list[dict[str, Any]]:
        return self._schemas

    async def run_tools(self, response: Response, step: Step) -> None:
        """Record the step's tool calls, say their start lines, run them, wait for sync ones."""
        invocations = [inv for req in step.tool_calls if (inv := await self._record_tool(req))]
        self.emit("tool-calls", toolCallList=[_invocation_event(i) for i in invocations])
        for inv in invocations:
            if inv.spec.spoken.start:
                utterance = response.speak_aside(inv.spec.spoken.start)
                if inv.spec.spoken.start_blocking:
                    await response.tracker.spoken(utterance)
        sync = [i for i in invocations if not i.spec.is_async and i.spec.route is not Route.BUILTIN]
        loop = asyncio.get_running_loop()
        for inv in sync:  # before any executor runs, so no answer can slip past its waiter
            self._waiters[inv.tool_call_id] = loop.create_future()
        for inv in invocations:
            if inv.spec.route is Route.BUILTIN:
                await self._run_builtin(response, inv)
                continue
            self._runs[inv.tool_call_id] = self.spawn(self._execute(inv))
            if inv.spec.is_async:
                self.conversation.append(
                    Message("tool", PLACEHOLDER, tool_call_id=inv.tool_call_id)
                )
                self._timers[inv.tool_call_id] = self.spawn(self._async_timeout(inv))
        await asyncio.gather(*(self._await_sync(response, inv) for inv in sync))

    # -- internals: responses ----------------------------------------------------------

    def _apply(self, verdict: Verdict) -> None:
        if verdict is Verdict.START:
            plan = self.arbiter.next_plan()
            if plan is not None:
                self._response = Response(self, plan)
                self._response_task = self.spawn(self._run_response(self._response), guard=False)
        elif verdict is Verdict.CUT:
            self._cut_response()

    def _cut_response(self) -> None:
        response, task = self._response, self._response_task
        if response is None or task is None or response.cut:
            return
        response.cut = True
        response.tracker.cut(self.output.stop())
        task.cancel()

    async def _run_response(self, response: Response) -> None:
        failed = False
        try:
            await response.run()
        except asyncio.CancelledError:
            if not response.cut:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception:
            failed = True
            log.exception("call %s: response %s failed", self.call_id, response.plan.id)
        unspoken = response.close()
        if self._response is response:
            self._response = None
        verdict = self.arbiter.finished(response.plan, unspoken)
        for a in response.plan.announcements:
            if response.spoke(a):
                self.announced.append(a)
                if a.key == a.tool_call_id:
                    await self.ledger.mark_spoken(self.call_id, a.tool_call_id)
        if response.end_call_after and not response.cut:
            self.request_end("assistant-ended-call")
        elif not failed:
            self._apply(verdict)

    # -- internals: tools --------------------------------------------------------------

    async def _record_tool(self, req: Any) -> Invocation | None:
        spec = self.specs.get(req.name)
        if spec is None:
            self._tool_error(req.id, "unknown_tool", f"There is no tool named {req.name!r}.")
            return None
        try:
            await self.ledger.record(self.call_id, req.id, spec, dict(req.arguments))
        except Conflict:
            self._tool_error(req.id, "duplicate_tool_call_id", "This tool call id was used before.")
            return None
        self._open[req.id] = spec
        return Invocation(self.call_id, req.id, spec, dict(req.arguments))

    def _tool_error(self, tool_call_id: str, code: str, message: str) -> None:
        content = json.dumps({"error": {"code": code, "message": message}})
        self.conversation.append(Message("tool", content, tool_call_id=tool_call_id))

    async def _execute(self, inv: Invocation) -> None:
        await self.ledger.start(self.call_id, inv.tool_call_id)
        await self._executors[inv.spec.route].execute(inv, self.submit_result)

    async def _run_builtin(self, response: Response, inv: Invocation) -> None:
        if inv.spec.name == "endCall":
            await self.submit_result(
                ToolResult(inv.tool_call_id, result="Ending the call."), ResultSource.ENGINE
            )
            self.conversation.append(
                Message("tool", "Ending the call.", tool_call_id=inv.tool_call_id)
            )
            response.end_call_after = True
            return
        error = f"{inv.spec.name} is not available on this call"
        await self.submit_result(ToolResult(inv.tool_call_id, error=error), ResultSource.ENGINE)
        self._tool_error(inv.tool_call_id, "builtin_unavailable", error)

    async def _await_sync(self, response: Response, inv: Invocation) -> None:
        """Wait for a sync tool's result, saying the delayed line; give up at the timeout."""
        fut = self._waiters[inv.tool_call_id]
        spoken = inv.spec.spoken
        try:
            result = await wait_for_result(
                fut,
                self.clock,
                inv.spec.timeout_seconds,
                delay=spoken.delayed_after if spoken.delayed else None,
                on_delay=(lambda: response.speak_aside(spoken.delayed or "")),
            )
        finally:
            self._waiters.pop(inv.tool_call_id, None)
        if result is None:
            record = await self.ledger.time_out(self.call_id, inv.tool_call_id)
            if record is not None:
                self._settled(inv.tool_call_id)
                self.emit("tool-calls-result", toolCallResult=_result_event(record))
                seconds = inv.spec.timeout_seconds
                self._tool_error(
                    inv.tool_call_id, "tool_timeout", f"No result within {seconds:g} s."
                )
                if spoken.failed:
                    response.speak_aside(spoken.failed)
                return
            result = stored_result(await self.ledger.get(self.call_id, inv.tool_call_id))
        self.conversation.append(
            Message("tool", result.model_content(), tool_call_id=inv.tool_call_id)
        )
        await self.ledger.mark_delivered(self.call_id, inv.tool_call_id)
        line = result.message or (spoken.complete if result.ok else spoken.failed)
        if line:
            response.speak_aside(line)

    async def _async_timeout(self, inv: Invocation) -> None:
        await self.clock.sleep(inv.spec.timeout_seconds)
        self._timers.pop(inv.tool_call_id, None)
        record = await self.ledger.time_out(self.call_id, inv.tool_call_id)
        if record is None:
            return
        self._settled(inv.tool_call_id)
        self.emit("tool-calls-result", toolCallResult=_result_event(record))
        self.conversation.add_note(
            Message(
                "system",
                f"Background tool {record.name} (toolCallId {record.tool_call_id}) timed out after "
                f"{inv.spec.timeout_seconds:g} s. Its result may still arrive later.",
            )
        )
        if record.delivery is not Delivery.SILENT:
            self._announce(record, inv.spec.spoken.failed, failed=True, key_suffix="#timeout")

    async def _cancel_on_interruption(self) -> None:
        cancelled: list[ToolCallRecord] = []
        for tool_call_id, spec in list(self._open.items()):
            if not spec.cancel_on_interruption:
                continue
            record = await self.ledger.cancel(self.call_id, tool_call_id)
            if record is None:
                continue
            self._settled(tool_call_id)
            run = self._runs.pop(tool_call_id, None)
            if run is not None and spec.route is Route.IN_PROCESS:
                run.cancel()
            cancelled.append(record)
        if cancelled:
            self.emit("tool-calls-cancelled", toolCallList=[_result_event(r) for r in cancelled])

    def _settled(self, tool_call_id: str) -> None:
        """The tool call reached a terminal state: stop its timer, forget it as open."""
        self._open.pop(tool_call_id, None)
        timer = self._timers.pop(tool_call_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    def _on_progress(self, record: ToolCallRecord, result: ToolResult) -> None:
        if record.tool_call_id in self._waiters:
            if result.message and self._response is not None:
                self._response.speak_aside(result.message)
            return
        content = result.model_content() if result.result is not None else "(no details)"
        self.conversation.add_note(
            Message(
                "system",
                f"Progress from background tool {record.name} "
                f"(toolCallId {record.tool_call_id}): {content}",
            )
        )
        if result.message and record.delivery is not Delivery.SILENT:
            key = f"{record.tool_call_id}#progress{len(record.progress)}"
            self._apply_announcement(
                self.arbiter.result(
                    Announcement(
                        key,
                        record.tool_call_id,
                        record.name,
                        result.message,
                        interrupt=record.delivery is Delivery.INTERRUPT,
                    )
                )
            )

    async def _deliver_in_background(self, record: ToolCallRecord) -> None:
        late = (
            " It arrived after the tool had timed out."
            if record.state is ToolCallState.TIMED_OUT
            else ""
        )
        content = stored_result(record).model_content()
        self.conversation.add_note(
            Message(
                "system",
                f"Background tool result for {record.name} (toolCallId {record.tool_call_id}): "
                f"{content}{late}",
            )
        )
        await self.ledger.mark_delivered(self.call_id, record.tool_call_id)
        if record.delivery is Delivery.SILENT:
            return
        spec = self.specs.get(record.name)
        fixed = spec.spoken.complete if spec and record.error is None else None
        if spec and record.error is not None:
            fixed = spec.spoken.failed
        self._announce(record, record.message or fixed, failed=record.error is not None)

    def _announce(
        self, record: ToolCallRecord, text: str | None, *, failed: bool, key_suffix: str = ""
    ) -> None:
        announcement = Announcement(
            key=record.tool_call_id + key_suffix,
            tool_call_id=record.tool_call_id,
            name=record.name,
            text=text,
            failed=failed,
            interrupt=record.delivery is Delivery.INTERRUPT,
        )
        self._apply_announcement(self.arbiter.result(announcement))

    def _apply_announcement(self, verdict: Verdict) -> None:
        """Start an announcement, but give other open background calls a moment to join."""
        expecting = any(spec.is_async for spec in self._open.values())
        if verdict is Verdict.START and expecting and self.engine.gather_seconds > 0:
            if self._gathering is None:
                self._gathering = self.spawn(self._gather_then_start())
            return
        if self._gathering is not None and not expecting:
            self._gathering.cancel()
            self._gathering = None
        self._apply(verdict)

    async def _gather_then_start(self) -> None:
        try:
            await self.clock.sleep(self.engine.gather_seconds)
        finally:
            if self._gathering is asyncio.current_task():
                self._gathering = None
        self._apply(Verdict.START)

    # -- out ---------------------------------------------------------------------------

    def emit(self, type_: str, **data: Any) -> None:
        self.events.emit(Event(type_, self.call_id, self.clock.wall(), data))

    def _ensure_live(self) -> None:
        if self._closing:
            raise CallEnded(f"call {self.call_id!r} has ended", code="call_ended")


def _invocation_event(inv: Invocation) -> dict[str, Any]:
    return {
        "id": inv.tool_call_id,
        "type": "function",
        "function": {"name": inv.spec.name, "arguments": dict(inv.arguments)},
        "route": inv.spec.route.value,
        "async": inv.spec.is_async,
    }


def _result_event(record: ToolCallRecord) -> dict[str, Any]:
    return {
        "toolCallId": record.tool_call_id,
        "name": record.name,
        "state": record.state.value,
        "result": record.result,
        "error": record.error,
        "metadata": record.metadata,
        "late": record.late,
    }
