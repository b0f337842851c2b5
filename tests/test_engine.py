from __future__ import annotations

import pytest

from backchannel import (
    AssistantConfig,
    ConfigError,
    Engine,
    EventLog,
    Ledger,
    LLMRequest,
    ManualClock,
    MemoryStore,
    NotFound,
    PacedSpeech,
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


async def test_warming_an_assistant_prepares_exactly_the_prompt_its_calls_open_with(
    clock: ManualClock,
) -> None:
    class Preparing(ScriptedLLM):
        def __init__(self) -> None:
            super().__init__(clock=clock)
            self.prepared: list[LLMRequest] = []

        async def prepare(self, request: LLMRequest) -> None:
            self.prepared.append(request)

    llm = Preparing()
    engine = Engine(Ledger(MemoryStore(), clock), llm=llm, clock=clock)
    await engine.open()
    config = AssistantConfig.from_json(
        {
            "firstMessage": "Hello, how can I help?",
            "model": {
                "model": "scripted",
                "messages": [{"role": "system", "content": "You are a shop."}],
                "tools": [{"type": "function", "function": {"name": "check_order"}}],
            },
        }
    )
    await engine.warm(config)
    assert engine.live == {}, "no call was opened"
    async with engine.call(config, output=PacedSpeech(clock)) as _call:
        for _ in range(5):
            await clock.advance(0.1)
    await engine.close()
    warm, opened = llm.prepared[0], llm.prepared[1]
    assert warm.messages == opened.messages and warm.tools == opened.tools
