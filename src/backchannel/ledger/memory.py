"""An in-memory ledger store: nothing survives the process, nothing touches a thread.

For tests that need exact interleavings and for throwaway text calls.
"""

from __future__ import annotations

from ..errors import Conflict
from ..lifecycle import CallState
from .records import CallRecord, ToolCallRecord


class MemoryStore:
    def __init__(self) -> None:
        self._calls: dict[str, CallRecord] = {}
        self._records: dict[tuple[str, str], ToolCallRecord] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def insert_call(self, call: CallRecord) -> None:
        if call.call_id in self._calls:
            raise Conflict(f"call {call.call_id!r} exists", code="duplicate_call_id")
        self._calls[call.call_id] = call

    async def get_call(self, call_id: str) -> CallRecord | None:
        return self._calls.get(call_id)

    async def swap_call(self, expected_version: int, call: CallRecord) -> bool:
        current = self._calls.get(call.call_id)
        if current is None or current.version != expected_version:
            return False
        self._calls[call.call_id] = call
        return True

    async def calls_in_state(self, state: CallState) -> list[CallRecord]:
        return [c for c in self._calls.values() if c.state is state]

    async def insert(self, record: ToolCallRecord) -> None:
        if record.key in self._records:
            raise Conflict(
                f"tool call {record.tool_call_id!r} exists", code="duplicate_tool_call_id"
            )
        self._records[record.key] = record

    async def get(self, call_id: str, tool_call_id: str) -> ToolCallRecord | None:
        return self._records.get((call_id, tool_call_id))

    async def swap(self, expected_version: int, record: ToolCallRecord) -> bool:
        current = self._records.get(record.key)
        if current is None or current.version != expected_version:
            return False
        self._records[record.key] = record
        return True

    async def list_for_call(self, call_id: str) -> list[ToolCallRecord]:
        found = [r for (c, _), r in self._records.items() if c == call_id]
        return sorted(found, key=lambda r: r.created_at)
