from __future__ import annotations

import asyncio

import pytest

from backchannel import LLMRequest, ManualClock, ScriptedLLM, TextDelta, ToolCallRequest
from backchannel.llm.scripted import call, say

pytestmark = pytest.mark.anyio


async def test_plays_back_the_script_then_the_responder_with_timing() -> None:
    clock = ManualClock()
    llm = ScriptedLLM(
        [[*say("a b c d", chunk_words=2), call("t", {"x": 1}, id="c1")]],
        respond=lambda req: say("from responder"),
        clock=clock,
        first_chunk_delay=0.2,
        chunk_gap=0.05,
    )
    got: list[tuple[float, object]] = []

    async def consume() -> None:
        async for chunk in llm.stream(LLMRequest(messages=[])):
            got.append((clock.monotonic(), chunk))

    task = asyncio.ensure_future(consume())
    await clock.advance(1)
    await task
    assert got == [
        (0.2, TextDelta("a b ")),
        (0.25, TextDelta("c d")),
        (0.25, ToolCallRequest("c1", "t", {"x": 1})),
    ]
    llm.reply(TextDelta("queued"))
    assert llm.script == [[TextDelta("queued")]]
    assert llm.max_active == 1
    assert len(llm.requests) == 1


async def test_default_reply_and_fresh_ids() -> None:
    llm = ScriptedLLM()
    assert [c async for c in llm.stream(LLMRequest(messages=[]))] == [TextDelta("Okay.")]
    assert call("t").id != call("t").id
