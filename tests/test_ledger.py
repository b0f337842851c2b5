"""The ledger's rules on every store: memory, SQLite and (in CI) PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from backchannel import (
    Conflict,
    Delivery,
    Forbidden,
    IllegalTransition,
    InvalidInput,
    Ledger,
    ManualClock,
    NotFound,
    Outcome,
    ResultSource,
    Route,
    SqlStore,
    ToolCallState,
    ToolResult,
)
from backchannel.ledger.store import LedgerStore
from backchannel.tools.spec import Spoken, ToolSpec

pytestmark = pytest.mark.anyio


def spec(
    name: str = "check_order", route: Route = Route.SERVER, *, is_async: bool = True
) -> ToolSpec:
    return ToolSpec(
        name=name,
        description="",
        parameters={"type": "object", "properties": {}},
        route=route,
        is_async=is_async,
        delivery=Delivery.WHEN_IDLE,
        timeout_seconds=300,
        cancel_on_interruption=False,
        spoken=Spoken(),
    )


async def new_call(ledger: Ledger) -> str:
    call_id = f"call-{uuid.uuid4().hex}"
    await ledger.open_call(call_id)
    return call_id


async def test_record_then_read_back_every_field(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {"order": "42", "nested": {"a": [1, 2]}})
    record = await ledger.get(cid, "tc1")
    assert record.state is ToolCallState.PENDING
    assert record.arguments == {"order": "42", "nested": {"a": [1, 2]}}
    assert record.route is Route.SERVER
    assert record.is_async
    assert record.delivery is Delivery.WHEN_IDLE
    assert record.created_at > 0
    assert record.result is None and not record.has_result


async def test_unknown_ids_are_refused_with_codes(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    with pytest.raises(NotFound) as unknown:
        await ledger.resolve(cid, ToolResult("nope", result=1), ResultSource.API)
    assert unknown.value.code == "unknown_tool_call"
    assert unknown.value.status == 404
    with pytest.raises(NotFound) as no_call:
        await ledger.get_call("no-such-call")
    assert no_call.value.code == "unknown_call"


async def test_duplicate_ids_are_refused(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    with pytest.raises(Conflict) as dup:
        await ledger.record(cid, "tc1", spec(), {})
    assert dup.value.code == "duplicate_tool_call_id"
    with pytest.raises(Conflict) as dup_call:
        await ledger.open_call(cid)
    assert dup_call.value.code == "duplicate_call_id"


async def test_resolution_is_idempotent_and_conflicts_carry_the_stored_result(
    ledger: Ledger,
) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    await ledger.start(cid, "tc1")
    first = await ledger.resolve(cid, ToolResult("tc1", result={"a": 1, "b": 2}), ResultSource.API)
    assert first.outcome is Outcome.ACCEPTED
    assert first.record.state is ToolCallState.SUCCEEDED
    same = await ledger.resolve(cid, ToolResult("tc1", result={"b": 2, "a": 1}), ResultSource.API)
    assert same.duplicate
    assert same.to_dict()["duplicate"] is True
    with pytest.raises(Conflict) as conflict:
        await ledger.resolve(cid, ToolResult("tc1", result={"a": 9}), ResultSource.API)
    assert conflict.value.code == "result_conflict"
    assert conflict.value.details["stored"]["result"] == {"a": 1, "b": 2}
    with pytest.raises(Conflict):
        await ledger.resolve(cid, ToolResult("tc1", error="boom"), ResultSource.API)


async def test_error_result_fails_the_call(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    res = await ledger.resolve(cid, ToolResult("tc1", error="warehouse down"), ResultSource.API)
    assert res.record.state is ToolCallState.FAILED
    assert res.record.error == "warehouse down"


async def test_json_null_result_is_a_result(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    await ledger.resolve(cid, ToolResult("tc1", result=None), ResultSource.API)
    record = await ledger.get(cid, "tc1")
    assert record.has_result and record.result is None
    assert (await ledger.resolve(cid, ToolResult("tc1"), ResultSource.API)).duplicate


async def test_progress_is_kept_in_order_then_closed_by_the_result(ledger: Ledger) -> None:
    clock = ManualClock()
    ledger.clock = clock
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    for pct in (10, 50, 90):
        await clock.advance(1)
        res = await ledger.resolve(
            cid, ToolResult("tc1", result={"pct": pct}, will_continue=True), ResultSource.API
        )
        assert res.outcome is Outcome.PROGRESS
        assert res.record.state is ToolCallState.RUNNING
    again = await ledger.resolve(
        cid, ToolResult("tc1", result={"pct": 90}, will_continue=True), ResultSource.API
    )
    assert again.duplicate
    await clock.advance(1)
    await ledger.resolve(cid, ToolResult("tc1", result="done"), ResultSource.API)
    record = await ledger.get(cid, "tc1")
    assert [p.result for p in record.progress] == [{"pct": 10}, {"pct": 50}, {"pct": 90}]
    assert [p.at for p in record.progress] == sorted(p.at for p in record.progress)
    assert record.progress_at == record.progress[-1].at
    assert record.resolved_at is not None and record.resolved_at > record.progress[-1].at
    with pytest.raises(Conflict) as finished:
        await ledger.resolve(cid, ToolResult("tc1", will_continue=True), ResultSource.API)
    assert finished.value.code == "tool_call_finished"


@pytest.mark.parametrize(
    ("route", "source", "code"),
    [
        (Route.SERVER, ResultSource.CLIENT, "tool_call_not_routed_to_client"),
        (Route.IN_PROCESS, ResultSource.CLIENT, "tool_call_not_routed_to_client"),
        (Route.CLIENT, ResultSource.WEBHOOK, "result_source_not_allowed"),
        (Route.SERVER, ResultSource.IN_PROCESS, "result_source_not_allowed"),
    ],
)
async def test_a_source_may_only_answer_calls_routed_to_it(
    ledger: Ledger, route: Route, source: ResultSource, code: str
) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(route=route), {})
    with pytest.raises(Forbidden) as refused:
        await ledger.resolve(cid, ToolResult("tc1", result=1), source)
    assert refused.value.code == code
    assert refused.value.status == 403
    assert (await ledger.get(cid, "tc1")).state is ToolCallState.PENDING


@pytest.mark.parametrize("route", list(Route))
async def test_the_api_may_answer_any_route(ledger: Ledger, route: Route) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(route=route), {})
    res = await ledger.resolve(cid, ToolResult("tc1", result=1), ResultSource.API)
    assert res.outcome is Outcome.ACCEPTED


async def test_a_result_naming_another_tool_is_refused(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    with pytest.raises(InvalidInput) as mismatch:
        await ledger.resolve(cid, ToolResult("tc1", "other_tool", result=1), ResultSource.API)
    assert mismatch.value.code == "tool_name_mismatch"


async def test_result_after_timeout_is_kept_late_and_state_stays(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    timed_out = await ledger.time_out(cid, "tc1")
    assert timed_out is not None and timed_out.state is ToolCallState.TIMED_OUT
    assert await ledger.time_out(cid, "tc1") is None, "a second timeout changes nothing"
    late = await ledger.resolve(cid, ToolResult("tc1", result="finally"), ResultSource.API)
    assert late.outcome is Outcome.LATE
    assert late.record.state is ToolCallState.TIMED_OUT
    assert late.record.late and late.record.result == "finally"
    assert (
        await ledger.resolve(cid, ToolResult("tc1", result="finally"), ResultSource.API)
    ).duplicate
    with pytest.raises(Conflict):
        await ledger.resolve(cid, ToolResult("tc1", result="other"), ResultSource.API)


async def test_cancelled_call_keeps_a_late_result(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    await ledger.start(cid, "tc1")
    cancelled = await ledger.cancel(cid, "tc1")
    assert cancelled is not None and cancelled.state is ToolCallState.CANCELLED
    late = await ledger.resolve(cid, ToolResult("tc1", result="x"), ResultSource.API)
    assert late.outcome is Outcome.LATE and late.record.state is ToolCallState.CANCELLED


async def test_result_after_the_call_ended_is_late(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    ended = await ledger.end_call(cid, "customer-ended-call")
    assert ended.ended_reason == "customer-ended-call"
    assert (await ledger.end_call(cid, "again")).ended_reason == "customer-ended-call"
    res = await ledger.resolve(cid, ToolResult("tc1", result="x"), ResultSource.API)
    assert res.outcome is Outcome.LATE
    assert res.record.state is ToolCallState.SUCCEEDED and res.record.late


async def test_delivered_and_spoken_keep_their_first_time(ledger: Ledger) -> None:
    clock = ManualClock()
    ledger.clock = clock
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    first = await ledger.mark_delivered(cid, "tc1")
    await clock.advance(5)
    assert (await ledger.mark_delivered(cid, "tc1")).delivered_at == first.delivered_at
    spoken = await ledger.mark_spoken(cid, "tc1")
    assert spoken.spoken_at == clock.wall()


async def test_list_for_call_is_in_creation_order_and_scoped(ledger: Ledger) -> None:
    cid, other = await new_call(ledger), await new_call(ledger)
    for i in range(5):
        await ledger.record(cid, f"tc{i}", spec(), {})
    await ledger.record(other, "tc0", spec(), {})
    assert [r.tool_call_id for r in await ledger.list_for_call(cid)] == [f"tc{i}" for i in range(5)]
    assert len(await ledger.list_for_call(other)) == 1


async def test_fifty_concurrent_identical_results_resolve_once(ledger: Ledger) -> None:
    cid = await new_call(ledger)
    await ledger.record(cid, "tc1", spec(), {})
    post = ToolResult("tc1", result={"status": "shipped"})
    outcomes = await asyncio.gather(
        *(ledger.resolve(cid, post, ResultSource.API) for _ in range(50))
    )
    assert [o.outcome for o in outcomes].count(Outcome.ACCEPTED) == 1
    assert [o.outcome for o in outcomes].count(Outcome.DUPLICATE) == 49


async def test_two_ledgers_on_one_store_race_through_compare_and_swap(store: LedgerStore) -> None:
    """Two ledgers (as two processes would) share a store: no in-process lock helps here."""
    a, b = Ledger(store), Ledger(store)
    cid = await new_call(a)
    await a.record(cid, "tc1", spec(), {})
    results = [ToolResult("tc1", result=f"r{i % 2}") for i in range(20)]
    ledgers = [a, b] * 10
    outcomes = await asyncio.gather(
        *(lg.resolve(cid, r, ResultSource.API) for lg, r in zip(ledgers, results, strict=True)),
        return_exceptions=True,
    )
    accepted = [
        o for o in outcomes if not isinstance(o, BaseException) and o.outcome is Outcome.ACCEPTED
    ]
    assert len(accepted) == 1
    winner = accepted[0].record.result
    for o, r in zip(outcomes, results, strict=True):
        if r.result == winner:
            assert not isinstance(o, BaseException)
        else:
            assert isinstance(o, Conflict)
    record = await a.get(cid, "tc1")
    assert record.result == winner
    assert record.version == 1, "exactly one write won"


async def test_illegal_moves_are_refused_by_the_transition_function() -> None:
    from backchannel import transition

    with pytest.raises(IllegalTransition) as illegal:
        transition(ToolCallState.SUCCEEDED, ToolCallState.RUNNING)
    assert illegal.value.code == "illegal_transition"


async def test_sqlite_ledger_survives_reopening(tmp_path: object) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/durable.db"
    first = Ledger(SqlStore(url))
    await first.open()
    cid = await new_call(first)
    await first.record(cid, "tc1", spec(), {"k": "v"})
    await first.close()
    second = Ledger(SqlStore(url))
    await second.open()
    record = await second.get(cid, "tc1")
    assert record.arguments == {"k": "v"} and record.state is ToolCallState.PENDING
    await second.resolve(cid, ToolResult("tc1", result="after restart"), ResultSource.API)
    assert (await second.get(cid, "tc1")).state is ToolCallState.SUCCEEDED
    await second.close()


async def test_orphaned_calls_are_ended_and_their_results_become_late(ledger: Ledger) -> None:
    running, orphan = await new_call(ledger), await new_call(ledger)
    await ledger.record(orphan, "tc1", spec(), {})
    ended = await ledger.end_orphaned_calls({running}, "server-restarted")
    assert orphan in [c.call_id for c in ended]
    assert running not in [c.call_id for c in ended]
    assert (await ledger.get_call(orphan)).ended_reason == "server-restarted"
    res = await ledger.resolve(orphan, ToolResult("tc1", result="x"), ResultSource.API)
    assert res.outcome is Outcome.LATE
