"""The storage a ledger runs on: a small protocol, compare-and-swap at its core.

Stores know nothing of the rules; :class:`~backchannel.ledger.ledger.Ledger` does. A
store only promises that :meth:`LedgerStore.swap` replaces a record if and only if
nobody replaced it since it was read, so several processes can share one database.
"""

from __future__ import annotations

from typing import Protocol

from ..lifecycle import CallState
from .records import CallRecord, ToolCallRecord


class LedgerStore(Protocol):
    async def open(self) -> None:
        """Make the store ready (create tables); safe to call more than once."""
        ...

    async def close(self) -> None: ...

    async def insert_call(self, call: CallRecord) -> None:
        """Add a call; a second call with the same id raises ``Conflict``."""
        ...

    async def get_call(self, call_id: str) -> CallRecord | None: ...

    async def swap_call(self, expected_version: int, call: CallRecord) -> bool:
        """Replace the call if its stored version is ``expected_version``."""
        ...

    async def calls_in_state(self, state: CallState) -> list[CallRecord]:
        """Every call in ``state`` (e.g. the calls a crashed process left in progress)."""
        ...

    async def insert(self, record: ToolCallRecord) -> None:
        """Add a tool call; a second one with the same key raises ``Conflict``."""
        ...

    async def get(self, call_id: str, tool_call_id: str) -> ToolCallRecord | None: ...

    async def swap(self, expected_version: int, record: ToolCallRecord) -> bool:
        """Replace the record if its stored version is ``expected_version``."""
        ...

    async def list_for_call(self, call_id: str) -> list[ToolCallRecord]:
        """The call's tool calls in the order they were created."""
        ...
