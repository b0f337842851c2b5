"""A call's behaviour around the scenarios: barge-in, cancellation, built-ins, control,
failures that must not end the call."""

from __future__ import annotations

from typing import Any

import pytest

from backchannel import (
    CallEnded,
    ManualClock,
    ProviderError,
    ResultSource,
    ScriptedLLM,
    ToolCallState,
    ToolResult,
)
from backchannel.config import StopSpeakingPlan
from backchannel.llm.base import LLMChunk, LLMRequest
from backchannel.llm.scripted import call, say

from .harness import ReadingLLM, assistant, running_call, tool

pytestmark = pytest.mark.anyio

LONG = "Our store opens at nine and closes at six on every single weekday."


async def test_barge_in_stops_speech_and_cuts_history_to_what_was_heard(clock: ManualClock) -> None:
    llm = ScriptedLLM([say(LONG)], clock=clock)
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.send_text("When are you open?")
        await h.advance(1.0)  # 4 of 13 words heard at 0.25 s a word
        h.call.user_started_speaking()
        await h.advance(0)
        _text, _start, end, whole = h.played()[0]
        assert not whole and end == pytest.approx(1.0)
        heard = next(m["content"] for m in h.history() if m["role"] == "assistant")
        assert LONG.startswith(heard) and 0 < len(heard) < len(LONG)
        assert len(heard) == int(len(LONG) * 1.0 / (13 * 0.25))
        assert len(h.events.of_type("user-interrupted")) == 1
        await h.advance(10)
        assert len(h.played()) == 1, "nothing more is said over the user"


@pytest.mark.parametrize("backoff", [0.0, 1.5])
async def test_after_a_barge_in_the_assistant_speaks_again_no_sooner_than_backoff_seconds(
    clock: ManualClock, backoff: float
) -> None:
    config = assistant()
    plan = StopSpeakingPlan.model_validate({"backoffSeconds": backoff})
    config = config.model_copy(update={"stop_speaking_plan": plan})
    llm = ScriptedLLM([say(LONG)], clock=clock)
    async with running_call(config, llm, clock=clock) as h:
        h.call.send_text("When are you open?")
        await h.advance(1.0)
        h.call.user_started_speaking()  # a cough: no words come of it
        cut_at = clock.monotonic()
        await h.advance(0.2)
        h.call.user_stopped_speaking()
        h.call.user_transcript("")
        await h.advance(10)
        (_text, _start, _end, whole), (again, start, _end2, _whole2) = h.played()
        assert not whole and LONG.startswith(again), "the cut sentence is said again"
        assert start == pytest.approx(cut_at + max(backoff, 0.2))


async def test_while_a_reply_is_heard_the_model_reads_ahead_up_to_the_callers_next_words(
    clock: ManualClock,
) -> None:
    llm = ReadingLLM([say(LONG), say("Yes.")], clock=clock)
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.send_text("When are you open?")
        await h.advance(1.0)  # the reply is generated and being heard
        assert h.call.assistant_speaking
        ahead = llm.prepared[-1].messages
        assert ahead[-1] == {"role": "user", "content": ""}
        assert [m.get("content") for m in ahead[-3:-1]] == ["When are you open?", LONG]
        await h.advance(5.0)
        h.call.send_text("On Sundays too?")
        await h.advance(1.0)
        asked = llm.requests[-1].messages
        assert asked[: len(ahead) - 1] == ahead[:-1], "the next turn starts as read ahead"


async def test_after_a_barge_in_the_model_reads_ahead_from_what_was_heard(
    clock: ManualClock,
) -> None:
    llm = ReadingLLM([say(LONG)], clock=clock)
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.send_text("When are you open?")
        await h.advance(1.0)
        h.call.user_started_speaking()
        await h.advance(0)
        ahead = llm.prepared[-1].messages
        assert ahead[-1] == {"role": "user", "content": ""}
        heard = str(ahead[-2]["content"])
        assert ahead[-2]["role"] == "assistant" and LONG.startswith(heard) and heard != LONG


async def test_cancel_on_interruption_cancels_and_a_late_result_is_not_spoken(
    clock: ManualClock,
) -> None:
    cancellable = tool("search", is_async=True, backchannel={"cancelOnInterruption": True})
    llm = ScriptedLLM(
        [
            [*say("Searching."), call("search", id="s1")],
            say("This can take a little while to finish, please bear with me."),
            say("Okay, stopped."),
        ],
        clock=clock,
    )
    async with running_call(assistant(cancellable), llm, clock=clock) as h:
        h.server.modes["search"] = "ack"
        h.call.send_text("Search for flights.")
        await h.advance(1.0)
        h.call.user_started_speaking()
        await h.advance(0.5)
        record = await h.record("s1")
        assert record.state is ToolCallState.CANCELLED
        cancelled = h.events.of_type("tool-calls-cancelled")
        assert [t["toolCallId"] for t in cancelled[0].data["toolCallList"]] == ["s1"]
        h.call.user_stopped_speaking()
        h.call.user_transcript("Never mind.")
        await h.advance(10)
        spoken = len(h.played())
        late = await h.engine.submit_result(
            h.call.call_id, ToolResult("s1", result="found"), ResultSource.API
        )
        assert late.outcome.value == "late"
        await h.advance(10)
        assert len(h.played()) == spoken
        record = await h.record("s1")
        assert record.state is ToolCallState.CANCELLED and record.late and record.result == "found"
        history = h.history()
        assert history[-1]["role"] == "assistant"


async def test_first_message_and_end_call_builtin(clock: ManualClock) -> None:
    llm = ScriptedLLM([[*say("Goodbye!"), call("endCall", id="end")]], clock=clock)
    config = assistant({"type": "endCall"}, first_message="Hello there.")
    async with running_call(config, llm, clock=clock) as h:
        await h.advance(2)
        assert h.spoken() == ["Hello there."]
        h.call.send_text("Bye.")
        await h.advance(5)
        assert h.call.ended.is_set()
        assert h.call.ended_reason == "assistant-ended-call"
        assert h.spoken() == ["Hello there.", "Goodbye!"]
        assert (await h.record("end")).state is ToolCallState.SUCCEEDED
        report = h.events.of_type("end-of-call-report")[0]
        assert report.data["endedReason"] == "assistant-ended-call"


async def test_a_failing_model_does_not_end_the_call(clock: ManualClock) -> None:
    calls = 0

    def respond(request: LLMRequest) -> list[LLMChunk]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ProviderError("model server down", code="llm_error")
        return say("I'm back.")

    llm = ScriptedLLM(respond=respond, clock=clock)
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.send_text("Hello?")
        await h.advance(2)
        # Never silence: the caller hears the fallback line, the client gets an error.
        assert h.spoken() == ["Sorry, I'm having trouble answering right now."]
        [error] = h.events.of_type("error")
        assert error.data["error"]["code"] == "llm_error"
        h.call.send_text("Hello again?")
        await h.advance(2)
        assert h.spoken()[-1] == "I'm back."
        assert not h.call.ended.is_set()


async def test_a_model_that_stays_down_gets_one_fallback_line_per_run_of_failures(
    clock: ManualClock,
) -> None:
    def respond(request: LLMRequest) -> list[LLMChunk]:
        raise ProviderError("model server down", code="llm_error")

    llm = ScriptedLLM(respond=respond, clock=clock)
    config = assistant()
    config.model.fallback_message = "One moment, please."
    async with running_call(config, llm, clock=clock) as h:
        for text in ("Hello?", "Are you there?"):
            h.call.send_text(text)
            await h.advance(2)
        assert h.spoken() == ["One moment, please."]
        assert len(h.events.of_type("error")) == 2


async def test_unknown_tool_gets_an_error_the_model_can_read(clock: ManualClock) -> None:
    llm = ScriptedLLM(
        [[call("no_such_tool", id="x1")], say("Sorry, I can't do that.")], clock=clock
    )
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.send_text("Do the thing.")
        await h.advance(3)
        tool_msg = next(m for m in llm.requests[1].messages if m.get("tool_call_id") == "x1")
        assert "unknown_tool" in tool_msg["content"]
        assert h.spoken() == ["Sorry, I can't do that."]


async def test_control_add_message_say_and_end(clock: ManualClock) -> None:
    llm = ScriptedLLM([say("Noted, thanks.")], clock=clock)
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.add_message("system", "The customer is a VIP.", trigger_response=True)
        await h.advance(3)
        assert any(m["content"] == "The customer is a VIP." for m in llm.requests[0].messages)
        assert h.spoken() == ["Noted, thanks."]
        h.call.add_message("tool", "raw tool text")
        assert "Tool message: raw tool text" in str(h.history()[-1])
        h.call.say("Please hold.")
        h.call.say("Goodbye.", end_call_after=True)
        await h.advance(5)
        assert h.spoken()[-2:] == ["Please hold.", "Goodbye."]
        assert h.call.ended.is_set()
        with pytest.raises(CallEnded) as ended:
            h.call.say("Too late.")
        assert ended.value.code == "call_ended"


async def test_say_with_interrupt_cuts_the_current_sentence(clock: ManualClock) -> None:
    llm = ScriptedLLM([say(LONG)], clock=clock)
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.send_text("Hours?")
        await h.advance(1)
        h.call.say("Sorry, one urgent notice.", interrupt=True)
        await h.advance(3)
        played = h.played()
        assert not played[0][3]
        assert played[1][0] == "Sorry, one urgent notice."


async def test_sync_server_tool_failure_is_a_failed_result_not_a_crash(clock: ManualClock) -> None:
    llm = ScriptedLLM([[call("lookup", id="l1")], say("The lookup failed.")], clock=clock)
    async with running_call(assistant(tool("lookup")), llm, clock=clock) as h:
        h.server.modes["lookup"] = "fail"
        h.call.send_text("Look it up.")
        await h.advance(3)
        record = await h.record("l1")
        assert record.state is ToolCallState.FAILED
        assert record.error is not None and "tool_server_error" in record.error
        assert record.resolved_by is ResultSource.ENGINE
        assert h.spoken() == ["The lookup failed."]


async def test_sync_result_speaks_the_complete_line_and_feeds_the_model(clock: ManualClock) -> None:
    lookup = tool("lookup", messages=[{"type": "request-complete", "content": "Got it."}])
    llm = ScriptedLLM([[call("lookup", {"id": "9"}, id="l1")], say("It is nine.")], clock=clock)
    async with running_call(assistant(lookup), llm, clock=clock) as h:
        h.call.send_text("Look it up.")
        await h.advance(3)
        tool_msg = next(m for m in llm.requests[1].messages if m.get("tool_call_id") == "l1")
        assert tool_msg["content"] == '{"id": "9", "ok": true}'
        assert h.spoken() == ["Got it.", "It is nine."]
        record = await h.record("l1")
        assert record.state is ToolCallState.SUCCEEDED
        assert record.resolved_by is ResultSource.WEBHOOK
        assert record.delivered_at is not None


async def test_blocking_start_line_is_spoken_before_the_tool_runs(clock: ManualClock) -> None:
    lookup = tool(
        "lookup",
        messages=[
            {"type": "request-start", "content": "Let me look that up for you.", "blocking": True}
        ],
    )
    llm = ScriptedLLM([[call("lookup", id="l1")], say("Done.")], clock=clock)
    async with running_call(assistant(lookup), llm, clock=clock) as h:
        h.call.send_text("Look it up.")
        await h.advance(1.0)  # the 7-word line takes 1.75 s
        assert h.server.received == []
        await h.advance(1.0)
        assert len(h.server.received) == 1


async def test_sync_tool_cut_by_barge_in_closes_the_block_and_delivers_later(
    clock: ManualClock,
) -> None:
    llm = ScriptedLLM(
        [
            [*say("Checking."), call("lookup", id="l1")],
            say("Sure, go ahead."),
            say("The lookup came back: it is ready."),
        ],
        clock=clock,
    )
    async with running_call(assistant(tool("lookup")), llm, clock=clock) as h:
        h.server.modes["lookup"] = "slow"
        h.server.delays["lookup"] = 10.0
        h.call.send_text("Look it up.")
        await h.advance(2)
        h.call.user_started_speaking()
        await h.advance(1)
        h.call.user_stopped_speaking()
        h.call.user_transcript("Actually, one more thing.")
        await h.advance(3)
        history = h.history()
        closing = next(m for m in history if m.get("tool_call_id") == "l1")
        assert "interrupted" in closing["content"]
        await h.advance(10)
        record = await h.record("l1")
        assert record.state is ToolCallState.SUCCEEDED
        assert h.spoken()[-1] == "The lookup came back: it is ready."
        assert [a.tool_call_id for a in h.call.announced] == ["l1"]


def _first_user(messages: Any) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


async def test_history_is_valid_openai_order_when_results_land_mid_block(
    clock: ManualClock,
) -> None:
    """A background result arriving while a sync tool runs waits for the block to close."""
    llm = ScriptedLLM(
        [
            [*say("Starting."), call("bg", id="b1")],
            [call("lookup", id="l1")],
            say("All set."),
            say("The background job finished."),
        ],
        clock=clock,
    )
    config = assistant(tool("bg", is_async=True), tool("lookup"))
    async with running_call(config, llm, clock=clock) as h:
        h.server.modes["bg"] = "ack"
        h.server.modes["lookup"] = "slow"
        h.server.delays["lookup"] = 2.0
        h.call.send_text("Go.")
        await h.advance(1.0)
        await h.engine.submit_result(
            h.call.call_id, ToolResult("b1", result="bg done"), ResultSource.API
        )
        await h.advance(10)
        history = h.history()
        for i, m in enumerate(history):
            if m["role"] == "assistant" and m.get("tool_calls"):
                ids = {tc["id"] for tc in m["tool_calls"]}
                following = history[i + 1 : i + 1 + len(ids)]
                assert {f.get("tool_call_id") for f in following} == ids
        assert _first_user(history) == "Go."


async def test_cancel_on_interruption_stops_a_running_python_tool(clock: ManualClock) -> None:
    from backchannel import ToolRegistry

    tools = ToolRegistry()
    finished: list[bool] = []

    @tools.tool(is_async=True, cancel_on_interruption=True)
    async def crawl() -> str:
        await clock.sleep(30)
        finished.append(True)
        return "crawled"

    llm = ScriptedLLM(
        [[*say("Crawling."), call("crawl", id="k1")], say("This will take a while, please wait.")],
        clock=clock,
    )
    async with running_call(assistant(), llm, clock=clock, tools=tools) as h:
        h.call.send_text("Crawl the site.")
        await h.advance(1.0)
        h.call.user_started_speaking()
        await h.advance(40)
        assert (await h.record("k1")).state is ToolCallState.CANCELLED
        assert finished == [], "the Python task was stopped"
        assert h.call.tools.runs == {}
