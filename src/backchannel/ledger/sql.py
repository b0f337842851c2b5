"""The ledger on SQLAlchemy 2 async: SQLite (aiosqlite) by default, PostgreSQL (asyncpg) alike.

One code path for both databases. Each write is a single statement in its own
transaction; :meth:`SqlStore.swap` is ``UPDATE … WHERE version = :expected``, which is
atomic on both, so concurrent writers (tasks or processes) never overwrite each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..config import Delivery
from ..errors import Conflict
from ..lifecycle import CallState, ToolCallState
from ..results import ResultSource
from ..tools.spec import Route
from .records import CallRecord, Progress, ToolCallRecord

DEFAULT_URL = "sqlite+aiosqlite:///backchannel.db"

metadata = sa.MetaData()

calls = sa.Table(
    "bc_calls",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("ended_reason", sa.String(64)),
    sa.Column("version", sa.Integer, nullable=False),
)

tool_calls = sa.Table(
    "bc_tool_calls",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("tool_call_id", sa.String(256), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("arguments", sa.JSON, nullable=False),
    sa.Column("route", sa.String(16), nullable=False),
    sa.Column("is_async", sa.Boolean, nullable=False),
    sa.Column("delivery", sa.String(16), nullable=False),
    sa.Column("timeout_seconds", sa.Float, nullable=False),
    sa.Column("cancel_on_interruption", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("metadata", sa.JSON),
    sa.Column("resolved_by", sa.String(16)),
    sa.Column("late", sa.Boolean, nullable=False),
    sa.Column("progress", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("progress_at", sa.Float),
    sa.Column("resolved_at", sa.Float),
    sa.Column("result_at", sa.Float),
    sa.Column("delivered_at", sa.Float),
    sa.Column("spoken_at", sa.Float),
    sa.Column("version", sa.Integer, nullable=False),
    sa.UniqueConstraint("call_id", "tool_call_id", name="uq_bc_tool_calls_key"),
)

sa.Index("ix_bc_tool_calls_call", tool_calls.c.call_id, tool_calls.c.seq)

# The two statements every result takes, built once so SQLAlchemy's compiled cache serves
# them (building them per call was a third of the result endpoint's CPU).
_KEY = sa.and_(
    tool_calls.c.call_id == sa.bindparam("k_call"),
    tool_calls.c.tool_call_id == sa.bindparam("k_tool"),
)
_GET = tool_calls.select().where(_KEY)
_SWAP = tool_calls.update().where(_KEY, tool_calls.c.version == sa.bindparam("k_version"))


def _row(record: ToolCallRecord) -> dict[str, Any]:
    return {
        "call_id": record.call_id,
        "tool_call_id": record.tool_call_id,
        "name": record.name,
        "arguments": record.arguments,
        "route": record.route.value,
        "is_async": record.is_async,
        "delivery": record.delivery.value,
        "timeout_seconds": record.timeout_seconds,
        "cancel_on_interruption": record.cancel_on_interruption,
        "state": record.state.value,
        # Wrapped so a JSON null result and "no result" stay distinct.
        "result": {"value": record.result} if record.has_result else None,
        "error": record.error,
        "message": record.message,
        "metadata": record.metadata,
        "resolved_by": record.resolved_by.value if record.resolved_by else None,
        "late": record.late,
        "progress": [
            {"at": p.at, "result": p.result, "message": p.message} for p in record.progress
        ],
        "created_at": record.created_at,
        "started_at": record.started_at,
        "progress_at": record.progress_at,
        "resolved_at": record.resolved_at,
        "result_at": record.result_at,
        "delivered_at": record.delivered_at,
        "spoken_at": record.spoken_at,
        "version": record.version,
    }


def _record(row: sa.Row[Any]) -> ToolCallRecord:
    m = row._mapping
    return ToolCallRecord(
        call_id=m["call_id"],
        tool_call_id=m["tool_call_id"],
        name=m["name"],
        arguments=m["arguments"],
        route=Route(m["route"]),
        is_async=m["is_async"],
        delivery=Delivery(m["delivery"]),
        timeout_seconds=m["timeout_seconds"],
        cancel_on_interruption=m["cancel_on_interruption"],
        state=ToolCallState(m["state"]),
        result=m["result"]["value"] if m["result"] is not None else None,
        error=m["error"],
        message=m["message"],
        metadata=m["metadata"],
        resolved_by=ResultSource(m["resolved_by"]) if m["resolved_by"] else None,
        late=m["late"],
        progress=tuple(Progress(p["at"], p["result"], p["message"]) for p in m["progress"]),
        created_at=m["created_at"],
        started_at=m["started_at"],
        progress_at=m["progress_at"],
        resolved_at=m["resolved_at"],
        result_at=m["result_at"],
        delivered_at=m["delivered_at"],
        spoken_at=m["spoken_at"],
        version=m["version"],
    )


def _call(row: sa.Row[Any]) -> CallRecord:
    m = row._mapping
    return CallRecord(
        call_id=m["call_id"],
        state=CallState(m["state"]),
        created_at=m["created_at"],
        ended_at=m["ended_at"],
        ended_reason=m["ended_reason"],
        version=m["version"],
    )


def _call_row(call: CallRecord) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "state": call.state.value,
        "created_at": call.created_at,
        "ended_at": call.ended_at,
        "ended_reason": call.ended_reason,
        "version": call.version,
    }


class SqlStore:
    """A :class:`~backchannel.ledger.store.LedgerStore` on any SQLAlchemy async URL."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        engine: AsyncEngine | None = None,
        create: bool = True,
        busy_timeout: float = 30.0,
    ) -> None:
        """``create``: make missing tables on open (for the library on its own; the
        server's schema comes from its migrations instead). ``busy_timeout``: how long an
        SQLite write waits for a lock another process holds before it fails."""
        self.url = url
        self.create = create
        self.busy_timeout = busy_timeout
        self.engine = engine or create_async_engine(url, **_engine_options(url, busy_timeout))
        self._writer: asyncio.Lock | None = None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas(busy_timeout))
            self._writer = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on success.

        SQLite has one writer at a time; left alone, concurrent writers of this process
        would spin in SQLite's busy handler (sleeping up to 100 ms a try). Here they queue
        on an asyncio lock instead, while WAL keeps reads concurrent. PostgreSQL needs no
        such turn-taking.
        """
        if self._writer is None:
            async with self.engine.begin() as conn:
                yield conn
        else:
            # Waiting for our turn counts against the busy timeout too, so with the file
            # locked by another process a write fails after about that long, not after
            # every writer queued before it has timed out in turn.
            async with asyncio.timeout(self.busy_timeout):
                await self._writer.acquire()
            try:
                async with self.engine.begin() as conn:
                    yield conn
            finally:
                self._writer.release()

    async def open(self) -> None:
        if self.create:
            async with self.transaction() as conn:
                await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def insert_call(self, call: CallRecord) -> None:
        try:
            async with self.transaction() as conn:
                await conn.execute(calls.insert().values(_call_row(call)))
        except IntegrityError as exc:
            raise Conflict(f"call {call.call_id!r} exists", code="duplicate_call_id") from exc

    async def get_call(self, call_id: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(calls.select().where(calls.c.call_id == call_id))).first()
        return _call(row) if row else None

    async def swap_call(self, expected_version: int, call: CallRecord) -> bool:
        stmt = (
            calls.update()
            .where(calls.c.call_id == call.call_id, calls.c.version == expected_version)
            .values(_call_row(call))
        )
        async with self.transaction() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def calls_in_state(self, state: CallState) -> list[CallRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(calls.select().where(calls.c.state == state.value))).all()
        return [_call(r) for r in rows]

    async def insert(self, record: ToolCallRecord) -> None:
        try:
            async with self.transaction() as conn:
                await conn.execute(tool_calls.insert().values(_row(record)))
        except IntegrityError as exc:
            raise Conflict(
                f"tool call {record.tool_call_id!r} exists", code="duplicate_tool_call_id"
            ) from exc

    async def get(self, call_id: str, tool_call_id: str) -> ToolCallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(_GET, {"k_call": call_id, "k_tool": tool_call_id})).first()
        return _record(row) if row else None

    async def swap(self, expected_version: int, record: ToolCallRecord) -> bool:
        params = {
            **_row(record),
            "k_call": record.call_id,
            "k_tool": record.tool_call_id,
            "k_version": expected_version,
        }
        async with self.transaction() as conn:
            return (await conn.execute(_SWAP, params)).rowcount == 1

    async def list_for_call(self, call_id: str) -> list[ToolCallRecord]:
        stmt = tool_calls.select().where(tool_calls.c.call_id == call_id).order_by(tool_calls.c.seq)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r) for r in rows]


def _engine_options(url: str, busy_timeout: float) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": busy_timeout}}
    return {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}


def _sqlite_pragmas(busy_timeout: float) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    return on_connect
