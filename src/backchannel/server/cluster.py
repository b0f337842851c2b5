"""Several instances on one database: a result or control message that reaches any of
them gets to the call, which lives on the instance holding its media connection.

A result is written to the ledger where it arrives (the answer to its sender is the
ledger's: accepted, duplicate, conflict, late), then the owner is told through the
router and brings it into the conversation once. A control message is written to
``bc_routed_controls``, the owner claims the row (so it is applied once however often
the message is delivered) and answers; the sender waits for that answer, so it sees
the same success or error as on the owner. An owner that stopped heartbeating is lost:
the instance that notices ends its calls, and results that come later are late.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from redis.exceptions import RedisError

from ..engine import Engine
from ..errors import BackchannelError, Unavailable, rebuilt
from ..events import EventSink
from ..ledger.ledger import Resolution
from ..ledger.sql import tool_calls
from ..lifecycle import ToolCallState
from ..results import ResultSource
from .control import apply_control, live_call
from .db import routed_controls
from .instances import Instances
from .outbox import Outbox
from .recovery import end_abandoned
from .router import Message, Router
from .wire import ControlMessage, ToolCallResultMessage

log = logging.getLogger("backchannel.cluster")

LOST_REASON = "server-lost"
_CONTROL: TypeAdapter[Any] = TypeAdapter(ControlMessage)


class Cluster:
    def __init__(
        self,
        engine: Engine,
        instances: Instances,
        router: Router | None,
        events: EventSink,
        *,
        answer_timeout: float,
        outbox: Outbox | None = None,
    ) -> None:
        """``events`` gets the reports of calls this instance ends for a lost one;
        ``outbox``, when given, has that instance's claimed webhooks released."""
        self.engine = engine
        self.outbox = outbox
        self.instances = instances
        self.router = router
        self.events = events
        self.answer_timeout = answer_timeout
        #: A call's owner never changes (a call is connected once), so it is read once.
        self._owners: dict[str, str] = {}
        #: When each instance was last seen alive (monotonic), so a burst of results
        #: for one owner costs one liveness read per heartbeat interval.
        self._seen_alive: dict[str, float] = {}

    @property
    def id(self) -> str:
        return self.instances.id

    # -- results -------------------------------------------------------------------

    async def result_recorded(self, call_id: str, resolution: Resolution) -> None:
        """The engine's hand-off for a result whose call runs on another instance."""
        owner = await self._owner(call_id)
        if owner is None:
            return
        if not await self._alive(owner):
            await self.reap_now()
            await self.engine.report_durably(resolution.record.to_dict())
            return
        message = {
            "kind": "result",
            "callId": call_id,
            "toolCallId": resolution.record.tool_call_id,
            "sentAt": self.engine.clock.wall(),
        }
        assert self.router is not None
        await self.router.send(owner, message)

    # -- control messages ----------------------------------------------------------

    async def control(
        self, call_id: str, message: Any, source: ResultSource, *, end_reason: str | None = None
    ) -> dict[str, Any]:
        """Apply a control message wherever its call runs. ``end_reason`` hangs the call
        up with that reason (the API's end route) instead of applying ``message``."""
        here = call_id in self.engine.live
        if here or isinstance(message, ToolCallResultMessage):
            # A result is recorded here and handed on by the engine if need be.
            return await self._apply_here(call_id, message, source, end_reason)
        owner = await self._owner(call_id)
        if owner is not None and not await self._alive(owner):
            await self.reap_now()
            owner = None
        if owner is None:
            return await self._apply_here(call_id, message, source, end_reason)
        return await self._route_control(owner, call_id, message, source, end_reason)

    async def _apply_here(
        self, call_id: str, message: Any, source: ResultSource, end_reason: str | None
    ) -> dict[str, Any]:
        if end_reason is not None:
            await live_call(self.engine, call_id).hang_up(end_reason)
            return {"ok": True}
        return await apply_control(self.engine, call_id, message, source)

    async def _route_control(
        self, owner: str, call_id: str, message: Any, source: ResultSource, end_reason: str | None
    ) -> dict[str, Any]:
        assert self.router is not None
        row_id = uuid.uuid4().hex
        body = {
            "message": None if message is None else message.model_dump(mode="json", by_alias=True),
            "source": source.value,
            "endReason": end_reason,
        }
        async with self.instances.db.transaction() as conn:
            await conn.execute(
                routed_controls.insert().values(
                    id=row_id,
                    call_id=call_id,
                    owner=owner,
                    body=body,
                    created_at=self.engine.clock.wall(),
                )
            )
        answer: Message | None = None
        try:
            await self.router.send(owner, {"kind": "control", "callId": call_id, "id": row_id})
            answer = await self.router.wait_answer(row_id, self.answer_timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            # Redis is away: take the message back unless the owner applied it already.
            log.warning("routing a control message for %s failed: %s", call_id, exc)
        if answer is None:
            answer = await self._withdraw(row_id)
        if "error" in answer:
            raise rebuilt(answer["error"], int(answer.get("status", 500)))
        return dict(answer["ok"])

    async def _withdraw(self, row_id: str) -> Message:
        """No answer in time: take the message back unless the owner has claimed it."""
        now = self.engine.clock.wall()
        unavailable = Unavailable(
            "the instance running this call did not answer; nothing was applied",
            code="call_owner_unreachable",
        )
        gone = {"error": unavailable.to_dict(), "status": unavailable.status}
        async with self.instances.db.transaction() as conn:
            withdrawn = await conn.execute(
                routed_controls.update()
                .where(routed_controls.c.id == row_id, routed_controls.c.applied_at.is_(None))
                .values(applied_at=now, answer=gone)
            )
            if withdrawn.rowcount == 1:
                return gone
            stored = await conn.execute(
                sa.select(routed_controls.c.answer).where(routed_controls.c.id == row_id)
            )
        answer = stored.scalar()
        return answer if answer is not None else {"ok": {"ok": True}}

    # -- the owner's side ----------------------------------------------------------

    async def handle(self, message: Message) -> None:
        """One message from this instance's inbox."""
        if message["kind"] == "result":
            await self.engine.take_recorded(message["callId"], message["toolCallId"])
        elif message["kind"] == "control":
            await self._apply_routed_control(message["id"])
        else:
            log.error("unknown routed message %r; dropped", message["kind"])

    async def _apply_routed_control(self, row_id: str) -> None:
        now = self.engine.clock.wall()
        async with self.instances.db.transaction() as conn:
            claimed = await conn.execute(
                routed_controls.update()
                .where(routed_controls.c.id == row_id, routed_controls.c.applied_at.is_(None))
                .values(applied_at=now)
            )
            if claimed.rowcount != 1:
                return  # applied already, or withdrawn by its sender
            row = (
                await conn.execute(routed_controls.select().where(routed_controls.c.id == row_id))
            ).one()
        body = row.body
        answer: Message
        try:
            message = body["message"] and _CONTROL.validate_python(body["message"])
            ok = await self._apply_here(
                row.call_id, message, ResultSource(body["source"]), body.get("endReason")
            )
            answer = {"ok": ok}
        except BackchannelError as exc:
            answer = {"error": exc.to_dict(), "status": exc.status}
        async with self.instances.db.transaction() as conn:
            await conn.execute(
                routed_controls.update().where(routed_controls.c.id == row_id).values(answer=answer)
            )
        assert self.router is not None
        await self.router.answer(row_id, answer)

    # -- lost instances ------------------------------------------------------------

    async def reap_now(self) -> None:
        for lost in await self.instances.reap():
            await self.end_calls_of(lost)

    async def end_calls_of(self, instance_id: str, reason: str = LOST_REASON) -> None:
        """End the calls a lost instance was running, and report them. Their tool calls
        stay as they are; results that come later are kept as late and reported."""
        if instance_id != self.id and self.outbox is not None:
            await self.outbox.release_claims(instance_id)
        calls = await self.instances.live_calls_of(instance_id)
        if calls:
            log.warning("instance %s is gone; ending its %d calls", instance_id, len(calls))
        await end_abandoned(self.engine, self.instances.db, self.events, calls, reason)

    async def sweep(self) -> None:
        """Every beat: end calls whose owner has stopped but that are still in progress
        (an ending cut short), and take results for calls live here whose hand-off never
        came."""
        abandoned = [c for c, _owner in await self.instances.abandoned_calls()]
        if abandoned:
            await end_abandoned(self.engine, self.instances.db, self.events, abandoned, LOST_REASON)
        await self._take_missed()

    async def _take_missed(self) -> None:
        """Take results that were recorded for calls live here but whose hand-off never
        came (Redis restarted, a sender died between its ledger write and its message).
        Only results older than two heartbeats, so the normal path is not raced."""
        live = [c for c, call in self.engine.live.items() if not call.ended.is_set()]
        if not live or self.router is None:
            return
        cutoff = self.engine.clock.wall() - 2 * self.instances.interval
        stmt = (
            sa.select(tool_calls.c.call_id, tool_calls.c.tool_call_id)
            .where(
                tool_calls.c.call_id.in_(live),
                tool_calls.c.delivered_at.is_(None),
                tool_calls.c.result_at < cutoff,
                tool_calls.c.state != ToolCallState.CANCELLED.value,
            )
            .order_by(tool_calls.c.seq)
        )
        async with self.instances.db.engine.connect() as conn:
            missed = (await conn.execute(stmt)).all()
        for call_id, tool_call_id in missed:
            log.warning("result %s for call %s had no hand-off; taking it", tool_call_id, call_id)
            await self.engine.take_recorded(call_id, tool_call_id)

    async def hang_up_all(self) -> None:
        """This instance was declared lost: its calls are ended in the ledger already,
        so stop running them."""
        for call in list(self.engine.live.values()):
            call.request_end(LOST_REASON)

    async def _owner(self, call_id: str) -> str | None:
        """The instance running the call, if it is not this one and routing is on."""
        if self.router is None:
            return None
        owner = self._owners.get(call_id)
        if owner is None:
            owner = await self.instances.owner(call_id)
            if owner is not None:
                self._owners[call_id] = owner
        return owner if owner is not None and owner != self.id else None

    async def _alive(self, instance_id: str) -> bool:
        now = self.engine.clock.monotonic()
        if now - self._seen_alive.get(instance_id, -1e9) < self.instances.interval:
            return True
        if await self.instances.alive(instance_id):
            self._seen_alive[instance_id] = now
            return True
        self._seen_alive.pop(instance_id, None)
        return False
