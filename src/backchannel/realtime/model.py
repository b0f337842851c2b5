"""A speech-to-speech model (OpenAI Realtime) as the call's :class:`~backchannel.llm.base.LLM`.

The call keeps working as it does with the pipeline: its arbiter decides when a response
starts, the response streams the model's words and tool calls, tools are recorded in the
ledger and routed as always. :class:`RealtimeLLM` turns each ``stream`` into one Realtime
response:

* **The history, mirrored.** What the call's history has that the session does not (a
  typed turn, a tool's placeholder or result as ``function_call_output``, a background
  result's note, a fixed line that was said) is added with ``conversation.item.create``
  before the response. What the session already has is not added again: the caller's
  spoken turns (committed by the server's VAD, matched by their transcript), the model's
  own answers and calls, and an answer cut to what was heard.
* **One response at a time.** ``response.create`` is sent only once the previous
  response is done (a cancelled one included), so the server never answers
  ``conversation_already_has_active_response``. Each carries an ``event_id``: only an
  error that names it fails the response.
* **The request's guidance** (the instruction to tell the caller about a result) is an
  item of its own for that response, deleted once it is done.
* **Cut short** (barge-in, an ``interrupt`` result): ``response.cancel`` if it is still
  being written (the calls it made, none of which ran, deleted), and the answer's audio
  truncated to what was heard, so the model's history is what the caller got.
* **Faults.** A session not open in ``connect_seconds``, or a response silent for
  ``silence_seconds``, fails the response (the call says its fallback line); a session
  lost mid-answer fails that answer, and the next one runs on the new session.

The model's audio goes to :class:`~backchannel.realtime.voice.ModelVoice`, which the
call's output plays sentence by sentence as if it were speech synthesis.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from ..conversation import noted_result
from ..errors import ProviderError
from ..llm.base import LLMChunk, LLMRequest, TextDelta, ToolCallRequest
from ..voice.audio import Samples
from .link import CONFIGURE_EVENT, RealtimeLink, error_of, server_error, session_config
from .mirror import UNHEARD, Mirror, history, opened, spoken_turn
from .voice import MODEL_RATE, ModelVoice

log = logging.getLogger("backchannel.realtime")

#: A response waits this long for the session to open, then fails (the caller hears
#: the assistant's fallback line, not silence).
CONNECT_SECONDS = 10.0
#: A response with no event from the server for this long has failed.
SILENCE_SECONDS = 30.0
_AUDIO_DELTA = frozenset({"response.output_audio.delta", "response.audio.delta"})
_TRANSCRIPT_DELTA = frozenset(
    {"response.output_audio_transcript.delta", "response.audio_transcript.delta"}
)
_TRANSCRIPT_DONE = frozenset(
    {"response.output_audio_transcript.done", "response.audio_transcript.done"}
)
_BUSY = "conversation_already_has_active_response"
#: Told to the caller's side when a new session replaced a dropped one.
SESSION_REOPENED = "backchannel.session_reopened"
_AUDIO_DONE = frozenset({"response.output_audio.done", "response.audio.done"})


class RealtimeLLM:
    one_ask_per_response = False

    def __init__(
        self,
        link: RealtimeLink,
        voice: ModelVoice | None = None,
        *,
        connect_seconds: float = CONNECT_SECONDS,
        silence_seconds: float = SILENCE_SECONDS,
        turn_detection: str = "server_vad",
    ) -> None:
        self.link = link
        #: ``backchannel``: the call's own VAD and recogniser find the caller's turns,
        #: written into the session as words; else the server's VAD.
        self.turn_detection = turn_detection
        #: The voice the model speaks in (its default if ``None``).
        self.voice_name: str | None = None
        link.session = self._session("", ())  # until the first request: no answers
        self._truncated: set[str] = set()
        self.connect_seconds = connect_seconds
        self.silence_seconds = silence_seconds
        self._voice = voice or ModelVoice()
        self._voice.on_cut = self._truncate
        self._configured = False
        link.on_event = self._on_event
        link.on_reconnect = self._reconnected
        #: The caller's side of the session (VAD, transcripts), told of input events.
        self.listener: Callable[[dict[str, Any]], None] | None = None
        #: The conversation as the session has it.
        self.mirror = Mirror()
        #: Caller turns the server's VAD committed (item id → transcript, once it
        #: comes), in order, not yet matched to a history message.
        self._spoken: dict[str, str | None] = {}
        self._ids = itertools.count(1)
        self._stream: asyncio.Queue[dict[str, Any]] | None = None
        #: The ``event_id`` of the ``response.create`` in flight: an error naming it
        #: is that response's; any other error is logged, not a response's failure.
        self._asked: str | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()

    #: The rate the session takes the caller's audio at (``audio/pcm``).
    input_rate = MODEL_RATE

    def hear(self, samples: Samples) -> None:
        """The caller's audio at ``input_rate``, appended to the session's input."""
        audio = base64.b64encode(samples.astype("<i2").tobytes()).decode()
        self.link.post({"type": "input_audio_buffer.append", "audio": audio})

    @property
    def voice(self) -> ModelVoice:
        """Where the model's audio goes; the call's output plays it."""
        return self._voice

    @voice.setter
    def voice(self, voice: ModelVoice) -> None:
        self._voice = voice
        voice.on_cut = self._truncate

    def _truncate(self, item_id: str, heard_ms: int) -> None:
        """The caller heard only the start of an answer: so does the model's history
        (once per answer: the first cut is where the caller stopped hearing it)."""
        if item_id in self._truncated:
            return
        self._truncated.add(item_id)
        self.link.post(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": heard_ms,
            }
        )

    # -- LLM ---------------------------------------------------------------------------

    async def prepare(self, request: LLMRequest) -> None:
        """Mirror the history now (a silent result reaches the model at once)."""
        self._configure(request)
        await self._connected()
        if self._lock.locked():
            return  # the response in progress mirrors it
        async with self._lock:
            messages = list(request.messages)
            if messages and messages[-1].get("role") == "user":
                messages.pop()  # the caller's next words, read ahead: not said yet
            self._write_history(history(messages, transient=request.guidance))

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        async with self._lock:
            self._configure(request)
            await self._connected()
            await self._previous_done()
            self._write_history(history(request.messages, transient=request.guidance))
            extra = request.messages[len(request.messages) - request.guidance :]
            guidance = [self._create(_item(m)) for m in extra]
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self._stream = queue
            self._idle.clear()
            self._asked = self._event_id()
            self.link.post({"type": "response.create", "event_id": self._asked})
            finished, refused, audio_item, response_id = False, False, None, None
            calls: list[str] = []  # the function-call items of this response
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.silence_seconds):
                            event = await queue.get()
                    except TimeoutError:
                        self._idle.set()  # cancelled below; the next one need not wait
                        raise ProviderError(
                            "the realtime model stopped answering", code="realtime_timeout"
                        ) from None
                    kind = event["type"]
                    if kind == "response.created":
                        response_id = _field(event, "response", "id")
                    elif kind == "response.output_item.added":
                        item = event.get("item")
                        if isinstance(item, dict) and item.get("type") == "message":
                            audio_item = str(item.get("id"))
                            self.voice.begin(audio_item)
                    elif kind in _AUDIO_DELTA:
                        self.voice.add_audio(str(event.get("item_id")), _pcm(event.get("delta")))
                    elif kind in _TRANSCRIPT_DELTA:
                        delta = str(event.get("delta") or "")
                        self.voice.add_text(str(event.get("item_id")), delta)
                        if delta:
                            yield TextDelta(delta)
                    elif kind in _AUDIO_DONE:
                        self.voice.finish(str(event.get("item_id")))
                    elif kind in _TRANSCRIPT_DONE:
                        self.mirror.said.append(str(event.get("transcript") or ""))
                    elif kind == "response.function_call_arguments.done":
                        calls.append(str(event.get("item_id")))
                        call = _call(event)
                        self.mirror.called.add(call.id)
                        yield call
                    elif kind == "response.done":
                        done_id = _field(event, "response", "id")
                        if response_id is not None and done_id not in (None, response_id):
                            continue  # an earlier response's end, late
                        finished = True
                        if _field(event, "response", "status") == "failed":
                            raise ProviderError("the realtime model failed to answer")
                        return
                    elif kind == "error":
                        # Refused (no response was made), or gone with the session:
                        # either way there is nothing to cancel.
                        refused = response_id is None and _code(event) != _BUSY
                        finished = True
                        raise server_error(event)
            finally:
                self._stream = self._asked = None
                if refused:
                    self._idle.set()  # no response was made
                elif not finished:  # cut short while it is still being written
                    self.link.post({"type": "response.cancel", "event_id": self._event_id()})
                    # What the caller did not hear is not the model's either: its answer
                    # cut there, the calls it was making gone (none of them ran).
                    for item_id in calls:
                        self.link.post({"type": "conversation.item.delete", "item_id": item_id})
                    if audio_item is not None:
                        self._truncate(audio_item, self.voice.played_ms(audio_item))
                if audio_item is not None:
                    self.voice.finish(audio_item)
                    if not finished:
                        self.voice.abandon(audio_item)
                for item_id in guidance:
                    self.link.post({"type": "conversation.item.delete", "item_id": item_id})

    def _configure(self, request: LLMRequest) -> None:
        """The session's instructions (the system prompt) and tools, from the call's
        first request; kept for every session the link opens."""
        if self._configured:
            return
        self._configured = True
        first = request.messages[0] if request.messages else {}
        prompt = str(first.get("content") or "") if first.get("role") == "system" else ""
        self.link.session = self._session(prompt, request.tools)
        self.link.post(
            {"type": "session.update", "session": self.link.session, "event_id": CONFIGURE_EVENT}
        )

    @property
    def ours(self) -> bool:
        """Whether the call's own VAD finds the caller's turns (not the server's)."""
        return self.turn_detection == "backchannel"

    def _session(self, prompt: str, tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        detection = None if self.ours else {"type": self.turn_detection}
        return session_config(
            prompt,
            tools,
            voice=self.voice_name,
            turn_detection=detection,
            transcribe=not self.ours,
        )

    def speak_as(self, voice: str) -> None:
        """The model's voice (an OpenAI voice: ``marin``, ``alloy``…); set before the
        session opens (a session keeps the voice it first spoke in)."""
        self.voice_name = voice
        self.link.session["audio"]["output"]["voice"] = voice

    async def _previous_done(self) -> None:
        """A cancelled response ends before the next starts; one the server never ends
        is given up after ``silence_seconds``."""
        try:
            async with asyncio.timeout(self.silence_seconds):
                await self._idle.wait()
        except TimeoutError:
            log.warning("realtime: a cancelled response never ended; going on")
            self._idle.set()

    async def _connected(self) -> None:
        await opened(self.link.ready, self.connect_seconds, self.link.url)

    # -- the history -------------------------------------------------------------------

    def _write_history(self, history: list[dict[str, Any]]) -> None:
        """Add what the session lacks, in order."""
        for message in self.mirror.lacks(history, partial(spoken_turn, self._spoken)):
            for item in _items(message):
                self._create(item)

    def _event_id(self) -> str:
        return f"bc_event_{next(self._ids)}"

    def _create(self, item: dict[str, Any]) -> str:
        item_id = f"bc_{next(self._ids)}"
        self.link.post({"type": "conversation.item.create", "item": {"id": item_id, **item}})
        return item_id

    def _reconnected(self) -> None:
        """A new session has nothing: write the whole history into it again."""
        self._spoken.clear()
        self._write_history(self.mirror.forget())
        if self._stream is not None:  # the response in progress is gone with the session
            self._stream.put_nowait(
                {"type": "error", "error": {"code": "session_lost", "event_id": self._asked}}
            )
        self.voice.abandon_all()
        self._idle.set()
        if self.listener is not None:
            self.listener({"type": SESSION_REOPENED})

    # -- events ------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind.startswith("input_audio_buffer.") or kind.startswith(
            "conversation.item.input_audio_transcription."
        ):
            item_id = str(event.get("item_id"))
            if kind == "input_audio_buffer.committed":
                self._spoken[item_id] = None
            elif kind.endswith("transcription.completed") and item_id in self._spoken:
                self._spoken[item_id] = str(event.get("transcript") or "").strip()
            elif kind.endswith("transcription.failed") and item_id in self._spoken:
                self._spoken[item_id] = UNHEARD  # the model has the audio all the same
            if self.listener is not None:
                self.listener(event)
            return
        if kind == "response.done":
            self._idle.set()  # the stream, if any, finishes its audio
        if kind == "error":
            about = error_of(event).get("event_id")
            if about == CONFIGURE_EVENT:
                log.error("realtime: the session refused its configuration: %s", error_of(event))
                return
            if not (about == self._asked or _code(event) == _BUSY):
                return  # not about the response in progress; logged by the link
        if self._stream is not None and (kind.startswith("response.") or kind == "error"):
            self._stream.put_nowait(event)

    def not_a_turn(self, item_id: str) -> None:
        """A turn the server committed is not the caller's turn after all (an
        acknowledgement over the answer, or no words): it leaves the session."""
        if item_id in self._spoken:
            del self._spoken[item_id]
            self.link.post({"type": "conversation.item.delete", "item_id": item_id})


def _field(event: Mapping[str, Any], outer: str, inner: str) -> Any:
    """``event[outer][inner]``, or ``None`` when the server sent another shape."""
    value = event.get(outer)
    return value.get(inner) if isinstance(value, dict) else None


def _code(event: Mapping[str, Any]) -> Any:
    return error_of(event).get("code")


def _items(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = []
    if message.get("content") or message.get("role") != "assistant":
        items.append(_item(message))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "call_id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments") or "{}",
            }
        )
    return items


def _item(message: Mapping[str, Any]) -> dict[str, Any]:
    role, content = message.get("role"), str(message.get("content") or "")
    if (noted := noted_result(message)) is not None:  # a result, under its call id
        return {"type": "function_call_output", "call_id": noted[0], "output": noted[1]}
    if role == "tool":
        return {
            "type": "function_call_output",
            "call_id": message.get("tool_call_id"),
            "output": content,
        }
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": content}]}


def _call(event: Mapping[str, Any]) -> ToolCallRequest:
    try:
        arguments = json.loads(event.get("arguments") or "{}")
    except ValueError:
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {}
    return ToolCallRequest(str(event.get("call_id")), str(event.get("name")), arguments)


def _pcm(delta: Any) -> Any:
    try:
        raw = base64.b64decode(str(delta or ""))
    except ValueError:
        return np.zeros(0, np.int16)
    return np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.int16)
