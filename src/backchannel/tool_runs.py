"""The tool calls of one call that are still under way: their tasks, timers and waiters.

:class:`ToolRuns` takes the tool calls of a model step, records them in the ledger, says
their start lines, hands them to the right executor, gives async ones a placeholder and a
timeout, and waits for sync ones (saying the delayed line, giving up at the timeout). A
result itself always comes back through :meth:`backchannel.call.Call.submit_result`.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import TYPE_CHECKING, Any

from .config import Delivery
from .conversation import Message
from .errors import Conflict
from .ledger.ledger import stored_result
from .ledger.records import ToolCallRecord
from .ledger.retry import is_store_error
from .llm.base import ToolCallRequest
from .response import Response, Step
from .results import ResultSource, ToolResult
from .tools.arguments import normalise
from .tools.executors import Invocation, executors_for
from .tools.spec import Route, ToolSpec
from .tools.vapi import tool_call_item, tool_with_tool_call
from .waiting import wait_for_result

if TYPE_CHECKING:
    from .call import Call

PLACEHOLDER = (
    "This tool runs in the background. Its result is not available yet; it will be added "
    "to this conversation when it arrives. Tell the user it has started; do not guess the result."
)


class ToolRuns:
    def __init__(self, call: Call) -> None:
        self.call = call
        self._executors = executors_for(call.engine.tools, call.engine.tool_server)
        #: Sync calls a response is waiting on, by tool-call id.
        self.waiters: dict[str, asyncio.Future[ToolResult]] = {}
        #: Calls not yet in a terminal state.
        self.open: dict[str, ToolSpec] = {}
        self.timers: dict[str, asyncio.Task[Any]] = {}
        #: In-call executors (in-process tools), cancellable with the call.
        self.runs: dict[str, asyncio.Task[Any]] = {}

    def waiter(self, tool_call_id: str) -> asyncio.Future[ToolResult] | None:
        return self.waiters.get(tool_call_id)

    def expecting_background(self) -> bool:
        """Whether any async call of this call may still deliver a result."""
        return any(spec.is_async for spec in self.open.values())

    def starting(self, response: Response, name: str) -> None:
        """The model has begun a call to ``name``: its start line plays now, while the
        arguments are still being generated (a small local model takes seconds to write
        them), instead of after the call is complete."""
        spec = self.call.specs.get(name)
        if spec is not None and spec.spoken.start and not spec.spoken.start_blocking:
            response.speak_aside(spec.spoken.start)
            response.started_early[name] = response.started_early.get(name, 0) + 1

    def stop_all(self) -> None:
        """The call is ending: stop timers and in-call executors (a tool server's request
        goes on in the engine, so its reply still lands); the ledger keeps the calls open."""
        for task in [*self.timers.values(), *self.runs.values()]:
            task.cancel()

    async def run_step(self, response: Response, step: Step) -> None:
        """Record the step's tool calls, say their start lines, run them, wait for sync ones."""
        invocations = [inv for req in step.tool_calls if (inv := await self._record(req))]
        self.call.emit(
            "tool-calls",
            toolCallList=[invocation_event(i) for i in invocations],
            toolWithToolCallList=[
                tool_with_tool_call(i.tool_call_id, i.spec, i.arguments) for i in invocations
            ],
        )
        for inv in invocations:
            if response.started_early.get(inv.spec.name, 0) > 0:
                response.started_early[inv.spec.name] -= 1  # said already
            elif inv.spec.spoken.start:
                utterance = response.speak_aside(inv.spec.spoken.start)
                if inv.spec.spoken.start_blocking:
                    await response.tracker.spoken(utterance)
        response.started_early.clear()  # a call begun but never completed says no more
        sync = [i for i in invocations if not i.spec.is_async and i.spec.route is not Route.BUILTIN]
        loop = asyncio.get_running_loop()
        for inv in sync:  # before any executor runs, so no answer can slip past its waiter
            self.waiters[inv.tool_call_id] = loop.create_future()
        for inv in invocations:
            if inv.spec.route is Route.BUILTIN:
                await self._run_builtin(response, inv)
                continue
            if inv.spec.route is Route.SERVER:
                # A tool server may answer after the call has ended; that reply must land,
                # so its request runs in the engine and is never cancelled with the call.
                self.call.engine.spawn(self._execute(inv))
            else:
                self.runs[inv.tool_call_id] = self.call.spawn(self._execute(inv))
            if inv.spec.is_async:
                index = self.call.conversation.append(
                    Message("tool", PLACEHOLDER, tool_call_id=inv.tool_call_id)
                )
                response.placeholder(inv.tool_call_id, index)
                self.timers[inv.tool_call_id] = self.call.spawn(self._async_timeout(inv))
        await asyncio.gather(*(self._await_sync(response, inv) for inv in sync))

    async def _record(self, req: ToolCallRequest) -> Invocation | None:
        spec = self.call.specs.get(req.name)
        if spec is None:
            self._tool_error(req.id, "unknown_tool", f"There is no tool named {req.name!r}.")
            return None
        arguments = normalise(req.arguments, spec.parameters)  # "4,417" → "4417"
        try:
            await self.call.persist(
                lambda: self.call.ledger.record(self.call.call_id, req.id, spec, arguments),
                f"record tool call {req.id}",
            )
        except Conflict:
            self._tool_error(req.id, "duplicate_tool_call_id", "This tool call id was used before.")
            return None
        except Exception as exc:
            if not is_store_error(exc):
                raise
            self._tool_error(req.id, "store_unavailable", "The tool call could not be recorded.")
            return None
        self.open[req.id] = spec
        call = {"id": self.call.call_id, **self.call.details}
        return Invocation(self.call.call_id, req.id, spec, arguments, call)

    def _tool_error(self, tool_call_id: str, code: str, message: str) -> None:
        content = json.dumps({"error": {"code": code, "message": message}})
        self.call.conversation.append(Message("tool", content, tool_call_id=tool_call_id))

    async def _execute(self, inv: Invocation) -> None:
        engine = self.call.engine

        async def deliver(result: ToolResult, source: ResultSource) -> object:
            return await engine.submit_result(inv.call_id, result, source)

        await self.call.persist(
            lambda: self.call.ledger.start(self.call.call_id, inv.tool_call_id), "start a tool call"
        )
        await self._executors[inv.spec.route].execute(inv, deliver)

    async def _run_builtin(self, response: Response, inv: Invocation) -> None:
        if inv.spec.name == "endCall":
            await self._end_after(response, inv, "Ending the call.")
            return
        if inv.spec.name == "transferCall" and self.call.can_transfer:
            number = str(inv.arguments.get("destination") or "") or next(
                iter(inv.spec.destinations), ""
            )
            if number in inv.spec.destinations:
                self.call.transfer_to = number
                await self._end_after(response, inv, f"Transferring the call to {number}.")
                return
        error = f"{inv.spec.name} is not available on this call"
        await self.call.submit_result(
            ToolResult(inv.tool_call_id, error=error), ResultSource.ENGINE
        )
        self._tool_error(inv.tool_call_id, "builtin_unavailable", error)

    async def _end_after(self, response: Response, inv: Invocation, line: str) -> None:
        """A built-in that ends the call once this response has been spoken."""
        await self.call.submit_result(
            ToolResult(inv.tool_call_id, result=line), ResultSource.ENGINE
        )
        self.call.conversation.append(Message("tool", line, tool_call_id=inv.tool_call_id))
        response.end_call_after = True

    async def _await_sync(self, response: Response, inv: Invocation) -> None:
        """Wait for a sync tool's result, saying the delayed line; give up at the timeout."""
        fut = self.waiters[inv.tool_call_id]
        spoken = inv.spec.spoken
        try:
            result = await wait_for_result(
                fut,
                self.call.clock,
                inv.spec.timeout_seconds,
                delay=spoken.delayed_after if spoken.delayed else None,
                on_delay=(lambda: response.speak_aside(spoken.delayed or "")),
            )
        finally:
            self.waiters.pop(inv.tool_call_id, None)
        if result is None:
            record = await self.call.persist(
                lambda: self.call.ledger.time_out(self.call.call_id, inv.tool_call_id),
                "time out a tool call",
            )
            if record is not None:
                self.settled(inv.tool_call_id)
                self.call.emit("tool-calls-result", toolCallResult=result_event(record))
                seconds = inv.spec.timeout_seconds
                self._tool_error(
                    inv.tool_call_id, "tool_timeout", f"No result within {seconds:g} s."
                )
                if spoken.failed:
                    response.speak_aside(spoken.failed)
                return
            result = stored_result(await self.call.ledger.get(self.call.call_id, inv.tool_call_id))
        self.call.conversation.append(
            Message("tool", result.model_content(), tool_call_id=inv.tool_call_id)
        )
        await self.call.delivered(inv.tool_call_id)
        fixed, hint = spoken.after(result.ok)
        line = result.message or fixed
        if not line and hint:  # a ``role: system`` line: the model answers from it
            self.call.conversation.add_note(Message("system", hint))
        if line:
            response.speak_aside(line)

    async def _async_timeout(self, inv: Invocation) -> None:
        await self.call.clock.sleep(inv.spec.timeout_seconds)
        self.timers.pop(inv.tool_call_id, None)
        record = await self.call.persist(
            lambda: self.call.ledger.time_out(self.call.call_id, inv.tool_call_id),
            "time out a tool call",
        )
        if record is None:
            return
        self.settled(inv.tool_call_id)
        self.call.emit("tool-calls-result", toolCallResult=result_event(record))
        self.call.conversation.add_note(
            Message(
                "system",
                f"Background tool {record.name} (toolCallId {record.tool_call_id}) timed out after "
                f"{inv.spec.timeout_seconds:g} s. Its result may still arrive later.",
            )
        )
        if record.delivery is not Delivery.SILENT:
            self.call.announce(record, inv.spec.spoken.failed, failed=True, key_suffix="#timeout")

    async def cancel_on_interruption(self) -> None:
        cancelled: list[ToolCallRecord] = []
        for tool_call_id, spec in list(self.open.items()):
            if not spec.cancel_on_interruption:
                continue
            record = await self.call.persist(
                functools.partial(self.call.ledger.cancel, self.call.call_id, tool_call_id),
                "cancel a tool call",
            )
            if record is None:
                continue
            run = self.runs.get(tool_call_id)
            self.settled(tool_call_id)
            if run is not None and spec.route is Route.IN_PROCESS:
                run.cancel()
            cancelled.append(record)
        if cancelled:
            self.call.emit(
                "tool-calls-cancelled", toolCallList=[result_event(r) for r in cancelled]
            )

    def settled(self, tool_call_id: str) -> None:
        """The tool call reached a terminal state: stop its timer, forget it as open."""
        self.open.pop(tool_call_id, None)
        self.runs.pop(tool_call_id, None)
        timer = self.timers.pop(tool_call_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()


def invocation_event(inv: Invocation) -> dict[str, Any]:
    """A ``toolCallList`` item, and where the tool runs."""
    return {
        **tool_call_item(inv.tool_call_id, inv.spec, inv.arguments),
        "route": inv.spec.route.value,
        "async": inv.spec.is_async,
    }


def result_event(record: ToolCallRecord) -> dict[str, Any]:
    return {
        "toolCallId": record.tool_call_id,
        "name": record.name,
        "state": record.state.value,
        "result": record.result,
        "error": record.error,
        "metadata": record.metadata,
        "late": record.late,
        "delivery": record.delivery.value,
    }
