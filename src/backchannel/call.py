"""One live conversation: owns its task group, its history, its arbiter and its tools.

A :class:`Call` is driven by events — the user started or stopped speaking, a final
transcript, the output started or finished an utterance, a tool result arrived — and
turns them into responses through the :class:`~backchannel.arbiter.Arbiter`. Every task
it starts (the speech player, tool executors, timeouts, responses) lives in the call's
own task group and ends with the call.

Use it as an async context manager from :meth:`backchannel.engine.Engine.call`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .arbiter import Announcement, Arbiter, Plan, PlanKind, SayRequest, Verdict
from .clock import iso_time
from .config import AssistantConfig, Delivery
from .conversation import Conversation, Message, Role, result_note
from .errors import BackchannelError, CallEnded
from .events import Event, EventSink
from .ledger.ledger import Outcome, Resolution, stored_result, unsaid
from .ledger.records import ToolCallRecord
from .ledger.retry import is_store_error, persistently
from .lifecycle import CallState, ToolCallState, TurnState, transition
from .llm.base import LLM, LLMRequest
from .reports import ended_events
from .response import Response, instructions
from .results import ResultSource, ToolResult
from .speech import SpeechOutput
from .telemetry import CallTelemetry, TurnLatency
from .tool_runs import ToolRuns, result_event
from .tools.spec import resolve_tools

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("backchannel.call")

T = TypeVar("T")

#: ``hang`` is sent when a response has said nothing after this long.
HANG_SECONDS = 5.0


class Call:
    def __init__(
        self,
        engine: Engine,
        assistant: AssistantConfig,
        *,
        call_id: str,
        output: SpeechOutput,
        events: EventSink,
        llm: LLM,
    ) -> None:
        self.engine = engine
        self.call_id = call_id
        self.assistant = assistant
        self.clock = engine.clock
        self.ledger = engine.ledger
        self.llm = llm
        self.output = output
        self.events = events
        self.specs = resolve_tools(assistant, engine.tools.specs())
        self._schemas = [spec.openai_schema() for spec in self.specs.values()]
        self.conversation = Conversation(assistant.model.messages, clock=engine.clock)
        self.arbiter = Arbiter(separate_announcements=llm.one_ask_per_response)
        self.state = CallState.QUEUED
        self.ended = asyncio.Event()
        self.ended_reason: str | None = None
        #: Every announcement that reached the listener whole, in order.
        self.announced: list[Announcement] = []
        self._tg = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._response: Response | None = None
        self._response_task: asyncio.Task[None] | None = None
        self.tools = ToolRuns(self)
        self._closing = False
        self._gathering: asyncio.Task[Any] | None = None
        #: Tool calls whose result is in the conversation, and how many progress updates
        #: each has had: a result recorded elsewhere is brought in once.
        self._taken: set[str] = set()
        self._progress_taken: dict[str, int] = {}
        self._recorded: asyncio.Queue[str] | None = None
        #: Set by a transport that can transfer calls (phone). ``transferCall`` then ends
        #: the call after its line is said, and the transport moves the caller to
        #: ``transfer_to``.
        self.can_transfer = False
        #: What the transport knows of the call (a phone call's numbers), for the
        #: ``call`` object of every event and webhook.
        self.details: dict[str, Any] = {}
        self.transfer_to: str | None = None
        self._greeted = asyncio.Event()  # the assistant's first sentence has started playing
        self._opened = asyncio.Event()  # the model has read the call's opening prompt
        self._away = False  # the client dropped and may come back
        self._failures = 0  # responses that failed in a row
        self._heard_plan: int | None = None  # the last plan whose speech was heard
        #: ``mute-customer``: the customer's audio and typed turns are not heard.
        self.customer_muted = False
        #: Results whose announcement was heard, whether or not the store has noted it.
        self._spoken: set[str] = set()
        #: What the last barge-in cut, said again if the turn brings no words.
        self._resumable: tuple[str, ...] = ()
        #: Spans and metrics; each answered turn's latency is also a ``turn-latency`` event.
        self.telemetry = CallTelemetry(
            call_id,
            self.clock,
            self.specs,
            model=assistant.model.model,
            provider=assistant.model.provider,
            assistant=assistant.name,
        )
        self.turns = self.telemetry.timer(self._turn_answered)
        #: Every answered turn's latency, in order.
        self.latencies: list[TurnLatency] = []
        output.attach(self)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Call:
        await self._tg.__aenter__()
        await self.ledger.open_call(self.call_id)
        self.state = transition(self.state, CallState.IN_PROGRESS)
        self.telemetry.opened()
        self.engine.live[self.call_id] = self
        self.spawn(self.output.run(), guard=False)
        self.emit("status-update", status=self.state.value)
        first = self.assistant.first_message
        mode = self.assistant.first_message_mode
        greets = bool(first) and mode == "assistant-speaks-first"
        if first and greets:
            self._apply(self.arbiter.say(SayRequest(first)))
        elif mode == "assistant-speaks-first-with-model-generated-message":
            self._apply(self.arbiter.trigger())  # the model opens the conversation
        self.spawn(self._prepare_llm(after_greeting=greets))
        return self

    async def _prepare_llm(self, *, after_greeting: bool) -> None:
        """Let the model get ready while the call opens: once the greeting plays, so a
        local model's prompt evaluation (seconds of CPU, or milliseconds for an opening
        prompt it has seen before) overlaps the greeting and the caller's first words
        rather than slowing the greeting's speech synthesis."""
        if after_greeting:
            await self._greeted.wait()
        try:  # guarded: a failure here is logged, not fatal
            await self.llm.prepare(self.llm_request(self.conversation.to_openai()))
        finally:
            self._opened.set()
        response = self._response
        if (response is None or response.done_generating) and not self.arbiter.user_speaking:
            self.prepare_next()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.ended.is_set():
                await self.hang_up("customer-ended-call" if exc is None else "pipeline-error")
        finally:
            for task in list(self._tasks):
                task.cancel()
            self.engine.live.pop(self.call_id, None)
            await self._tg.__aexit__(exc_type, exc, tb)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, guard: bool = True) -> asyncio.Task[Any]:
        """Start a task in the call's group; a guarded task's crash is logged, not fatal."""
        task = self._tg.create_task(self._guarded(coro) if guard else coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never starts ``coro``: close it quietly.
        task.add_done_callback(lambda _t: coro.close())
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except BackchannelError as exc:
            log.warning("call %s: %s (%s)", self.call_id, exc.message, exc.code)
        except Exception:
            log.exception("call %s: background task failed", self.call_id)

    async def hang_up(self, reason: str = "customer-ended-call") -> None:
        """End the call: stop speaking, keep pending tool calls in the ledger, report."""
        if self._closing:
            await self.ended.wait()
            return
        self._closing = True
        self.arbiter.close()
        task = self._response_task
        if self._response is not None and task is not None:
            self._cut_response()
            await asyncio.wait([task])
        self.output.stop()
        self.tools.stop_all()
        self.state = transition(self.state, CallState.ENDED)
        self.ended_reason = reason
        self.telemetry.closed(reason)
        try:
            await self._record_end(reason, limit=30.0)
        except Exception:
            # The store stayed away: the call ends here all the same, and its end is
            # recorded and reported in the engine's background once the store is back.
            log.exception("call %s: could not record its end yet; retrying", self.call_id)
            self.engine.spawn(self._record_end(reason, limit=float("inf")))
        self.ended.set()

    async def _record_end(self, reason: str, *, limit: float) -> None:
        """End the call in the ledger, then report: results left unsaid, and the end."""
        await self.persist(
            lambda: self.ledger.end_call(self.call_id, reason), "end the call", limit=limit
        )
        records = await self.persist(
            lambda: self.ledger.list_for_call(self.call_id), "read its tool calls", limit=limit
        )
        for record in records:
            if unsaid(record) and record.tool_call_id not in self._spoken:
                # Its announcement was still waiting when the call ended (e.g. the client
                # never came back): reported, never dropped.
                self.engine.report_after_call(record.to_dict())
        for event in ended_events(
            self.call_id,
            reason,
            records,
            at=self.clock.wall(),
            transcript=self.conversation.transcript(),
            messages=self.conversation.to_openai(),
            vapi_messages=self.conversation.to_vapi(),
            call=self._call_object(),
        ):
            self.events.emit(event)

    async def persist(
        self, write: Callable[[], Awaitable[T]], what: str, *, limit: float = 30.0
    ) -> T:
        """A ledger write the call needs before it goes on: retried through a store
        failure for up to ``limit`` seconds."""
        return await persistently(
            write, f"call {self.call_id}: {what}", clock=self.clock, limit=limit
        )

    async def note(self, write: Callable[[], Awaitable[Any]], what: str) -> None:
        """Bookkeeping the call does not wait for (when a result was delivered or
        spoken): tried now and, if the store fails, retried in the engine's background
        until it lands, while the conversation goes on."""
        try:
            await write()
        except Exception as exc:
            if not is_store_error(exc):
                raise
            self.engine.spawn(persistently(write, f"call {self.call_id}: {what}", clock=self.clock))

    def request_end(self, reason: str) -> None:
        if not self._closing:
            self.spawn(self.hang_up(reason))

    # -- events in: the user -----------------------------------------------------------

    @property
    def assistant_speaking(self) -> bool:
        """The current response's speech has reached the listener and is going on."""
        response = self._response
        return response is not None and not response.cut and self._heard_plan == response.plan.id

    def user_started_speaking(self) -> None:
        self.turns.restart()
        self.emit("speech-update", role="user", status="started")
        if self.arbiter.user_started() is Verdict.CUT:
            self.emit("user-interrupted")
            backoff = self.assistant.stop_speaking_plan.backoff_seconds
            self._resumable = self._cut_response(hold=backoff)
            self.spawn(self.tools.cancel_on_interruption())

    def listener_left(self) -> None:
        """The client dropped and may come back: stop speaking and hold the floor, so
        nothing (a result's announcement included) is said to nobody."""
        self._away = True
        if self.arbiter.user_started() is Verdict.CUT:
            self._cut_response()

    def listener_back(self) -> None:
        """The client is back: what waited meanwhile is said now."""
        if not self._away:
            return
        self._away = False
        self.arbiter.user_stopped()
        self._apply(self.arbiter.user_transcript(""))

    def user_stopped_speaking(self, *, silent_for: float = 0.0, ago: float = 0.0) -> None:
        """The caller's turn is over (it ended ``ago`` seconds ago, ``silent_for``
        seconds after their last word)."""
        self.turns.turn_ended(silent_for, ago=ago)
        self.emit("speech-update", role="user", status="stopped")
        self.arbiter.user_stopped()

    def user_transcript(self, text: str, *, final: bool = True) -> None:
        """A transcript of the user; a final one ends their turn once they are quiet."""
        self.emit(
            "transcript",
            role="user",
            transcriptType="final" if final else "partial",
            transcript=text,
        )
        if not final:
            return
        if text.strip():
            self.turns.transcribed()
        else:
            self.turns.restart()
        resume, self._resumable = self._resumable, ()
        if resume and not text.strip() and not self.arbiter.user_speaking:
            # A false interruption (a cough, noise): no words came, so the sentence it
            # cut is said again, whole, before anything else.
            self.arbiter.say(SayRequest(" ".join(line.strip() for line in resume)))
        self._apply(self.arbiter.user_transcript(text))

    def user_partial(self, text: str) -> None:
        """The caller's words so far, while they are still talking: shown as a partial
        transcript, and given to the model ahead, so its reply need not evaluate them."""
        if not text.strip() or self.ended.is_set():
            return
        self.emit("transcript", role="user", transcriptType="partial", transcript=text)
        if self.arbiter.state is TurnState.USER:
            self._read_ahead([*self.conversation.to_openai(), {"role": "user", "content": text}])

    def prepare_next(self) -> None:
        """A response has said all it will and is being heard: let the model read ahead
        what it is asked next. If results wait to be told by the model, their request,
        so the announcement starts soon after the floor frees; otherwise the history up
        to the caller's next words, so their turn is read from there on and not from
        an earlier place (the guidance before the caller's latest words moves)."""
        if not self._opened.is_set():
            return  # the opening prompt first: it is the one kept for the next call
        waiting = self._for_the_model()
        response = self._response
        if waiting:
            guidance = instructions(Plan(0, PlanKind.ANNOUNCE, announcements=waiting))
            self._read_ahead(self.conversation.to_openai(guidance), guidance=len(guidance))
        elif response is None or not (response.end_call_after or response.cut):
            self._read_ahead_turn()

    def _for_the_model(self) -> tuple[Announcement, ...]:
        """The announcements waiting that the model is to word (not fixed lines)."""
        return tuple(a for a in self.arbiter.pending if a.text is None)

    def _read_ahead_turn(self) -> None:
        """Let the model read the history up to the caller's next words."""
        self._read_ahead([*self.conversation.to_openai(), {"role": "user", "content": ""}])

    def _read_ahead(self, messages: list[dict[str, Any]], *, guidance: int = 0) -> None:
        """Let the model evaluate a request it is about to get, never with a tool-call
        block still open. The latest read-ahead wins: the model gives up an earlier one
        once a later request is made (see :meth:`LLM.prepare`)."""
        if not self.conversation.block_open:
            self.spawn(self.llm.prepare(self.llm_request(messages, guidance=guidance)))

    def send_text(self, text: str) -> None:
        """A typed user message (text calls): a whole user turn at once."""
        if not self.customer_muted:
            self.user_transcript(text)

    # -- events in: the speech output (SpeechListener) ---------------------------------

    def speech_started(self, utterance_id: int) -> None:
        self._greeted.set()
        if self._response is not None and self._response.tracker.owns(utterance_id):
            self.turns.audible(self._response.index)
            self._response.tracker.started(utterance_id)
            self._heard_plan = self._response.plan.id
            self.arbiter.audible()
        self.emit("speech-update", role="assistant", status="started")

    def speech_finished(self, utterance_id: int) -> None:
        text = None
        if self._response is not None and self._response.tracker.owns(utterance_id):
            text = self._response.tracker.text(utterance_id)
            self._response.tracker.finished(utterance_id)
        self.emit("speech-update", role="assistant", status="stopped")
        if text and text.strip():
            self._assistant_said(text.strip())

    def _assistant_said(self, text: str) -> None:
        self.emit("transcript", role="assistant", transcriptType="final", transcript=text)

    # -- events in: control ------------------------------------------------------------

    def say(self, content: str, *, end_call_after: bool = False, interrupt: bool = False) -> None:
        self._ensure_live()
        self._apply(self.arbiter.say(SayRequest(content, end_call_after), interrupt=interrupt))

    def add_message(self, role: Role, content: str, *, trigger_response: bool = False) -> None:
        """Add a message to the history; with ``trigger_response`` the assistant responds."""
        self._ensure_live()
        if role == "tool":  # a tool message needs a tool call to follow; keep it as a note
            role, content = "system", f"Tool message: {content}"
        self.conversation.add_note(Message(role, content))
        self._conversation_changed()
        if trigger_response:
            self._apply(self.arbiter.trigger())

    def set_muted(self, muted: bool) -> None:
        """Mute or unmute the assistant's audio; the conversation itself goes on."""
        self._ensure_live()
        self.output.muted = muted
        self.emit("status-update", status=self.state.value, muted=muted)

    def set_customer_muted(self, muted: bool) -> None:
        """Stop (or start again) hearing the customer: their audio and typed turns are
        ignored while muted."""
        self._ensure_live()
        self.customer_muted = muted
        self.emit("status-update", status=self.state.value, customerMuted=muted)

    def say_first_message(self) -> None:
        """Say the assistant's first message now (e.g. once a client starts recording)."""
        self._ensure_live()
        if self.assistant.first_message:
            self._apply(self.arbiter.say(SayRequest(self.assistant.first_message)))

    # -- events in: results ------------------------------------------------------------

    async def submit_result(self, result: ToolResult, source: ResultSource) -> Resolution:
        """Record a result in the ledger, then bring it into the conversation once."""
        live = not self._closing
        resolution = await self.ledger.resolve(
            self.call_id, result, source, call_live=live, delivering=live
        )
        record = resolution.record
        if not resolution.duplicate:
            await self._take(record, resolution.outcome, result)
        elif record.has_result and record.tool_call_id not in self._taken and live:
            # Recorded before, never brought in (its hand-off was lost): a retry repairs it.
            await self._take(record, Outcome.LATE if record.late else Outcome.ACCEPTED, result)
        return resolution

    def take_recorded_soon(self, tool_call_id: str) -> None:
        """Queue :meth:`take_recorded`: this call's hand-offs are taken in the order they
        came, without making other calls' hand-offs wait behind them."""
        if self._recorded is None:
            self._recorded = asyncio.Queue()
            self.spawn(self._take_recorded_forever())
        self._recorded.put_nowait(tool_call_id)

    async def _take_recorded_forever(self) -> None:
        assert self._recorded is not None
        while True:
            tool_call_id = await self._recorded.get()
            try:
                await self.take_recorded(tool_call_id)
            except BackchannelError as exc:
                log.warning("call %s: %s (%s)", self.call_id, exc.message, exc.code)

    async def take_recorded(self, tool_call_id: str) -> None:
        """Bring in a result or progress update that was recorded in the ledger
        elsewhere (another instance took it): once, however often this is called."""
        record = await self.ledger.get(self.call_id, tool_call_id)
        if record.has_result and tool_call_id not in self._taken:
            outcome = Outcome.LATE if record.late else Outcome.ACCEPTED
            await self._take(record, outcome, stored_result(record))
        elif not record.has_result and len(record.progress) > self._progress_taken.get(
            tool_call_id, 0
        ):
            last = record.progress[-1]
            update = ToolResult(
                tool_call_id, result=last.result, message=last.message, will_continue=True
            )
            await self._take(record, Outcome.PROGRESS, update)

    async def _take(self, record: ToolCallRecord, outcome: Outcome, result: ToolResult) -> None:
        if outcome is Outcome.PROGRESS:
            self._progress_taken[record.tool_call_id] = len(record.progress)
        else:
            self._taken.add(record.tool_call_id)
        if outcome is Outcome.PROGRESS:
            self.emit(
                "tool-call-progress",
                toolCallId=record.tool_call_id,
                name=record.name,
                result=result.result,
                message=result.message,
            )
            self._on_progress(record, result)
            return
        self.emit("tool-calls-result", toolCallResult=result_event(record))
        self.tools.settled(record.tool_call_id)
        waiter = self.tools.waiter(record.tool_call_id)
        if waiter is not None and not waiter.done() and outcome is Outcome.ACCEPTED:
            waiter.set_result(stored_result(record))
            if record.delivered_at is None:  # recorded elsewhere; the model gets it now
                await self.note(
                    functools.partial(
                        self.ledger.mark_delivered, self.call_id, record.tool_call_id
                    ),
                    "note a delivery",
                )
        elif record.state is not ToolCallState.CANCELLED:
            await self._deliver_in_background(record)

    # -- the turn loop's helpers -------------------------------------------------------

    def llm_request(self, messages: list[dict[str, Any]], *, guidance: int = 0) -> LLMRequest:
        """A request for this call's model: the messages (the last ``guidance`` of them
        for this request only), its tools and sampling."""
        model = self.assistant.model
        return LLMRequest(
            messages=messages,
            tools=self._schemas,
            model=model.model,
            temperature=model.temperature,
            max_tokens=model.max_tokens,
            guidance=guidance,
        )

    # -- internals: responses ----------------------------------------------------------

    def _apply(self, verdict: Verdict) -> None:
        if verdict is Verdict.START:
            plan = self.arbiter.next_plan()
            if plan is not None:
                index = self.turns.response_started()
                self._response = Response(self, plan, index=index)
                self._response_task = self.spawn(self._run_response(self._response), guard=False)
        elif verdict is Verdict.CUT:
            self._cut_response()

    def _cut_response(self, *, hold: float = 0.0) -> tuple[str, ...]:
        """Cut the current response; the sentences it stopped (the playing one whole).
        The assistant says nothing more for ``hold`` seconds."""
        response, task = self._response, self._response_task
        if response is None or task is None or response.cut:
            return ()
        response.cut = True
        cut = self.output.stop(hold=hold)
        # Said again after a wordless barge-in: only a response that had said all it
        # would, with no results riding on it (those go back in line themselves) and no
        # hang-up after it.
        plain = response.done_generating and not response.announcements
        stopped = tuple(response.tracker.remainder(cut)) if plain else ()
        if response.end_call_after:
            stopped = ()
        response.tracker.cut(cut)
        if cut is not None and cut.heard_chars and response.tracker.owns(cut.utterance_id):
            heard = response.tracker.text(cut.utterance_id)[: cut.heard_chars].strip()
            if heard:
                self._assistant_said(heard)
        task.cancel()
        return stopped

    def _conversation_changed(self) -> None:
        self.emit(
            "conversation-update",
            messages=self.conversation.to_vapi(),
            messagesOpenAIFormatted=self.conversation.to_openai(),
        )

    async def _watch_for_hang(self, response: Response) -> None:
        """``hang``: the assistant has not started answering in time."""
        await self.clock.sleep(HANG_SECONDS)
        if self._response is response and self._heard_plan != response.plan.id:
            self.emit("hang")

    async def _run_response(self, response: Response) -> None:
        failed = False
        watch = self.spawn(self._watch_for_hang(response))
        try:
            await response.run()
        except asyncio.CancelledError:
            if not response.cut:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception as exc:
            failed = response.failed = True
            log.exception("call %s: response %s failed", self.call_id, response.plan.id)
            error = exc if isinstance(exc, BackchannelError) else None
            self.emit(
                "error",
                error={
                    "code": error.code if error else "pipeline_error",
                    "message": error.message if error else "the assistant could not respond",
                },
            )
        watch.cancel()
        unspoken = response.close()
        if self._response is response:
            self._response = None
        self._conversation_changed()
        live = self._opened.is_set() and not self.ended.is_set()
        if response.cut and live and (self.arbiter.user_speaking or not self._for_the_model()):
            # The caller took the floor: their turn follows what was heard; the model
            # reads it ahead while they talk, before any words are transcribed. (Cut for
            # a result instead, the result's announcement is asked next.)
            self._read_ahead_turn()
        verdict = self.arbiter.finished(response.plan, unspoken)
        for a in response.announcements:
            if response.spoke(a):
                self.announced.append(a)
                if a.key == a.tool_call_id:
                    self._spoken.add(a.tool_call_id)
                    self.telemetry.spoken(a.tool_call_id)
                    await self.note(
                        functools.partial(self.ledger.mark_spoken, self.call_id, a.tool_call_id),
                        "note an announcement",
                    )
        if response.end_call_after and not response.cut:
            forwarded = self.transfer_to is not None
            self.request_end("assistant-forwarded-call" if forwarded else "assistant-ended-call")
        elif not failed:
            if response.plan.kind is not PlanKind.SAY:  # the model answered again
                self._failures = 0
            self._apply(verdict)
        else:
            # Never silence: the caller hears the fallback line, once per run of
            # failures (a model that stays down is not asked again and again).
            self._failures += 1
            line = self.assistant.model.fallback_message
            if self._failures == 1 and line and response.plan.kind is not PlanKind.SAY:
                self._apply(self.arbiter.say(SayRequest(line)))

    def _on_progress(self, record: ToolCallRecord, result: ToolResult) -> None:
        if self.tools.waiter(record.tool_call_id) is not None:
            if result.message and self._response is not None:
                self._response.speak_aside(result.message)
            return
        content = result.model_content() if result.result is not None else "(no details)"
        self.conversation.add_note(
            Message(
                "system",
                f"Progress from background tool {record.name} "
                f"(toolCallId {record.tool_call_id}): {content}",
            )
        )
        if result.message and record.delivery is not Delivery.SILENT:
            key = f"{record.tool_call_id}#progress{len(record.progress)}"
            self._apply_announcement(
                self.arbiter.result(
                    Announcement(
                        key,
                        record.tool_call_id,
                        record.name,
                        result.message,
                        interrupt=record.delivery is Delivery.INTERRUPT,
                    )
                )
            )

    async def _deliver_in_background(self, record: ToolCallRecord) -> None:
        late = (
            " It arrived after the tool had timed out."
            if record.state is ToolCallState.TIMED_OUT
            else ""
        )
        content = stored_result(record).model_content()
        if self._absorb(record, content):
            await self.delivered(record.tool_call_id, noted=record.delivered_at is not None)
            return
        self.conversation.add_note(result_note(record.name, record.tool_call_id, content + late))
        await self.delivered(record.tool_call_id, noted=record.delivered_at is not None)
        if record.delivery is Delivery.SILENT:
            if self._response is None and self._opened.is_set():
                self._read_ahead_turn()  # the model takes it in now, and says nothing
            return
        spec = self.specs.get(record.name)
        failed = record.error is not None
        fixed, hint = spec.spoken.after(not failed) if spec else (None, None)
        if not (record.message or fixed) and hint:  # ``role: system``: the model answers
            self.conversation.add_note(Message("system", hint))
        self.announce(record, record.message or fixed, failed=failed, content=content)

    def _absorb(self, record: ToolCallRecord, content: str) -> bool:
        """A result that lands before the response that called its tool has said
        anything after the call: that response answers from it (no placeholder line,
        no announcement later). Only for results the model is to speak about."""
        response, task = self._response, self._response_task
        if response is None or task is None or record.delivery is Delivery.SILENT:
            return False
        spec = self.specs.get(record.name)
        failed = record.error is not None
        fixed, hint = spec.spoken.after(not failed) if spec else (None, None)
        if record.message or fixed or hint or record.state is ToolCallState.TIMED_OUT:
            return False
        announcement = Announcement(
            key=record.tool_call_id,
            tool_call_id=record.tool_call_id,
            name=record.name,
            text=None,
            failed=failed,
            content=content,
        )
        if not response.absorb(announcement, content):
            return False
        if response.restarting:
            task.cancel()
        return True

    def announce(
        self,
        record: ToolCallRecord,
        text: str | None,
        *,
        failed: bool,
        key_suffix: str = "",
        content: str = "",
    ) -> None:
        announcement = Announcement(
            key=record.tool_call_id + key_suffix,
            tool_call_id=record.tool_call_id,
            name=record.name,
            text=text,
            failed=failed,
            interrupt=record.delivery is Delivery.INTERRUPT,
            content=content,
        )
        self._apply_announcement(self.arbiter.result(announcement))

    def _apply_announcement(self, verdict: Verdict) -> None:
        """Start an announcement, but give other open background calls a moment to join."""
        expecting = self.tools.expecting_background()
        if verdict is Verdict.START and expecting and self.engine.gather_seconds > 0:
            if self._gathering is None:
                self._gathering = self.spawn(self._gather_then_start())
            return
        if self._gathering is not None and not expecting:
            self._gathering.cancel()
            self._gathering = None
        response = self._response
        waits = verdict is Verdict.NOTHING and not self.arbiter.user_speaking
        if waits and response is not None and response.done_generating and not response.cut:
            # It waits for the response being heard: the model reads it ahead meanwhile
            # (not while the caller talks: their words are read ahead then).
            self.prepare_next()
        self._apply(verdict)

    async def _gather_then_start(self) -> None:
        try:
            await self.clock.sleep(self.engine.gather_seconds)
        finally:
            if self._gathering is asyncio.current_task():
                self._gathering = None
        self._apply(Verdict.START)

    # -- out ---------------------------------------------------------------------------

    def emit(self, type_: str, **data: Any) -> None:
        event = Event(type_, self.call_id, self.clock.wall(), data, call=self._call_object())
        self.telemetry.event(event)
        self.events.emit(event)

    def _turn_answered(self, latency: TurnLatency) -> None:
        self.latencies.append(latency)
        self.emit("turn-latency", **latency.to_event())

    async def delivered(self, tool_call_id: str, *, noted: bool = False) -> None:
        """A result is in the model's history: marked in the tool call's span, and noted
        in the ledger (once the store answers) unless it is already (``noted``)."""
        self.telemetry.in_conversation(tool_call_id)
        if not noted:
            await self.note(
                functools.partial(self.ledger.mark_delivered, self.call_id, tool_call_id),
                "note a delivery",
            )

    def _call_object(self) -> dict[str, Any] | None:
        """Vapi's ``call`` object for events: what the transport told (``details``),
        with the call's status and the time of this change."""
        if not self.details:
            return None
        return {
            **self.details,
            "status": self.state.value,
            "updatedAt": iso_time(self.clock.wall()),
        }

    def _ensure_live(self) -> None:
        if self._closing:
            raise CallEnded(f"call {self.call_id!r} has ended", code="call_ended")
