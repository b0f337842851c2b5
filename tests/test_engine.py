from __future__ import annotations

import pytest

from backchannel import (
    ConfigError,
    Engine,
    EventLog,
    Ledger,
    MemoryStore,
    NotFound,
    ResultSource,
    ScriptedLLM,
    ToolResult,
)
from backchannel.config import ModelConfig

from .harness import assistant

pytestmark = pytest.mark.anyio


async def test_an_engine_needs_a_model() -> None:
    with pytest.raises(ConfigError):
        Engine(Ledger(MemoryStore()))


async def test_llm_factory_builds_one_model_per_call_from_its_config() -> None:
    built: list[str] = []

    def factory(model: ModelConfig) -> ScriptedLLM:
        built.append(model.model)
        return ScriptedLLM()

    engine = Engine(Ledger(MemoryStore()), llm_factory=factory)
    await engine.open()
    async with engine.call(assistant()) as call:
        assert call.call_id in engine.live
    assert built == ["scripted"]
    assert engine.live == {}
    await engine.close()


async def test_results_for_unknown_calls_and_ids_are_refused() -> None:
    events = EventLog()
    engine = Engine(Ledger(MemoryStore()), llm=ScriptedLLM(), after_call_events=events)
    await engine.open()
    with pytest.raises(NotFound) as exc:
        await engine.submit_result("no-call", ToolResult("x", result=1), ResultSource.API)
    assert exc.value.code == "unknown_tool_call"
    assert events.events == []
