"""Gemini Live as the call's :class:`~backchannel.llm.base.LLM`.

As with OpenAI Realtime (:mod:`.model`), the call stays what it is: its arbiter decides
when the model speaks, tools are recorded in the ledger and routed as always.
:class:`LiveLLM` turns each ``stream`` into one generation of the Live session:

* **The caller's turns.** With ``turnDetection: server_vad`` (the default) the caller's
  audio goes to the session, whose activity detection and transcription find the turns
  (:mod:`.live_turns`; never cutting an answer itself: ``NO_INTERRUPTION``; the call
  weighs speech over the answer). Live answers a turn on its own as soon as it ends:
  that answer is held until the call asks for a response, and is the response if it is
  the caller's reply; if the turn was none ("mm-hmm") it is dropped, and if a result is
  to be told, a new generation is asked for instead. With ``backchannel`` the call's
  own VAD, turn model and recogniser find the turns, the session's activity detection
  is off, and each turn is written into it in words.
* **The history, mirrored.** What the session lacks is written before the generation,
  in order: user turns and fixed lines (``clientContent`` with ``turnComplete: false``),
  tool placeholders and results (``toolResponse`` under the model's call id,
  ``scheduling: SILENT``; a placeholder with ``willContinue: true``, so the real result
  can follow it). Every tool is declared ``NON_BLOCKING``: the model keeps talking while
  it runs.
* **What starts the generation** is the last thing the session lacks: a tool's result
  goes with ``scheduling: WHEN_IDLE``, or ``INTERRUPT`` when a generation the call gave
  up (a barge-in, an ``interrupt`` result) is still being written; the caller's turn goes
  with ``turnComplete: true``. The request's guidance (the instruction to tell the caller
  about a result) rides with the caller's turn; a result's own response needs none.
* **One generation at a time.** A generation the call gave up (a barge-in, an
  ``interrupt`` result) may still be being written: what starts the next one interrupts
  it (any ``clientContent`` does, as does ``INTERRUPT``), and what it still sends, up to
  its ``interrupted`` / ``turnComplete``, is dropped; a tool it still calls is told it
  did not run. With ``backchannel`` turn detection nothing else starts a generation:
  the session's activity detection is off and every other tool response is ``SILENT``.
* **Faults** as with Realtime: a session not open in ``connect_seconds``, or a generation
  silent for ``silence_seconds``, fails the response (the caller hears the fallback
  line); a session lost mid-answer fails that answer. A lost session is resumed with its
  handle (the server keeps the conversation and the pending calls); one that cannot be
  resumed starts afresh and the whole history is written into it, the calls as
  ``functionCall`` parts and their results as ``functionResponse`` parts.

Live has no way to cut the session's copy of an answer to what was heard: after a
barge-in the model's history holds its whole answer, the call's the part that was heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from ..conversation import noted_result
from ..errors import ProviderError
from ..llm.base import LLMChunk, LLMRequest, TextDelta, ToolCallRequest, parse_arguments
from ..tool_runs import PLACEHOLDER
from ..voice.audio import Samples
from .live_link import INPUT_RATE, LiveLink
from .live_setup import live_setup, speech_config
from .live_turns import CallerTurns
from .mirror import Mirror, history, opened, spoken_turn
from .model import CONNECT_SECONDS, SESSION_REOPENED, SILENCE_SECONDS
from .voice import ModelVoice

log = logging.getLogger("backchannel.realtime")

#: How long a response that is to tell a result waits for the server's own answer to the
#: caller's turn to start (to cut it) before it goes on without.
OWN_ANSWER_WAIT = 5.0
#: What a call the model made in an answer nobody heard is told.
NOT_RUN = {"error": "not run: the caller did not hear this answer"}


class LiveLLM:
    one_ask_per_response = False

    def __init__(
        self,
        link: LiveLink,
        voice: ModelVoice | None = None,
        *,
        connect_seconds: float = CONNECT_SECONDS,
        silence_seconds: float = SILENCE_SECONDS,
        turn_detection: str = "server_vad",
    ) -> None:
        self.link = link
        #: ``backchannel``: the call's own input side hears the caller and the session
        #: gets words; else the server hears the caller's audio.
        self.turn_detection = turn_detection
        self.connect_seconds = connect_seconds
        self.silence_seconds = silence_seconds
        self._voice = voice or ModelVoice()
        link.on_message = self._on_message
        link.on_reconnect = self._reconnected
        link.idle = lambda: self._idle.is_set()
        #: Told of input events; the call's own input side hears the caller here.
        self.listener: Callable[[dict[str, Any]], None] | None = None
        #: The conversation as the session has it.
        self.mirror = Mirror()
        #: Calls the session knows only as history we wrote (a session started afresh):
        #: their results go in as content, not as answers to the session's own calls.
        self._written_calls: set[str] = set()
        self._cancelled: set[str] = set()
        self._names: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._stream: asyncio.Queue[tuple[Any, ...]] | None = None
        #: Drop what comes before the end of a generation given up (an ``INTERRUPT``).
        self._skipping = False
        #: An ``interrupted`` came; a ``turnComplete`` right after it is the same end.
        self._stale_end = False
        #: The generation in progress said ``generationComplete`` (its response ended).
        self._generated = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        #: The voice the model speaks in (its default if ``None``).
        self.voice_name: str | None = None
        #: The caller's turns as the server's VAD hears them.
        self.turns = CallerTurns(self._tell)
        #: The answer the server started on its own at a turn's end, until the call
        #: takes it.
        self._unclaimed: asyncio.Queue[tuple[Any, ...]] | None = None
        self._answering = asyncio.Event()
        #: Answers the server will give to turns that were none, to drop.
        self._unwanted = 0

    @property
    def ours(self) -> bool:
        """Whether the call's own input side finds the caller's turns."""
        return self.turn_detection == "backchannel"

    #: The rate Live takes the caller's audio at.
    input_rate = INPUT_RATE

    def hear(self, samples: Samples) -> None:
        """The caller's audio at ``input_rate``, for the server's VAD."""
        self.link.post_audio(samples.astype("<i2").tobytes())
        self.turns.hear(samples)

    @property
    def voice(self) -> ModelVoice:
        return self._voice

    @voice.setter
    def voice(self, voice: ModelVoice) -> None:
        self._voice = voice

    def not_a_turn(self, item_id: str) -> None:
        """A turn the server ended is not the caller's after all ("mm-hmm" over the
        answer): the answer the server gives it is not played."""
        self.turns.spoken.pop(item_id, None)
        if self._unclaimed is not None:
            self._drop_answer()
        else:
            self._unwanted += 1  # it comes once the answer in progress is done

    # -- LLM ---------------------------------------------------------------------------

    async def prepare(self, request: LLMRequest) -> None:
        """Mirror the history now: a silent result reaches the model at once. Not the
        results an announcement is about to tell (a request with guidance): their
        response starts the generation (``WHEN_IDLE``)."""
        self._configure(request)
        await self._connected()
        if self._lock.locked() or request.guidance:
            return  # the response in progress mirrors it
        async with self._lock:
            messages = list(request.messages)
            if messages and messages[-1].get("role") == "user":
                messages.pop()  # the caller's next words, read ahead: not said yet
            for message in self._missing(history(messages, transient=request.guidance)):
                self._write(message)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        async with self._lock:
            self._configure(request)
            await self._connected()
            messages = history(request.messages, transient=request.guidance)
            missing = self._missing(messages)
            last = messages[-1] if messages else {}
            spoken = last.get("role") == "user" and last not in missing
            attach = spoken and not request.guidance and all(map(self._answer, missing))
            if spoken and not self.ours and not attach:
                # The server answers the turn on its own, knowing nothing of what is to
                # be told: once it starts, it is cut, not taken for this response.
                await self._answer_started(min(self.silence_seconds, OWN_ANSWER_WAIT))
            if attach:
                # The server's VAD ended the caller's turn and the server answers it on
                # its own: that answer is this response (with a result to tell, a new
                # one is asked for instead).
                for message in missing:
                    self._write(message)  # results, silently: the answer goes on
                queue = self._stream = await self._servers_answer()
            else:
                self._drop_answer()  # not what the call asks for
                trigger = _trigger(missing)
                for message in missing:
                    self._write(message)
                guidance = request.messages[len(request.messages) - request.guidance :]
                queue = self._stream = asyncio.Queue()
                # A generation given up is still being written: what starts this one
                # interrupts it (Live ends it with ``interrupted``), and what it still
                # sends is dropped.
                self._skipping = not self._idle.is_set()
                self._idle.clear()
                self._start(trigger, guidance, interrupt=self._skipping)
            item, began, finished, heard = f"live_{next(self._ids)}", False, False, ""
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.silence_seconds):
                            event = await queue.get()
                    except TimeoutError:
                        # Whatever was asked for never came: nothing is taken as running.
                        self._idle.set()
                        self._skipping = self._generated = False
                        raise ProviderError(
                            "the live model stopped answering", code="realtime_timeout"
                        ) from None
                    kind = event[0]
                    if kind in ("audio", "text") and not began:
                        began = True
                        self.voice.begin(item)
                    if kind == "audio":
                        self.voice.add_audio(item, event[1])
                    elif kind == "text":
                        heard += event[1]
                        self.voice.add_text(item, event[1])
                        yield TextDelta(event[1])
                    elif kind == "call":
                        self.mirror.called.add(event[1].id)
                        yield event[1]
                    elif kind == "end":
                        finished = True
                        return
                    elif kind == "lost":
                        finished = True
                        raise ProviderError(
                            "the live session was lost",
                            code="realtime_error",
                            upstream="session_lost",
                        )
            finally:
                self._stream = None
                self.mirror.said.append(heard)  # the session has it, whole or cut
                if began:
                    self.voice.finish(item)
                    if not finished:
                        self.voice.abandon(item)

    def _configure(self, request: LLMRequest) -> None:
        """The session's set-up, from the call's first request (its system prompt,
        tools and temperature): the link connects with it."""
        if self.link.setup is not None:
            return
        first = request.messages[0] if request.messages else {}
        prompt = str(first.get("content") or "") if first.get("role") == "system" else ""
        self.link.configure(
            live_setup(
                prompt,
                request.tools,
                server_vad=not self.ours,
                voice=self.voice_name,
                temperature=request.temperature,
            )
        )

    def speak_as(self, voice: str) -> None:
        """The model's voice (a Live voice: ``Kore``, ``Puck``…); set before the session
        opens (Live takes it only then)."""
        self.voice_name = voice
        if self.link.setup is not None:  # configured already, not yet connected
            self.link.setup["speech_config"] = speech_config(voice)

    async def _connected(self) -> None:
        await opened(self.link.ready, self.connect_seconds, self.link.url)

    # -- writing into the session ------------------------------------------------------

    def _missing(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What the session lacks of ``history``, in order."""
        for message in history:
            for call in message.get("tool_calls") or ():
                self._names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
        return self.mirror.lacks(history, partial(spoken_turn, self.turns.spoken))

    def _write(self, message: Mapping[str, Any]) -> None:
        """Add one message to the session's context without a generation."""
        if (answer := self._answer(message)) is not None:
            call_id, response, more = answer
            if self._as_content(message):
                self._content([_function_response(call_id, self._names, response)], "user")
            elif call_id in self._cancelled:
                log.info("gemini live: call %s was cancelled by the model; result kept", call_id)
            else:
                self._respond(call_id, response, "SILENT", more=more)
            return
        role = "model" if message.get("role") == "assistant" else "user"
        parts: list[dict[str, Any]] = []
        if message.get("content"):
            parts.append({"text": str(message["content"])})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = parse_arguments(function.get("arguments"))
            parts.append(
                {
                    "function_call": {
                        "id": call["id"],
                        "name": function.get("name"),
                        "args": arguments,
                    }
                }
            )
            self._written_calls.add(str(call["id"]))
        if parts:
            self._content(parts, role)

    def _start(
        self,
        trigger: Mapping[str, Any] | None,
        guidance: Sequence[Mapping[str, Any]],
        *,
        interrupt: bool,
    ) -> None:
        """Start the generation: the result, or the caller's turn (with the guidance)."""
        answer = self._answer(trigger) if trigger is not None else None
        if answer is not None and trigger is not None and not self._as_content(trigger):
            call_id, response, more = answer
            if call_id not in self._cancelled:
                self._respond(
                    call_id, response, "INTERRUPT" if interrupt else "WHEN_IDLE", more=more
                )
                return
        parts: list[dict[str, Any]] = []
        if answer is not None:
            parts.append(_function_response(answer[0], self._names, answer[1]))
        elif trigger is not None and trigger.get("content"):
            parts.append({"text": str(trigger["content"])})
        parts += [{"text": str(m.get("content") or "")} for m in guidance if m.get("content")]
        self.link.post(
            "clientContent",
            turns=[{"role": "user", "parts": parts}] if parts else [],
            turn_complete=True,
        )

    def _answer(self, message: Mapping[str, Any]) -> tuple[str, dict[str, Any], bool] | None:
        """A tool's placeholder or result (or a result's note), as a function response:
        its call id, the response, and whether more will follow."""
        if (noted := noted_result(message)) is not None:
            return noted[0], {"output": noted[1]}, False
        if message.get("role") == "tool":
            content = str(message.get("content") or "")
            return str(message.get("tool_call_id")), {"output": content}, content == PLACEHOLDER
        return None

    def _as_content(self, message: Mapping[str, Any]) -> bool:
        """A result for a call the session knows only as written history."""
        answer = self._answer(message)
        return answer is not None and answer[0] in self._written_calls

    def _respond(
        self, call_id: str, response: dict[str, Any], scheduling: str, *, more: bool
    ) -> None:
        function_response: dict[str, Any] = {
            "id": call_id,
            "name": self._names.get(call_id, ""),
            "response": response,
            "scheduling": scheduling,
        }
        if more:
            function_response["will_continue"] = True
        self.link.post("toolResponse", function_responses=[function_response])

    def _content(self, parts: list[dict[str, Any]], role: str) -> None:
        self.link.post("clientContent", turns=[{"role": role, "parts": parts}], turn_complete=False)

    def _reconnected(self, resumed: bool) -> None:
        """A lost session: resumed, the server has the conversation; else it is written
        into the new one. Either way the answer in progress is gone."""
        # Calls made on the lost connection: a resumed session may not take answers to
        # them as such, so their results go in as content.
        self._written_calls |= set(self._names)
        if not resumed:
            self._cancelled.clear()
            for message in self._missing(self.mirror.forget()):
                self._write(message)
        if self._stream is not None:
            self._stream.put_nowait(("lost",))
        self.voice.abandon_all()
        self._idle.set()
        self._skipping = self._stale_end = False
        self.turns.reset(resumed=resumed)
        self._drop_answer()
        self._tell({"type": SESSION_REOPENED})  # turns it ended are none: not counted
        self._unwanted = 0

    # -- messages from the server --------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        content = message.server_content
        heard = content.input_transcription if content is not None else None
        if heard is not None and heard.text:
            self.turns.words(heard.text)
        if heard is not None and heard.finished:
            self.turns.finished()
        if self._unprompted(message):
            self._answers()
        if message.tool_call_cancellation is not None:
            self._cancelled.update(message.tool_call_cancellation.ids or ())
        if message.tool_call is not None:
            for call in message.tool_call.function_calls or ():
                request = ToolCallRequest(str(call.id), str(call.name), dict(call.args or {}))
                self._names[request.id] = request.name
                self._to_stream(("call", request))
        if content is None:
            return
        for part in (content.model_turn.parts or ()) if content.model_turn else ():
            data = part.inline_data.data if part.inline_data is not None else None
            if data:
                self._to_stream(("audio", np.frombuffer(data[: len(data) // 2 * 2], "<i2")))
        if content.output_transcription is not None and content.output_transcription.text:
            self._to_stream(("text", content.output_transcription.text))
        if content.generation_complete or content.turn_complete:
            self.turns.generation_over()
        if content.generation_complete and not self._skipping and not self._generated:
            # The answer is whole; the server waits for it to be played before its
            # ``turnComplete``, and until then another generation would cut it.
            self._generated = True
            self._to_stream(("end",))
        if content.interrupted:
            # Its ``turnComplete`` may follow: that is this generation's end, not the next's.
            self._stale_end = True
            self._end_generation()
        elif content.turn_complete:
            if self._stale_end:
                self._stale_end = False
            else:
                self._end_generation()

    def _end_generation(self) -> None:
        generated, self._generated = self._generated, False
        if self._skipping:
            self._skipping = False  # the generation given up is over; ours goes on
        else:
            self._idle.set()
            if not generated:
                self._to_stream(("end",))

    async def _servers_answer(self) -> asyncio.Queue[tuple[Any, ...]]:
        """The answer the server starts on its own for the caller's turn."""
        await self._answer_started(self.silence_seconds)
        answer, self._unclaimed = self._unclaimed, None
        if answer is None:
            raise ProviderError("the live model did not answer the caller", code="realtime_timeout")
        return answer

    async def _answer_started(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the server to start its own answer to a turn."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._unclaimed is None:
                    self._answering.clear()
                    await self._answering.wait()

    def _drop_answer(self) -> None:
        """The answer the server started on its own is not played; the calls it made
        are told they did not run."""
        answer, self._unclaimed = self._unclaimed, None
        while answer is not None and not answer.empty():
            event = answer.get_nowait()
            if event[0] == "call":
                self._respond(event[1].id, dict(NOT_RUN), "SILENT", more=False)

    def _unprompted(self, message: Any) -> bool:
        """Whether the server starts an answer nobody asked for: its VAD ended a turn."""
        content = message.server_content
        # A transcript alone is not: it may come late, after its answer's end.
        output = message.tool_call is not None or (
            content is not None and content.model_turn is not None
        )
        return (
            output
            and not self.ours
            and self._stream is None
            and self._unclaimed is None
            and not self._skipping
            and self._idle.is_set()
        )

    def _answers(self) -> None:
        """The server starts an answer on its own (its VAD ended a turn): it waits for
        the call to ask for it, or is dropped if the turn was none."""
        self.turns.answered()
        self._idle.clear()
        if self._unwanted:
            self._unwanted -= 1
            return
        self._unclaimed = asyncio.Queue()
        self._answering.set()

    def _tell(self, event: dict[str, Any]) -> None:
        if self.listener is not None:
            self.listener(event)

    def _to_stream(self, event: tuple[Any, ...]) -> None:
        target = self._stream if self._stream is not None else self._unclaimed
        if target is not None and not self._skipping:
            if event[0] != "end":
                self._stale_end = False  # the next generation has begun
            target.put_nowait(event)
        elif event[0] == "call":  # an answer nobody hears: the call does not run
            self._respond(event[1].id, dict(NOT_RUN), "SILENT", more=False)


def _trigger(missing: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Take out of what the session lacks the message that starts the generation: the
    caller's latest turn (results that came with it go in silently), else the last
    result."""
    users = [i for i, m in enumerate(missing) if m.get("role") == "user"]
    if users:
        return missing.pop(users[-1])
    if missing and (missing[-1].get("role") == "tool" or noted_result(missing[-1])):
        return missing.pop()
    return None


def _function_response(
    call_id: str, names: Mapping[str, str], response: dict[str, Any]
) -> dict[str, Any]:
    return {
        "function_response": {"id": call_id, "name": names.get(call_id, ""), "response": response}
    }
