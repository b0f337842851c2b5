"""The engine: hosts live calls and takes results for any call, live or ended.

    engine = Engine(Ledger(SqlStore()), llm=OpenAICompatibleLLM(model="gpt-4o-mini"))
    await engine.open()
    async with engine.call(assistant) as call:
        call.send_text("Where is my order?")
        ...
    # Later, from anywhere (a webhook, a backend):
    await engine.submit_result(call.call_id, ToolResult("call_abc", result={...}), ResultSource.API)

A result for a call that has ended is still accepted: it is recorded as late and a
``tool-result-after-call`` event goes to the engine's post-call sink. A result for a
call in progress in another process (several servers on one database) is recorded here
and handed to ``elsewhere``, which tells the process running the call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .call import Call
from .clock import Clock, SystemClock
from .config import AssistantConfig, ModelConfig
from .conversation import Message
from .errors import BackchannelError, ConfigError
from .events import DurableSink, Event, EventLog, EventSink, event_id
from .ledger.ledger import Ledger, Resolution, owed_report
from .ledger.retry import is_store_error, store_unavailable
from .lifecycle import CallState
from .llm.base import LLM
from .results import ResultSource, ToolResult
from .speech import PacedSpeech, SpeechOutput
from .tools.executors import ToolServer, UnavailableToolServer
from .tools.registry import ToolRegistry

LLMFactory = Callable[[ModelConfig], LLM]

#: How long a result posted after its call waits for its report to be stored.
REPORT_STORE_SECONDS = 10.0


class Elsewhere(Protocol):
    """The processes running the calls this one does not."""

    async def result_recorded(self, call_id: str, resolution: Resolution) -> None:
        """A result for a call in progress elsewhere is in the ledger: get it there."""


class NowhereElse:
    """One process: a call in progress that is not live here is one about to start
    (its result waits in the ledger) or one a crash left behind (ended at start-up)."""

    async def result_recorded(self, call_id: str, resolution: Resolution) -> None:
        log.info("result for %s recorded; the call is not live here", call_id)


log = logging.getLogger("backchannel.engine")


async def _logged(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except BackchannelError as exc:
        log.warning("%s (%s)", exc.message, exc.code)
    except Exception:
        log.exception("engine task failed")


class Engine:
    def __init__(
        self,
        ledger: Ledger,
        *,
        llm: LLM | None = None,
        llm_factory: LLMFactory | None = None,
        clock: Clock | None = None,
        tools: ToolRegistry | None = None,
        tool_server: ToolServer | None = None,
        after_call_events: EventSink | None = None,
        elsewhere: Elsewhere | None = None,
        gather_seconds: float = 1.0,
        speak_chunks: bool = False,
    ) -> None:
        self.ledger = ledger
        self.clock = clock or ledger.clock or SystemClock()
        self.tools = tools or ToolRegistry()
        self.tool_server: ToolServer = tool_server or UnavailableToolServer()
        self.after_call_events: EventSink = after_call_events or EventLog()
        self.elsewhere: Elsewhere = elsewhere or NowhereElse()
        self.live: dict[str, Call] = {}
        self._requests = asyncio.TaskGroup()
        self._in_flight: set[asyncio.Task[Any]] = set()
        #: How long an announcement waits for other open background calls to finish too.
        self.gather_seconds = gather_seconds
        #: Speak each streamed chunk as it comes instead of whole sentences: lower latency
        #: with a TTS that streams well, choppier prosody with one that does not.
        self.speak_chunks = speak_chunks
        if llm is None and llm_factory is None:
            raise ConfigError("an Engine needs an llm or an llm_factory", code="invalid_config")
        self._llm = llm
        self._llm_factory = llm_factory

    async def open(self) -> None:
        await self.ledger.open()
        await self._requests.__aenter__()

    async def close(self) -> None:
        """Stop what is still in flight (webhook requests past their call) and the ledger."""
        for task in list(self._in_flight):
            task.cancel()
        await self._requests.__aexit__(None, None, None)
        await self.ledger.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work whose life is bounded by itself rather than by one call: a tool
        server's request may be answered after its call has ended, and that late reply
        must still be delivered (as late). Owned by the engine's task group."""
        task = self._requests.create_task(_logged(coro))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        task.add_done_callback(lambda _t: coro.close())
        return task

    def call(
        self,
        assistant: AssistantConfig,
        *,
        call_id: str | None = None,
        output: SpeechOutput | None = None,
        events: EventSink | None = None,
        llm: LLM | None = None,
    ) -> Call:
        """A new call, to be entered with ``async with``; it ends when the block exits."""
        return Call(
            self,
            assistant,
            call_id=call_id or str(uuid.uuid4()),
            output=output or PacedSpeech(self.clock),
            events=events or EventLog(),
            llm=llm or self._make_llm(assistant.model),
        )

    async def warm(self, assistant: AssistantConfig, *, llm: LLM | None = None) -> None:
        """Have the model evaluate the assistant's opening prompt (system prompt, tools
        and greeting) ahead of its calls, as a server that has served it before has: a
        local model keeps the state, so the first call's first turn is as fast as any.
        Nothing is recorded; no call is opened."""
        model = llm or self._make_llm(assistant.model)
        opening = Call(
            self,
            assistant,
            call_id="warm-up",
            output=PacedSpeech(self.clock),
            events=EventLog(),
            llm=model,
        )
        if assistant.first_message and assistant.first_message_mode == "assistant-speaks-first":
            opening.conversation.append(Message("assistant", assistant.first_message))
        await model.prepare(opening.llm_request(opening.conversation.to_openai()))

    async def submit_result(
        self, call_id: str, result: ToolResult, source: ResultSource
    ) -> Resolution:
        """Deliver a result to its call; after hang-up, record it as late and report it."""
        try:
            return await self._submit(call_id, result, source)
        except Exception as exc:
            if is_store_error(exc):
                raise store_unavailable(exc) from exc
            raise

    async def _submit(self, call_id: str, result: ToolResult, source: ResultSource) -> Resolution:
        call = self.live.get(call_id)
        if call is not None and not call.ended.is_set():
            return await call.submit_result(result, source)
        record = await self.ledger.store.get_call(call_id)
        running = record is not None and record.state is CallState.IN_PROGRESS
        resolution = await self.ledger.resolve(call_id, result, source, call_live=running)
        if running:
            # Duplicates too: a sender that retries after a lost hand-off repairs it. The
            # result is in the ledger whatever happens to the hand-off (the owner's sweep
            # takes it), so a routing failure is logged, not answered as one.
            try:
                await self.elsewhere.result_recorded(call_id, resolution)
            except BackchannelError:
                raise
            except Exception as exc:
                log.warning(
                    "result %s for call %s recorded; its hand-off failed (%s: %s), the "
                    "owner's sweep will take it",
                    resolution.record.tool_call_id,
                    call_id,
                    type(exc).__name__,
                    exc,
                )
        elif not resolution.duplicate or owed_report(resolution.record):
            # A repeat of a result that was never spoken reports it again (the report's
            # event id is the same, so it is stored and sent once).
            await self.report_durably(resolution.record.to_dict())
        return resolution

    async def take_recorded(self, call_id: str, tool_call_id: str) -> None:
        """A result another process recorded for a call: into the call if it is live
        here, else reported as after the call."""
        call = self.live.get(call_id)
        if call is not None and not call.ended.is_set():
            call.take_recorded_soon(tool_call_id)
            return
        record = await self.ledger.get(call_id, tool_call_id)
        if owed_report(record):
            self.report_after_call(record.to_dict())

    def report_after_call(self, tool_call: dict[str, Any]) -> str:
        """Send ``tool-result-after-call`` for a result the conversation did not speak.
        One event id per tool call, so reporting it again never reports it twice."""
        call_id, tool_call_id = tool_call["callId"], tool_call["toolCallId"]
        event = Event(
            "tool-result-after-call",
            call_id,
            self.clock.wall(),
            {"toolCall": tool_call},
            id=event_id("tool-result-after-call", call_id, tool_call_id),
        )
        self.after_call_events.emit(event)
        return event.id

    async def report_durably(self, tool_call: dict[str, Any]) -> None:
        """Report a result after its call and return once the report is stored, so a
        sender is answered only for what a crash cannot lose; ``store_unavailable`` if
        it could not be stored in time (the sender's retry reports it again, once)."""
        reported = self.report_after_call(tool_call)
        sink = self.after_call_events
        durable = sink.stored(reported) if isinstance(sink, DurableSink) else None
        if durable is None:
            return
        try:
            async with asyncio.timeout(REPORT_STORE_SECONDS):
                await asyncio.shield(durable)
        except TimeoutError as exc:
            raise store_unavailable(exc) from exc

    def _make_llm(self, model: ModelConfig) -> LLM:
        """The assistant's model: built per call by the factory, else the shared one."""
        if self._llm_factory is not None:
            return self._llm_factory(model)
        assert self._llm is not None
        return self._llm
