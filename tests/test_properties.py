"""Property: under any interleaving of speech, model turns, results, duplicates,
conflicts, timeouts and hang-up, the result rules hold.

* every tool call ends in exactly one terminal state;
* no announcement is spoken twice, and no result that should be spoken is lost;
* the same result twice is a duplicate; a different one is a conflict;
* never two responses at once (one model stream at a time, speech never interleaves).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backchannel import (
    Conflict,
    Delivery,
    ManualClock,
    ResultSource,
    ScriptedLLM,
    ToolCallState,
    ToolResult,
)
from backchannel.events import EVENT_TYPES
from backchannel.llm.base import LLMChunk, LLMRequest
from backchannel.llm.scripted import call, say

from .harness import assistant, running_call, tool

POLICIES = ("when-idle", "silent", "interrupt")
TOOLS = [
    tool(
        f"task_{p.replace('-', '_')}",
        is_async=True,
        backchannel={"delivery": p, "timeoutSeconds": 30},
    )
    for p in POLICIES
]

op = st.one_of(
    st.tuples(st.just("user_speaks"), st.floats(0.1, 4.0)),
    st.tuples(st.just("user_text"), st.integers(0, 2)),
    st.tuples(st.just("result"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("duplicate"), st.integers(0, 7)),
    st.tuples(st.just("conflict"), st.integers(0, 7)),
    st.tuples(st.just("progress"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("advance"), st.floats(0.05, 40.0)),
    st.tuples(st.just("barge_in"), st.floats(0.0, 1.0)),
    st.just(("hang_up",)),
)


@dataclass
class Model:
    """What the test expects, kept beside the engine."""

    first: dict[str, Any] = field(default_factory=dict)
    tool_ids: list[str] = field(default_factory=list)


def make_llm(clock: ManualClock, picks: list[int], one_ask: bool = False) -> ScriptedLLM:
    counter = iter(range(10_000))

    def respond(request: LLMRequest) -> list[LLMChunk]:
        last = request.messages[-1]
        if last["role"] == "tool":
            return say("It is running in the background.")
        if last["role"] == "system" and "background tool calls" in str(last["content"]):
            return say("Here is what came back. All done.")
        if last["role"] == "user":
            k = next(counter)
            if k < 8:
                name = ("task_when_idle", "task_silent", "task_interrupt")[picks[k % len(picks)]]
                return [*say("Okay, starting that now."), call(name, id=f"t{k}")]
        return say("Sure. Anything else?")

    return ScriptedLLM(
        respond=respond,
        clock=clock,
        first_chunk_delay=0.2,
        chunk_gap=0.05,
        one_ask_per_response=one_ask,
    )


async def play(ops: list[tuple[Any, ...]], picks: list[int], one_ask: bool = False) -> None:
    clock = ManualClock()
    llm = make_llm(clock, picks, one_ask)
    ops = [("user_text", 0), ("advance", 3.0), *ops]
    model = Model()
    async with running_call(assistant(*TOOLS), llm, clock=clock) as h:
        for name in ("task_when_idle", "task_silent", "task_interrupt"):
            h.server.modes[name] = "ack"

        def known(i: int) -> str | None:
            ids = [
                tc["id"] for e in h.events.of_type("tool-calls") for tc in e.data["toolCallList"]
            ]
            return ids[i % len(ids)] if ids else None

        async def post(
            tcid: str, value: Any, *, will_continue: bool = False, message: str | None = None
        ) -> None:
            result = ToolResult(tcid, result=value, will_continue=will_continue, message=message)
            refused: Conflict | None = None
            try:
                res = await h.engine.submit_result(h.call.call_id, result, ResultSource.API)
            except Conflict as exc:
                refused = exc
            if refused is not None:
                if will_continue:
                    assert refused.code == "tool_call_finished"
                else:
                    assert refused.code == "result_conflict"
                    assert tcid in model.first and model.first[tcid] != value
                return
            if will_continue:
                return
            if tcid in model.first:
                assert res.duplicate == (model.first[tcid] == value)
            else:
                record = await h.record(tcid)
                # A first result is accepted, or late after a timeout / hang-up.
                assert res.outcome.value in ("accepted", "late"), res.outcome
                assert record.has_result
                model.first[tcid] = value

        for step in ops:
            kind = step[0]
            if kind == "user_speaks":
                if not h.call.ended.is_set():
                    h.call.user_started_speaking()
                await h.advance(step[1])
                if not h.call.ended.is_set():
                    h.call.user_stopped_speaking()
                    h.call.user_transcript("please check it")
            elif kind == "user_text" and not h.call.ended.is_set():
                h.call.send_text(["check my order", "and my refund", "thanks"][step[1]])
            elif kind == "result" and (tcid := known(step[1])):
                await post(tcid, f"value-{step[2]}")
            elif kind == "duplicate" and (tcid := known(step[1])) and tcid in model.first:
                await post(tcid, model.first[tcid])
            elif kind == "conflict" and (tcid := known(step[1])) and tcid in model.first:
                await post(tcid, "something else")
            elif kind == "progress" and (tcid := known(step[1])):
                await post(
                    tcid,
                    {"step": len(h.events.events)},
                    will_continue=True,
                    message="Halfway there." if step[2] else None,
                )
            elif kind == "advance":
                await h.advance(step[1])
            elif kind == "barge_in" and not h.call.ended.is_set():
                h.call.user_started_speaking()
                await h.advance(step[1])
                h.call.user_stopped_speaking()
                h.call.user_transcript("")
            elif kind == "hang_up" and not h.call.ended.is_set():
                await h.call.hang_up()
            await h.advance(0)

        # Let the floor free up and everything due be said, then end the call.
        if not h.call.ended.is_set():
            if h.call.arbiter.user_speaking:
                h.call.user_stopped_speaking()
                h.call.user_transcript("")
            # Longer than the 30 s tool timeout, so every timer has fired and been spoken.
            await h.advance(45)
            await assert_nothing_lost(h)
            await h.call.hang_up()
        # Results for whatever is still open arrive after the call.
        for rec in await h.engine.ledger.list_for_call(h.call.call_id):
            if not rec.state.terminal:
                await post(rec.tool_call_id, "after the call")

    records = await h.engine.ledger.list_for_call(h.call.call_id)
    ids = [r.tool_call_id for r in records]
    assert len(ids) == len(set(ids)), "one record per tool call"
    assert all(r.state.terminal for r in records), [(r.tool_call_id, r.state) for r in records]
    keys = [a.key for a in h.call.announced]
    assert len(keys) == len(set(keys)), f"announced twice: {keys}"
    for r in records:
        spoken = r.tool_call_id in keys
        assert (r.spoken_at is not None) == spoken, r.tool_call_id
        if spoken:
            assert r.delivery is not Delivery.SILENT
            assert r.state is not ToolCallState.CANCELLED
    for label, hit in (
        ("announced", bool(keys)),
        ("timed out", any(r.state is ToolCallState.TIMED_OUT for r in records)),
        ("late result", any(r.late for r in records)),
        ("speech cut", any(heard < len(u.text) for u, _s, _e, heard in h.output.played)),
        ("several announced at once", any(len(r) > 1 for r in _announce_groups(h))),
    ):
        if hit:
            event(label)
    assert llm.max_active <= 1, "two model streams at once"
    assert {e.type for e in h.events.events} <= EVENT_TYPES
    responses = [u.response_id for u, *_ in h.output.played]
    assert responses == sorted(responses), "speech of two responses interleaved"


def _announce_groups(h: Any) -> list[list[str]]:
    return [
        [m for m in str(r.messages[-1]["content"]).split("toolCallId ")[1:]]
        for r in h.llm.requests
        if "background tool calls" in str(r.messages[-1]["content"])
    ]


async def assert_nothing_lost(h: Any) -> None:
    """With the floor free, every result due to be spoken has been spoken."""
    keys = {a.key for a in h.call.announced}
    assert h.call.arbiter.pending == ()
    for r in await h.engine.ledger.list_for_call(h.call.call_id):
        due = (
            r.has_result
            and r.delivery is not Delivery.SILENT
            and r.state is not ToolCallState.CANCELLED
        )
        if due and not r.late:
            assert r.tool_call_id in keys, f"{r.tool_call_id} was never announced"
        if r.state is ToolCallState.TIMED_OUT and r.delivery is not Delivery.SILENT:
            assert f"{r.tool_call_id}#timeout" in keys
        if r.has_result:
            assert r.delivered_at is not None, f"{r.tool_call_id} never reached the model"


@settings(
    max_examples=int(os.environ.get("BACKCHANNEL_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ops=st.lists(op, min_size=1, max_size=30),
    picks=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    one_ask=st.booleans(),
)
def test_result_rules_hold_under_any_interleaving(
    ops: list[tuple[Any, ...]], picks: list[int], one_ask: bool
) -> None:
    """Also for models that do one thing per response, whose results never ride on a
    reply and always get a response of their own."""
    asyncio.run(play(ops, picks, one_ask))
