"""The ledger's rules: every tool call recorded, every move guarded, every result kept once.

All writes go through :meth:`Ledger._update`, which reads a record, computes the next
one with a pure function, and writes it with the store's compare-and-swap, retrying on a
lost race. Inside one process a per-record lock keeps 50 simultaneous posts of the same
result from racing at all; across processes the compare-and-swap does.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ..clock import Clock, SystemClock
from ..config import Delivery
from ..errors import BackchannelError, Conflict, Forbidden, InvalidInput, NotFound
from ..lifecycle import CallState, ToolCallState, transition
from ..results import ResultSource, ToolResult
from ..telemetry.metrics import TOOL_RESULTS
from ..tools.spec import Route, ToolSpec
from .records import CallRecord, Progress, ToolCallRecord
from .store import LedgerStore

_MAX_RACES = 20

# Which sources may answer a call routed where. The API (any backend holding the call's
# token) and the engine itself may answer anything.
_ALLOWED_SOURCES: dict[ResultSource, frozenset[Route]] = {
    ResultSource.CLIENT: frozenset({Route.CLIENT}),
    ResultSource.WEBHOOK: frozenset({Route.SERVER}),
    ResultSource.IN_PROCESS: frozenset({Route.IN_PROCESS}),
    ResultSource.API: frozenset(Route),
    ResultSource.ENGINE: frozenset(Route),
}


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    PROGRESS = "progress"
    DUPLICATE = "duplicate"
    #: Accepted, but after a timeout, a cancellation or the end of the call.
    LATE = "late"


@dataclass(frozen=True, slots=True)
class Resolution:
    record: ToolCallRecord
    outcome: Outcome

    @property
    def duplicate(self) -> bool:
        return self.outcome is Outcome.DUPLICATE

    def to_dict(self) -> dict[str, Any]:
        return {
            "toolCallId": self.record.tool_call_id,
            "state": self.record.state.value,
            "outcome": self.outcome.value,
            "duplicate": self.duplicate,
            "late": self.record.late,
        }


def unsaid(record: ToolCallRecord) -> bool:
    """Whether the record holds a background result (async, or one that came after a
    timeout) whose announcement the caller never heard: not ``silent``, not cancelled,
    not marked spoken."""
    return (
        record.has_result
        and record.spoken_at is None
        and record.delivery is not Delivery.SILENT
        and (record.is_async or record.late)
        and record.state is not ToolCallState.CANCELLED
    )


def owed_report(record: ToolCallRecord) -> bool:
    """Whether a result must be reported (``tool-result-after-call``) now that its call
    is gone: one the conversation never got, or a background result never said. (A
    sync result the model got was answered in the same turn; a silent one needs no
    words.)"""
    if not record.has_result or record.state is ToolCallState.CANCELLED:
        return False
    return record.delivered_at is None or unsaid(record)


def stored_result(record: ToolCallRecord) -> ToolResult:
    """The result a record holds, as a value comparable with a new one."""
    return ToolResult(
        tool_call_id=record.tool_call_id,
        name=record.name,
        result=record.result,
        error=record.error,
        message=record.message,
        metadata=record.metadata,
        delivery=record.delivery,
    )


class Ledger:
    def __init__(self, store: LedgerStore, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    # -- calls -------------------------------------------------------------------------

    async def open_call(self, call_id: str) -> CallRecord:
        call = CallRecord(call_id, CallState.IN_PROGRESS, created_at=self.clock.wall())
        await self.store.insert_call(call)
        return call

    async def get_call(self, call_id: str) -> CallRecord:
        call = await self.store.get_call(call_id)
        if call is None:
            raise NotFound(f"no call {call_id!r}", code="unknown_call")
        return call

    async def end_call(self, call_id: str, reason: str) -> CallRecord:
        """Mark the call ended (idempotent: a second end keeps the first reason)."""
        for _ in range(_MAX_RACES):
            call = await self.get_call(call_id)
            if call.state is CallState.ENDED:
                return call
            ended = replace(
                call,
                state=transition(call.state, CallState.ENDED),
                ended_at=self.clock.wall(),
                ended_reason=reason,
                version=call.version + 1,
            )
            if await self.store.swap_call(call.version, ended):
                return ended
        raise BackchannelError("could not end call under contention", code="ledger_contention")

    async def end_orphaned_calls(self, live: set[str], reason: str) -> list[CallRecord]:
        """End every call recorded in progress that no one is running (its process died).

        Their tool calls stay as they are; results that arrive later are kept as late.
        Only safe where this process is the only one running calls on this store.
        """
        orphans = [
            c
            for c in await self.store.calls_in_state(CallState.IN_PROGRESS)
            if c.call_id not in live
        ]
        return [await self.end_call(c.call_id, reason) for c in orphans]

    # -- tool calls --------------------------------------------------------------------

    async def record(
        self, call_id: str, tool_call_id: str, spec: ToolSpec, arguments: dict[str, Any]
    ) -> ToolCallRecord:
        """Write down a tool call the model just made, in state ``pending``."""
        record = ToolCallRecord(
            call_id=call_id,
            tool_call_id=tool_call_id,
            name=spec.name,
            arguments=arguments,
            route=spec.route,
            is_async=spec.is_async,
            delivery=spec.delivery,
            timeout_seconds=spec.timeout_seconds,
            cancel_on_interruption=spec.cancel_on_interruption,
            created_at=self.clock.wall(),
        )
        await self.store.insert(record)
        return record

    async def get(self, call_id: str, tool_call_id: str) -> ToolCallRecord:
        record = await self.store.get(call_id, tool_call_id)
        if record is None:
            raise NotFound(
                f"no tool call {tool_call_id!r} in call {call_id!r}",
                code="unknown_tool_call",
                toolCallId=tool_call_id,
            )
        return record

    async def list_for_call(self, call_id: str) -> list[ToolCallRecord]:
        return await self.store.list_for_call(call_id)

    async def start(self, call_id: str, tool_call_id: str) -> ToolCallRecord:
        """``pending → running``; a call already further along is left as it is."""
        now = self.clock.wall()

        def step(r: ToolCallRecord) -> ToolCallRecord:
            if r.state is not ToolCallState.PENDING:
                return r
            return replace(r, state=transition(r.state, ToolCallState.RUNNING), started_at=now)

        return await self._update(call_id, tool_call_id, step)

    async def resolve(
        self,
        call_id: str,
        result: ToolResult,
        source: ResultSource,
        *,
        call_live: bool = False,
        delivering: bool = False,
    ) -> Resolution:
        """Apply a result or progress update from ``source``, exactly once.

        The same result again is a no-op reported as ``duplicate``; a different one for a
        call that already has its result raises ``Conflict`` carrying the stored result.
        A result for a call that timed out, was cancelled or whose call ended is kept
        and reported as ``late``; the state the call reached first stays. ``call_live``
        lets the process that runs the call skip reading the call's state; ``delivering``
        says that process puts the result into the conversation right away, so the same
        write records when the model got it.
        """
        call_ended = False
        if not call_live:  # the owner of a live call knows it has not ended; others ask
            call = await self.store.get_call(call_id)
            call_ended = call is not None and call.state is CallState.ENDED
        now = self.clock.wall()
        outcome: list[Outcome] = []

        def step(r: ToolCallRecord) -> ToolCallRecord:
            _check_source(r, result, source)
            outcome.clear()
            if result.will_continue:
                return _apply_progress(r, result, now, outcome)
            nxt = _apply_result(r, result, source, now, call_ended, outcome)
            if delivering and nxt is not r and nxt.state is not ToolCallState.CANCELLED:
                nxt = replace(nxt, delivered_at=nxt.delivered_at or now)
            return nxt

        record = await self._update(call_id, result.tool_call_id, step)
        TOOL_RESULTS.labels(
            source=source.value, outcome=outcome[0].value, delivery=record.delivery.value
        ).inc()
        return Resolution(record, outcome[0])

    async def time_out(self, call_id: str, tool_call_id: str) -> ToolCallRecord | None:
        """Mark the call ``timed_out``; ``None`` if it had already ended some other way."""
        return await self._finish(call_id, tool_call_id, ToolCallState.TIMED_OUT)

    async def cancel(self, call_id: str, tool_call_id: str) -> ToolCallRecord | None:
        """Mark the call ``cancelled``; ``None`` if it had already ended some other way."""
        return await self._finish(call_id, tool_call_id, ToolCallState.CANCELLED)

    async def mark_delivered(self, call_id: str, tool_call_id: str) -> ToolCallRecord:
        """Note when the model first saw the result (kept at the first time)."""
        now = self.clock.wall()
        return await self._update(
            call_id,
            tool_call_id,
            lambda r: r if r.delivered_at is not None else replace(r, delivered_at=now),
        )

    async def mark_spoken(self, call_id: str, tool_call_id: str) -> ToolCallRecord:
        """Note when the result was announced (kept at the first time)."""
        now = self.clock.wall()
        return await self._update(
            call_id,
            tool_call_id,
            lambda r: r if r.spoken_at is not None else replace(r, spoken_at=now),
        )

    # -- internals ---------------------------------------------------------------------

    async def _finish(
        self, call_id: str, tool_call_id: str, target: ToolCallState
    ) -> ToolCallRecord | None:
        now = self.clock.wall()
        changed: list[bool] = []

        def step(r: ToolCallRecord) -> ToolCallRecord:
            changed.clear()
            if r.state.terminal:
                return r
            changed.append(True)
            return replace(r, state=transition(r.state, target), resolved_at=now)

        record = await self._update(call_id, tool_call_id, step)
        return record if changed else None

    async def _update(
        self,
        call_id: str,
        tool_call_id: str,
        step: Callable[[ToolCallRecord], ToolCallRecord],
    ) -> ToolCallRecord:
        key = (call_id, tool_call_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            for _ in range(_MAX_RACES):
                current = await self.get(call_id, tool_call_id)
                nxt = step(current)
                if nxt is current:
                    return current
                nxt = replace(nxt, version=current.version + 1)
                if await self.store.swap(current.version, nxt):
                    return nxt
        raise BackchannelError(
            f"tool call {tool_call_id!r} kept changing under us", code="ledger_contention"
        )


def _check_source(r: ToolCallRecord, result: ToolResult, source: ResultSource) -> None:
    if r.route not in _ALLOWED_SOURCES[source]:
        code = (
            "tool_call_not_routed_to_client"
            if source is ResultSource.CLIENT
            else "result_source_not_allowed"
        )
        raise Forbidden(
            f"tool call {r.tool_call_id!r} runs on {r.route.value!r}; "
            f"a result from {source.value!r} may not answer it",
            code=code,
            toolCallId=r.tool_call_id,
        )
    if result.name is not None and result.name != r.name:
        raise InvalidInput(
            f"tool call {r.tool_call_id!r} is {r.name!r}, not {result.name!r}",
            code="tool_name_mismatch",
            toolCallId=r.tool_call_id,
        )


def _apply_progress(
    r: ToolCallRecord, result: ToolResult, now: float, outcome: list[Outcome]
) -> ToolCallRecord:
    if r.state.terminal:
        raise Conflict(
            f"tool call {r.tool_call_id!r} is already {r.state.value}; no more progress",
            code="tool_call_finished",
            state=r.state.value,
        )
    last = r.progress[-1] if r.progress else None
    if last is not None and last.result == result.result and last.message == result.message:
        outcome.append(Outcome.DUPLICATE)
        return r
    outcome.append(Outcome.PROGRESS)
    return replace(
        r,
        state=transition(r.state, ToolCallState.RUNNING),
        started_at=r.started_at or now,
        progress=(*r.progress, Progress(now, result.result, result.message)),
        progress_at=now,
    )


def _apply_result(
    r: ToolCallRecord,
    result: ToolResult,
    source: ResultSource,
    now: float,
    call_ended: bool,
    outcome: list[Outcome],
) -> ToolCallRecord:
    if r.has_result:
        stored = stored_result(r)
        if stored.same_outcome(result):
            outcome.append(Outcome.DUPLICATE)
            return r
        raise Conflict(
            f"tool call {r.tool_call_id!r} already has a different result",
            code="result_conflict",
            stored={"result": stored.result, "error": stored.error, "state": r.state.value},
        )
    fields: dict[str, Any] = {
        "result": result.result,
        "error": result.error,
        "message": result.message,
        "metadata": result.metadata,
        "resolved_by": source,
        "result_at": now,
    }
    if result.delivery is not None:
        fields["delivery"] = result.delivery
    if r.state.terminal:
        outcome.append(Outcome.LATE)
        return replace(r, late=True, **fields)
    target = ToolCallState.SUCCEEDED if result.ok else ToolCallState.FAILED
    outcome.append(Outcome.LATE if call_ended else Outcome.ACCEPTED)
    return replace(
        r,
        state=transition(r.state, target),
        resolved_at=now,
        late=call_ended,
        started_at=r.started_at or now,
        **fields,
    )
