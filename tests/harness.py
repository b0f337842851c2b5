"""Shared test helpers: a call driven on a manual clock, and a fake tool server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from backchannel import (
    AssistantConfig,
    Call,
    Engine,
    EventLog,
    Invocation,
    Ledger,
    ManualClock,
    MemoryStore,
    PacedSpeech,
    ProviderError,
    ScriptedLLM,
    ToolRegistry,
    ToolResult,
)
from backchannel.ledger.store import LedgerStore
from backchannel.llm.base import LLMRequest
from backchannel.speech import words_duration

SECONDS_PER_WORD = 0.25


class ReadingLLM(ScriptedLLM):
    """A scripted model that keeps every request it is asked to read ahead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: list[LLMRequest] = []

    async def prepare(self, request: LLMRequest) -> None:
        self.prepared.append(request)


def tool(
    name: str,
    *,
    is_async: bool = False,
    url: str | None = "http://tools.example/hook",
    messages: Sequence[Mapping[str, Any]] = (),
    backchannel: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """A tool in Vapi's JSON shape."""
    data: dict[str, Any] = {
        "type": "function",
        "async": is_async,
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
        "messages": list(messages),
    }
    if url is not None:
        data["server"] = {"url": url}
        if timeout is not None:
            data["server"]["timeoutSeconds"] = timeout
    if backchannel is not None:
        data["backchannel"] = dict(backchannel)
    return data


def assistant(*tools: Mapping[str, Any], first_message: str | None = None) -> AssistantConfig:
    return AssistantConfig.from_json(
        {
            "name": "test",
            "firstMessage": first_message,
            "model": {
                "provider": "openai",
                "model": "scripted",
                "messages": [{"role": "system", "content": "You are a test assistant."}],
                "tools": list(tools),
            },
        }
    )


@dataclass
class FakeToolServer:
    """A Vapi-style tool server: per tool, answer at once, acknowledge only, answer
    slowly, or fail."""

    clock: ManualClock
    modes: dict[str, str] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    answers: dict[str, Callable[[Mapping[str, Any]], Any]] = field(default_factory=dict)
    received: list[Invocation] = field(default_factory=list)

    async def call(self, invocation: Invocation) -> Sequence[ToolResult]:
        self.received.append(invocation)
        name = invocation.spec.name
        mode = self.modes.get(name, "sync")
        if mode == "ack":
            return []
        if mode == "fail":
            raise ProviderError("tool server answered 500", code="tool_server_error")
        if mode == "slow":
            await self.clock.sleep(self.delays.get(name, 30.0))
        answer = self.answers.get(name, lambda args: {"ok": True, **args})
        return [ToolResult(invocation.tool_call_id, name, result=answer(invocation.arguments))]


@dataclass
class Harness:
    clock: ManualClock
    engine: Engine
    call: Call
    llm: ScriptedLLM
    output: PacedSpeech
    events: EventLog
    server: FakeToolServer

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    def spoken(self) -> list[str]:
        """Every utterance that was played, whole or cut, in order."""
        return [u.text.strip() for u, _start, _end, _heard in self.output.played]

    def played(self) -> list[tuple[str, float, float, bool]]:
        """(text, start, end, whole) per utterance."""
        return [
            (u.text.strip(), start, end, heard == len(u.text))
            for u, start, end, heard in self.output.played
        ]

    async def record(self, tool_call_id: str) -> Any:
        return await self.engine.ledger.get(self.call.call_id, tool_call_id)

    def history(self) -> list[dict[str, Any]]:
        return self.call.conversation.to_openai()


@asynccontextmanager
async def running_call(
    config: AssistantConfig,
    llm: ScriptedLLM,
    *,
    clock: ManualClock,
    store: LedgerStore | None = None,
    tools: ToolRegistry | None = None,
    seconds_per_word: float = SECONDS_PER_WORD,
    gather_seconds: float = 1.0,
) -> AsyncIterator[Harness]:
    server = FakeToolServer(clock)
    engine = Engine(
        Ledger(store or MemoryStore(), clock),
        llm=llm,
        clock=clock,
        tools=tools,
        tool_server=server,
        gather_seconds=gather_seconds,
    )
    await engine.open()
    output = PacedSpeech(clock, words_duration(seconds_per_word))
    events = EventLog()
    async with engine.call(config, output=output, events=events) as call:
        h = Harness(clock, engine, call, llm, output, events, server)
        await clock.advance(0)
        yield h
    await engine.close()
