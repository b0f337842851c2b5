"""No dead air around tools, and no stale placeholder: a result that is already in when
the assistant would say "I'm checking" is said instead of it, once."""

from __future__ import annotations

import pytest

from backchannel import ManualClock, ResultSource, ScriptedLLM, ToolResult
from backchannel.llm.base import LLMChunk, LLMRequest
from backchannel.llm.scripted import call, say
from backchannel.tool_runs import PLACEHOLDER

from .harness import ReadingLLM, assistant, running_call, tool

pytestmark = pytest.mark.anyio

START = "Let me look that up for you."  # 6 words: 1.5 s at 0.25 s a word
CHECKING = "I'm checking on that now."
ANSWER = "Your order is out for delivery."
LATER = "Good news, the lookup is back: your order is out for delivery."


def respond(request: LLMRequest) -> list[LLMChunk]:
    if "background tool calls" in str(request.messages[-1].get("content")):
        return say(LATER)
    tools = [i for i, m in enumerate(request.messages) if m["role"] == "tool"]
    if not tools:
        return [call("check_order", {"id": "4417"}, id="c1")]
    after = request.messages[tools[-1] + 1 :]  # the start line may follow the tool message
    if any(m.get("content") in (CHECKING, ANSWER) for m in after):
        return []
    return say(CHECKING if request.messages[tools[-1]]["content"] == PLACEHOLDER else ANSWER)


def order_tool() -> dict[str, object]:
    return tool(
        "check_order", is_async=True, messages=[{"type": "request-start", "content": START}]
    )


async def test_a_result_in_before_the_placeholder_is_heard_is_said_instead_of_it(
    clock: ManualClock,
) -> None:
    llm = ScriptedLLM(respond=respond, clock=clock)
    async with running_call(assistant(order_tool()), llm, clock=clock) as h:
        h.server.modes["check_order"] = "slow"
        h.server.delays["check_order"] = 1.0  # in while the start line still plays
        h.call.send_text("Where is my order?")
        await h.advance(10)
        assert h.spoken() == [START, ANSWER], "the start line at once, then the answer"
        assert [a.tool_call_id for a in h.call.announced] == ["c1"]
        record = await h.record("c1")
        assert record.delivered_at is not None and record.spoken_at is not None
        history = h.history()
        tool_message = next(m for m in history if m.get("tool_call_id") == "c1")
        assert tool_message["content"] != PLACEHOLDER, "the result took the placeholder's place"
        assert not any(CHECKING in str(m.get("content")) for m in history)
        await h.advance(30)
        assert h.spoken() == [START, ANSWER], "and it is not announced again"


async def test_a_result_after_the_placeholder_was_heard_is_announced_when_the_floor_frees(
    clock: ManualClock,
) -> None:
    llm = ScriptedLLM(respond=respond, clock=clock)
    async with running_call(assistant(order_tool()), llm, clock=clock) as h:
        h.server.modes["check_order"] = "slow"
        h.server.delays["check_order"] = 2.0  # the placeholder line is playing by then
        h.call.send_text("Where is my order?")
        await h.advance(20)
        assert h.spoken() == [START, CHECKING, LATER]
        assert [a.tool_call_id for a in h.call.announced] == ["c1"]


async def test_a_result_that_lands_while_the_placeholder_is_generated_restarts_it(
    clock: ManualClock,
) -> None:
    llm = ScriptedLLM(respond=respond, clock=clock, first_chunk_delay=1.0)
    async with running_call(assistant(tool("check_order", is_async=True)), llm, clock=clock) as h:
        h.server.modes["check_order"] = "slow"
        h.server.delays["check_order"] = 0.5  # the model is still on the follow-up
        h.call.send_text("Where is my order?")
        await h.advance(15)
        assert h.spoken() == [ANSWER]
        assert [a.tool_call_id for a in h.call.announced] == ["c1"]


async def test_a_wordless_barge_in_over_an_announcement_says_it_again_once(
    clock: ManualClock,
) -> None:
    line = "Your order has shipped and it arrives on Tuesday at noon."
    llm = ScriptedLLM(respond=respond, clock=clock)
    async with running_call(assistant(order_tool()), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"  # the result comes later, over the API
        h.call.send_text("Where is my order?")
        await h.advance(5)
        await h.call.submit_result(
            ToolResult("c1", result={"status": "shipped"}, message=line), ResultSource.API
        )
        await h.advance(1)  # the announcement is playing
        h.call.user_started_speaking()  # a cough
        h.call.user_stopped_speaking()
        h.call.user_transcript("")
        await h.advance(10)
        plays = [(text, whole) for text, _start, _end, whole in h.played() if text == line]
        assert plays == [(line, False), (line, True)], "cut once, then said whole once"
        assert [a.tool_call_id for a in h.call.announced] == ["c1"]


async def test_a_result_that_waits_for_a_reply_being_heard_is_read_ahead_meanwhile(
    clock: ManualClock,
) -> None:
    shipping = "Shipping is free on orders over fifty dollars and five dollars otherwise."

    def answer(request: LLMRequest) -> list[LLMChunk]:
        if request.messages[-1].get("content") == "What does shipping cost?":
            return say(shipping)
        return respond(request)

    llm = ReadingLLM(respond=answer, clock=clock)
    async with running_call(assistant(order_tool()), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"  # the result comes later, over the API
        h.call.send_text("Where is my order?")
        await h.advance(8)
        h.call.send_text("What does shipping cost?")
        await h.advance(1)  # the reply is generated and playing (12 words: 3 s)
        assert h.call.assistant_speaking
        before = len(llm.prepared)
        await h.call.submit_result(
            ToolResult("c1", result={"status": "out for delivery"}), ResultSource.API
        )
        await h.advance(0)
        ahead = [str(r.messages[-1].get("content")) for r in llm.prepared[before:]]
        assert any("background tool calls" in text for text in ahead), ahead
        await h.advance(20)
        assert h.spoken()[-2:] == [shipping, LATER], "the reply first, then the result"
        assert [a.tool_call_id for a in h.call.announced] == ["c1"]
