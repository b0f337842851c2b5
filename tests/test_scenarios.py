"""SPEC §6 acceptance scenarios 1 to 9 and 11 at the engine level, speech events simulated.

Each test drives one call on a manual clock: speech plays for 0.25 s a word, the scripted
LLM answers as told, and the fake tool server answers as configured. Assertions cover
what is said, when, and the ledger's final states.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backchannel import (
    Conflict,
    Delivery,
    Forbidden,
    ManualClock,
    ResultSource,
    ScriptedLLM,
    ToolCallState,
    ToolResult,
)
from backchannel.llm.base import LLMChunk, LLMRequest
from backchannel.llm.scripted import call, say

from .harness import assistant, running_call, tool

pytestmark = pytest.mark.anyio

ORDER = tool("check_order", is_async=True)


def notes(history: list[dict[str, Any]], tool_call_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in history
        if m["role"] == "system" and f"toolCallId {tool_call_id}" in str(m["content"])
    ]


def order_llm(clock: ManualClock, *then: list[LLMChunk]) -> ScriptedLLM:
    """The model says a line and starts the async order lookup, says it is on it, then ``then``."""
    return ScriptedLLM(
        [
            [*say("Let me check."), call("check_order", {"id": "42"}, id="call_1")],
            say("Working on it."),
            *then,
        ],
        clock=clock,
    )


async def start_async_order(h: Any, tool_call_id: str = "call_1") -> None:
    """The user asks; the model says a line, calls the async tool, then says it will tell."""
    h.call.send_text("Where is my order?")
    await h.advance(10)
    record = await h.record(tool_call_id)
    assert record.state is ToolCallState.RUNNING


async def test_1_async_result_by_http_while_idle_is_said_once(clock: ManualClock) -> None:
    llm = ScriptedLLM(
        [
            [*say("Let me check."), call("check_order", {"id": "42"}, id="call_1")],
            say("I'll tell you when it's back."),
            say("Your order shipped yesterday."),
        ],
        clock=clock,
    )
    async with running_call(assistant(ORDER), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        assert h.spoken() == ["Let me check.", "I'll tell you when it's back."]

        resolution = await h.engine.submit_result(
            h.call.call_id,
            ToolResult("call_1", "check_order", result={"status": "shipped"}),
            ResultSource.API,
        )
        assert not resolution.duplicate
        await h.advance(10)
        assert h.spoken()[2:] == ["Your order shipped yesterday."]
        # The model saw the result tied to the tool's name and original id, and was asked.
        request = llm.requests[2]
        assert any("check_order (toolCallId call_1)" in str(m["content"]) for m in request.messages)
        assert request.messages[-1]["role"] == "system"
        await h.advance(60)
        assert len(h.spoken()) == 3
        record = await h.record("call_1")
        assert record.state is ToolCallState.SUCCEEDED
        assert record.resolved_by is ResultSource.API
        assert record.delivered_at is not None and record.spoken_at is not None
        assert [a.tool_call_id for a in h.call.announced] == ["call_1"]


async def test_2_result_during_user_turn_waits_and_one_reply_covers_both(
    clock: ManualClock,
) -> None:
    llm = order_llm(clock, say("Shipping is free. And your order shipped."))
    async with running_call(assistant(ORDER), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        spoken_before = len(h.spoken())

        h.call.user_started_speaking()
        await h.advance(0.5)
        await h.engine.submit_result(
            h.call.call_id, ToolResult("call_1", result="shipped"), ResultSource.API
        )
        await h.advance(3)
        assert len(h.spoken()) == spoken_before, "nothing is said while the user speaks"
        assert len(llm.requests) == 2
        h.call.user_stopped_speaking()
        await h.advance(1)
        assert len(h.spoken()) == spoken_before, "the turn ends with the final transcript"
        h.call.user_transcript("And what does shipping cost?")
        await h.advance(10)

        assert len(llm.requests) == 3, "one response covers the words and the result"
        messages = llm.requests[2].messages
        user_at = max(i for i, m in enumerate(messages) if m["role"] == "user")
        assert messages[user_at]["content"] == "And what does shipping cost?"
        assert notes(list(messages), "call_1"), "the result is in the same request"
        assert "Also briefly tell" in str(messages[-1]["content"])
        assert h.spoken()[spoken_before:] == ["Shipping is free.", "And your order shipped."]
        assert [a.tool_call_id for a in h.call.announced] == ["call_1"]
        assert (await h.record("call_1")).spoken_at is not None


@pytest.mark.parametrize("policy", ["when-idle", "interrupt"])
async def test_3_result_mid_sentence(clock: ManualClock, policy: str) -> None:
    llm = order_llm(
        clock,
        say("Our store opens at nine and closes at six every single weekday."),
        say("Your order shipped."),
    )
    async with running_call(assistant(ORDER), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        h.call.send_text("When are you open?")
        await h.advance(1.0)  # 1 s into a 3 s sentence
        await h.engine.submit_result(
            h.call.call_id,
            ToolResult("call_1", result="shipped", delivery=Delivery(policy)),
            ResultSource.API,
        )
        await h.advance(10)
        played = h.played()
        sentence = next(p for p in played if p[0].startswith("Our store"))
        announcement = next(p for p in played if p[0] == "Your order shipped.")
        if policy == "when-idle":
            assert sentence[3], "the sentence is not cut"
            assert announcement[1] >= sentence[2], "said after the sentence, not over it"
        else:
            assert not sentence[3], "the sentence is cut"
            assert announcement[1] == pytest.approx(sentence[2]), "said as soon as it is cut"
            heard = [m for m in h.history() if m["role"] == "assistant" and m["content"]]
            cut_message = next(m for m in heard if m["content"].startswith("Our store"))
            assert (
                cut_message["content"]
                != "Our store opens at nine and closes at six every single weekday."
            )
        assert [a.tool_call_id for a in h.call.announced] == ["call_1"]
        assert sum(1 for p in played if p[0] == "Your order shipped.") == 1


THREE = [tool(name, is_async=True) for name in ("check_order", "check_refund", "check_invoice")]


@pytest.mark.parametrize("floor", ["assistant-speaking", "idle"])
async def test_4_three_results_in_one_second_make_one_announcement(
    clock: ManualClock, floor: str
) -> None:
    def respond(request: LLMRequest) -> list[LLMChunk]:
        if "background tool calls" in str(request.messages[-1]["content"]):
            return say("Order shipped, refund approved, invoice sent.")
        return say("Shipping containers were standardised in the nineteen fifties, you know.")

    llm = ScriptedLLM(
        [
            [
                *say("Checking all three."),
                call("check_order", id="c1"),
                call("check_refund", id="c2"),
                call("check_invoice", id="c3"),
            ],
            say("I'll report back."),
        ],
        respond=respond,
        clock=clock,
        first_chunk_delay=0.2,
    )
    async with running_call(assistant(*THREE), llm, clock=clock) as h:
        for name in ("check_order", "check_refund", "check_invoice"):
            h.server.modes[name] = "ack"
        h.call.send_text("Check my order, refund and invoice.")
        await h.advance(10)
        if floor == "assistant-speaking":
            h.call.send_text("Tell me something.")
            await h.advance(0.5)
        for i, tcid in enumerate(("c1", "c2", "c3")):
            await h.engine.submit_result(
                h.call.call_id, ToolResult(tcid, result=f"done {i}"), ResultSource.API
            )
            await h.advance(0.4)
        await h.advance(20)
        assert h.spoken().count("Order shipped, refund approved, invoice sent.") == 1
        announce = [r for r in llm.requests if "background tool calls" in str(r.messages[-1])]
        assert len(announce) == 1
        for tcid in ("c1", "c2", "c3"):
            assert f"toolCallId {tcid}" in str(announce[0].messages[-1]["content"])
        assert sorted(a.tool_call_id for a in h.call.announced) == ["c1", "c2", "c3"]


async def test_5_same_result_fifty_times_is_delivered_once_and_conflict_refused(
    clock: ManualClock,
) -> None:
    llm = order_llm(clock, say("It shipped."))
    async with running_call(assistant(ORDER), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        post = ToolResult("call_1", "check_order", result={"status": "shipped"})
        outcomes = await asyncio.gather(
            *(h.engine.submit_result(h.call.call_id, post, ResultSource.API) for _ in range(50))
        )
        assert sum(not o.duplicate for o in outcomes) == 1
        assert sum(o.duplicate for o in outcomes) == 49
        with pytest.raises(Conflict) as conflict:
            await h.engine.submit_result(
                h.call.call_id, ToolResult("call_1", result={"status": "lost"}), ResultSource.API
            )
        assert conflict.value.code == "result_conflict"
        assert conflict.value.status == 409
        assert conflict.value.details["stored"]["result"] == {"status": "shipped"}
        await h.advance(10)
        assert h.spoken().count("It shipped.") == 1
        assert len(notes(h.history(), "call_1")) == 1
        assert len(h.events.of_type("tool-calls-result")) == 1


async def test_6_client_tool_answered_by_client_and_server_tool_refused(
    clock: ManualClock,
) -> None:
    client_tool = tool("get_style", url=None)
    server_tool = tool("check_order")
    llm = ScriptedLLM(
        [
            [call("get_style", id="c_client"), call("check_order", id="c_server")],
            say("Your style is bold."),
        ],
        clock=clock,
    )
    async with running_call(assistant(client_tool, server_tool), llm, clock=clock) as h:
        h.server.modes["check_order"] = "slow"
        h.call.send_text("What's my style?")
        await h.advance(0.5)
        event = h.events.of_type("tool-calls")[0]
        routes = {tc["id"]: tc["route"] for tc in event.data["toolCallList"]}
        assert routes == {"c_client": "client", "c_server": "server"}

        with pytest.raises(Forbidden) as refused:
            await h.call.submit_result(ToolResult("c_server", result="x"), ResultSource.CLIENT)
        assert refused.value.code == "tool_call_not_routed_to_client"
        answer = await h.call.submit_result(
            ToolResult("c_client", "get_style", result={"template": "bold"}), ResultSource.CLIENT
        )
        assert not answer.duplicate
        record = await h.record("c_client")
        assert record.state is ToolCallState.SUCCEEDED
        assert record.resolved_by is ResultSource.CLIENT
        assert (await h.record("c_server")).state is ToolCallState.RUNNING


async def test_7_slow_sync_webhook_start_delayed_timeout_then_late_delivery(
    clock: ManualClock,
) -> None:
    slow = tool(
        "lookup",
        timeout=5,
        messages=[
            {"type": "request-start", "content": "Checking now."},
            {
                "type": "request-response-delayed",
                "content": "Still working.",
                "timingMilliseconds": 2000,
            },
            {"type": "request-failed", "content": "Sorry, that took too long."},
        ],
    )
    llm = ScriptedLLM(
        [
            [call("lookup", {"id": "7"}, id="call_slow")],
            say("I could not get it in time."),
            say("The lookup came back after all: it is ready."),
        ],
        clock=clock,
    )
    async with running_call(assistant(slow), llm, clock=clock) as h:
        h.server.modes["lookup"] = "slow"
        h.server.delays["lookup"] = 8.0
        h.call.send_text("Look it up.")
        await h.advance(0.1)
        assert h.spoken() == [] or h.spoken() == ["Checking now."]
        await h.advance(1.5)
        assert h.spoken() == ["Checking now."]
        await h.advance(1.0)  # 2.6 s: the delayed line
        assert h.spoken() == ["Checking now.", "Still working."]
        await h.advance(3.0)  # 5.6 s: timed out
        record = await h.record("call_slow")
        assert record.state is ToolCallState.TIMED_OUT
        tool_msg = next(m for m in llm.requests[1].messages if m.get("tool_call_id") == "call_slow")
        assert "tool_timeout" in tool_msg["content"]
        await h.advance(10)  # the webhook answers at 8 s
        assert h.spoken()[2:4] == ["Sorry, that took too long.", "I could not get it in time."]
        record = await h.record("call_slow")
        assert record.state is ToolCallState.TIMED_OUT and record.late
        assert record.result == {"ok": True, "id": "7"}
        assert h.spoken()[-1] == "The lookup came back after all: it is ready."
        assert "after the tool had timed out" in str(notes(h.history(), "call_slow"))


async def test_8_silent_result_enters_history_and_is_used_later(clock: ManualClock) -> None:
    silent = tool("check_order", is_async=True, backchannel={"delivery": "silent"})
    llm = order_llm(clock, say("Your order shipped yesterday."))
    async with running_call(assistant(silent), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        before = len(h.spoken())
        await h.engine.submit_result(
            h.call.call_id, ToolResult("call_1", result="shipped yesterday"), ResultSource.API
        )
        await h.advance(30)
        assert len(h.spoken()) == before and len(llm.requests) == 2
        assert notes(h.history(), "call_1")
        h.call.send_text("So where is it?")
        await h.advance(10)
        assert notes(list(llm.requests[2].messages), "call_1")
        assert "background tool calls" not in str(llm.requests[2].messages[-1])
        assert h.spoken()[-1] == "Your order shipped yesterday."
        record = await h.record("call_1")
        assert record.delivered_at is not None and record.spoken_at is None
        assert h.call.announced == []


async def test_8_vapi_trigger_response_disabled_means_silent(clock: ManualClock) -> None:
    llm = ScriptedLLM(
        [[*say("Let me check."), call("check_order", id="call_1")], say("Working on it.")],
        clock=clock,
    )
    async with running_call(assistant(ORDER), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        from backchannel import parse_result

        result = parse_result(
            {
                "toolCallId": "call_1",
                "name": "check_order",
                "result": "x",
                "triggerResponseEnabled": False,
            }
        )
        await h.engine.submit_result(h.call.call_id, result, ResultSource.API)
        await h.advance(30)
        assert len(llm.requests) == 2
        assert (await h.record("call_1")).delivery.value == "silent"


async def test_9_result_after_hang_up_is_kept_late_and_reported(clock: ManualClock) -> None:
    llm = ScriptedLLM(
        [[*say("Let me check."), call("check_order", id="call_1")], say("Working on it.")],
        clock=clock,
    )
    async with running_call(assistant(ORDER), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        await h.call.hang_up("customer-ended-call")
        report = h.events.of_type("end-of-call-report")[0]
        assert [(t["toolCallId"], t["state"]) for t in report.data["toolCalls"]] == [
            ("call_1", "running")
        ]
    resolution = await h.engine.submit_result(
        h.call.call_id, ToolResult("call_1", result="shipped"), ResultSource.API
    )
    assert resolution.outcome.value == "late"
    record = await h.engine.ledger.get(h.call.call_id, "call_1")
    assert record.state is ToolCallState.SUCCEEDED and record.late
    after = h.engine.after_call_events.of_type("tool-result-after-call")  # type: ignore[attr-defined]
    assert len(after) == 1 and after[0].data["toolCall"]["late"] is True
    again = await h.engine.submit_result(
        h.call.call_id, ToolResult("call_1", result="shipped"), ResultSource.API
    )
    assert again.duplicate
    # Never spoken, so a repeat reports it again under the same event id: the outbox
    # stores it, and the receiver sees it, once.
    reports = h.engine.after_call_events.of_type("tool-result-after-call")  # type: ignore[attr-defined]
    assert len({e.id for e in reports}) == 1


async def test_11_progress_updates_then_final_result_in_order(clock: ManualClock) -> None:
    llm = ScriptedLLM(
        [
            [*say("Starting the export."), call("check_order", id="call_1")],
            say("It is running."),
            say("The export is finished."),
        ],
        clock=clock,
    )
    async with running_call(assistant(ORDER), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        await start_async_order(h)
        cid = h.call.call_id
        await h.engine.submit_result(
            cid, ToolResult("call_1", result={"pct": 30}, will_continue=True), ResultSource.API
        )
        await h.advance(1)
        await h.engine.submit_result(
            cid,
            ToolResult(
                "call_1", result={"pct": 70}, message="About two thirds done.", will_continue=True
            ),
            ResultSource.API,
        )
        await h.advance(5)
        assert h.spoken()[-1] == "About two thirds done."
        await h.engine.submit_result(
            cid, ToolResult("call_1", result={"pct": 100}), ResultSource.API
        )
        await h.advance(10)
        record = await h.record("call_1")
        assert [p.result for p in record.progress] == [{"pct": 30}, {"pct": 70}]
        assert record.progress[0].at <= record.progress[1].at <= (record.resolved_at or 0)
        assert record.state is ToolCallState.SUCCEEDED
        kinds = [e.type for e in h.events.events if e.type.startswith("tool-call")]
        assert kinds == [
            "tool-calls",
            "tool-call-progress",
            "tool-call-progress",
            "tool-calls-result",
        ]
        assert h.spoken()[-1] == "The export is finished."
        with pytest.raises(Conflict) as late_progress:
            await h.engine.submit_result(
                cid, ToolResult("call_1", result={"pct": 5}, will_continue=True), ResultSource.API
            )
        assert late_progress.value.code == "tool_call_finished"
