"""In-process Python tools: registration, schemas, and running inside a call."""

from __future__ import annotations

import asyncio

import pytest

from backchannel import (
    ConfigError,
    ManualClock,
    ResultSource,
    ScriptedLLM,
    ToolCallState,
    ToolContext,
    ToolRegistry,
)
from backchannel.llm.scripted import call, say

from .harness import assistant, running_call

pytestmark = pytest.mark.anyio


def test_schema_comes_from_the_signature_and_docstring() -> None:
    tools = ToolRegistry()

    @tools.tool(is_async=True, timeout_seconds=60)
    async def book_table(
        restaurant: str, people: int, ctx: ToolContext, time: str = "19:00"
    ) -> str:
        """Book a table.

        Takes a while: it phones the restaurant.
        """
        return "ok"

    spec = tools.specs()["book_table"]
    assert spec.description.startswith("Book a table.")
    assert spec.parameters["required"] == ["restaurant", "people"]
    assert spec.parameters["properties"]["people"] == {"type": "integer"}
    assert spec.parameters["properties"]["time"]["default"] == "19:00"
    assert "ctx" not in spec.parameters["properties"]
    assert spec.is_async and spec.timeout_seconds == 60
    assert tools["book_table"].context_param == "ctx"
    with pytest.raises(ConfigError) as dup:
        tools.tool(name="book_table")(lambda: None)
    assert dup.value.code == "duplicate_tool"


async def test_in_process_tools_succeed_fail_report_progress_and_defer(clock: ManualClock) -> None:
    tools = ToolRegistry()
    later: list[ToolContext] = []

    @tools.tool
    def add(a: int, b: int) -> int:
        return a + b

    @tools.tool
    async def explode() -> None:
        raise ValueError("no stock")

    @tools.tool(is_async=True)
    async def export(ctx: ToolContext) -> dict[str, int]:
        await ctx.progress({"pct": 50})
        return {"rows": 10}

    @tools.tool(is_async=True)
    async def approve(ctx: ToolContext) -> None:
        ctx.defer()
        later.append(ctx)

    llm = ScriptedLLM(
        [
            [call("add", {"a": 2, "b": 3}, id="t_add"), call("explode", id="t_err")],
            [call("export", id="t_exp"), call("approve", id="t_app")],
            say("Working on it."),
        ],
        clock=clock,
    )
    async with running_call(assistant(), llm, clock=clock, tools=tools) as h:
        h.call.send_text("Go.")
        await h.advance(5)
        assert (await h.record("t_add")).result == 5
        failed = await h.record("t_err")
        assert failed.state is ToolCallState.FAILED
        assert failed.error == "ValueError: no stock"
        exported = await h.record("t_exp")
        assert exported.state is ToolCallState.SUCCEEDED
        assert [p.result for p in exported.progress] == [{"pct": 50}]
        assert exported.resolved_by is ResultSource.IN_PROCESS
        assert (await h.record("t_app")).state is ToolCallState.RUNNING
        await later[0].resolve("approved", message="Your request was approved.")
        await h.advance(10)
        assert (await h.record("t_app")).result == "approved"
        assert "Your request was approved." in h.spoken()


async def test_bad_arguments_from_the_model_fail_the_call_clearly(clock: ManualClock) -> None:
    tools = ToolRegistry()

    @tools.tool
    def add(a: int, b: int) -> int:
        return a + b

    llm = ScriptedLLM([[call("add", {"a": 1}, id="t1")], say("Hmm.")], clock=clock)
    async with running_call(assistant(), llm, clock=clock, tools=tools) as h:
        h.call.send_text("Add.")
        await h.advance(3)
        record = await h.record("t1")
        assert record.state is ToolCallState.FAILED
        assert record.error is not None and "TypeError" in record.error
        await asyncio.sleep(0)
