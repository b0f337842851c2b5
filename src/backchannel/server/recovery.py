"""Calls a process took down with it: ended in the ledger, and reported.

When a process dies (``kill -9``, a crash, an instance declared lost), its live calls
stay ``in-progress`` in the ledger and their conversations are gone. Whoever notices —
the same server starting again, or the instance that finds another one lost — ends them
here: the ledger records the end, every accepted result the conversation never spoke is
reported (``tool-result-after-call``), and the call gets its ``status-update`` and
``end-of-call-report`` with every tool call's final state and the transcript as it was
last stored. Reports carry stable event ids, so doing this twice reports once.

A process can also die between ending a call in the ledger and storing its report;
:func:`report_unreported` sends the reports of recently ended calls that have none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from ..engine import Engine
from ..events import EventSink
from ..ledger.ledger import owed_report
from ..ledger.sql import SqlStore
from ..ledger.sql import calls as ledger_calls
from ..lifecycle import CallState
from ..reports import ended_events
from .db import outbox, server_calls

log = logging.getLogger("backchannel.recovery")


async def end_abandoned(
    engine: Engine, db: SqlStore, events: EventSink, call_ids: Iterable[str], reason: str
) -> list[str]:
    """End calls whose process is gone, report their unspoken results and the calls
    themselves; the ids it ended."""
    ended_ids = []
    for call_id in call_ids:
        ended = await engine.ledger.end_call(call_id, reason)
        log.warning("call %s ended (%s): its process is gone", call_id, ended.ended_reason)
        await report(engine, db, events, call_id, ended.ended_reason or reason)
        ended_ids.append(call_id)
    return ended_ids


async def report(
    engine: Engine, db: SqlStore, events: EventSink, call_id: str, reason: str
) -> None:
    """Report an ended call from the store: unspoken results, then the call's end."""
    records = await engine.ledger.list_for_call(call_id)
    for record in records:
        if owed_report(record):
            engine.report_after_call(record.to_dict())
    transcript, messages = await _stored_transcript(db, call_id)
    for event in ended_events(
        call_id,
        reason,
        records,
        at=engine.clock.wall(),
        transcript=transcript,
        messages=messages,
    ):
        events.emit(event)


async def report_unreported(
    engine: Engine, db: SqlStore, events: EventSink, *, since: float
) -> int:
    """Report calls ended after ``since`` that have no end-of-call report in the outbox
    (the process died right after ending them). Calls without a server URL are looked
    at and skip themselves. How many were looked at."""
    reported = sa.select(outbox.c.call_id).where(outbox.c.event_type == "end-of-call-report")
    query = sa.select(ledger_calls.c.call_id, ledger_calls.c.ended_reason).where(
        ledger_calls.c.state == CallState.ENDED.value,
        ledger_calls.c.ended_at >= since,
        ledger_calls.c.call_id.not_in(reported),
    )
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    for call_id, reason in rows:
        await report(engine, db, events, call_id, reason or "unknown")
    return len(rows)


async def _stored_transcript(
    db: SqlStore, call_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    query = sa.select(server_calls.c.transcript, server_calls.c.messages).where(
        server_calls.c.id == call_id
    )
    async with db.engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return [], []
    return list(row[0] or []), list(row[1] or [])
