"""A Realtime server on loopback that speaks OpenAI's Realtime protocol (GA), for tests.

It follows the public reference: ``session.created`` on connect, ``session.update`` →
``session.updated``, ``input_audio_buffer.append`` with server VAD (an energy detector
here) reporting ``speech_started`` / ``speech_stopped`` / ``committed`` and the turn's
transcript, ``conversation.item.create`` / ``delete`` / ``truncate``, ``response.create``
streaming audio (a tone, PCM16 at 24 kHz) with its transcript and function calls, and
``response.cancel``. Like the real server it refuses a second ``response.create`` while
one is active (``conversation_already_has_active_response``) and a cancel with nothing
active (``response_cancel_not_active``); the test reads both off ``errors``.

What the model says is scripted: ``respond(items)`` gets the conversation's items and
returns the response's output, a list of ``("say", text)`` and ``("call", name, args)``.
Transcripts of the caller's turns come from ``transcripts`` in order; a ``None`` there
fails that turn's transcription (``conversation.item.input_audio_transcription.failed``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

RATE = 24_000
Output = list[tuple[Any, ...]]
#: Seconds of tone per character said: about 14 characters a second, as speech.
SECONDS_PER_CHAR = 1 / 14
SILENCE_MS = 500  # server_vad's default silence_duration_ms


@dataclass
class FakeRealtime:
    respond: Callable[[list[dict[str, Any]]], Output]
    transcripts: list[str | None] = field(default_factory=list)
    port: int = 0
    #: Raw frames sent after ``session.created`` (garbage, for the client to survive).
    preamble: list[str] = field(default_factory=list)
    #: Responses that start and then say nothing (a stuck model), counted down.
    stall: int = 0
    #: Seconds between audio deltas of 100 ms: a model writes faster than real time.
    pace: float = 0.01
    #: Every client event, in order, and every error sent back.
    received: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: What the client wrote that contradicts the conversation (a second
    #: ``function_call`` under one call id, an output for a call it never saw).
    problems: list[str] = field(default_factory=list)
    #: When each event was sent and each client event arrived (wall time), by type.
    sent: list[tuple[float, str]] = field(default_factory=list)
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    session: dict[str, Any] = field(default_factory=dict)
    responses: list[str] = field(default_factory=list)
    connections: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _socket: ServerConnection | None = None
    _active: asyncio.Task[None] | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _audio_ms: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] == kind]

    async def drop(self) -> None:
        """Close the connection as a network failure would."""
        if self._socket is not None:
            await self._socket.close(code=1011, reason="dropped")

    # -- the connection ----------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        self.headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        self.paths.append(request.path)
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            await ws.close(code=1008, reason="missing key")
            return
        self.connections += 1
        self._socket, self.items, self._active = ws, [], None
        audio = _Vad()
        await self._send({"type": "session.created", "session": {"type": "realtime"}})
        for frame in self.preamble:
            await ws.send(frame)
        try:
            async for raw in ws:
                event = json.loads(raw)
                self.received.append(event)
                self.arrivals.append((time.time(), str(event.get("type"))))
                await self._handle(event, audio)
        finally:
            if self._active is not None:
                self._active.cancel()

    async def _handle(self, event: dict[str, Any], vad: _Vad) -> None:
        kind = event.get("type")
        if kind == "session.update":
            session = event.get("session") or {}
            if session.get("type") != "realtime":
                await self._error(
                    "missing_required_parameter", "Missing required parameter: 'session.type'."
                )
                return
            self.session.update(session)
            await self._send({"type": "session.updated", "session": self.session})
        elif kind == "input_audio_buffer.append":
            pcm = np.frombuffer(base64.b64decode(event["audio"]), "<i2")
            vad.buffered += pcm.size
            if self._detection() is not None:
                for change in vad.feed(pcm):
                    await self._speech(change, vad)
        elif kind == "input_audio_buffer.commit":
            if vad.buffered < RATE // 10:
                await self._error(
                    "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: buffer too small.",
                )
                return
            vad.item_id = self._id("item")
            await self._turn(vad)
        elif kind == "conversation.item.create":
            item = {**event["item"], "object": "realtime.item", "status": "completed"}
            calls = {i.get("call_id") for i in self.items if i.get("type") == "function_call"}
            if item.get("type") == "function_call" and item.get("call_id") in calls:
                self.problems.append(f"function_call {item.get('call_id')} twice")
            if item.get("type") == "function_call_output" and item.get("call_id") not in calls:
                self.problems.append(f"output for unknown call {item.get('call_id')}")
            item.setdefault("id", self._id("item"))
            self.items.append(item)
            await self._send({"type": "conversation.item.added", "item": item})
            await self._send({"type": "conversation.item.done", "item": item})
        elif kind == "conversation.item.delete":
            self.items = [i for i in self.items if i.get("id") != event.get("item_id")]
            await self._send({"type": "conversation.item.deleted", "item_id": event["item_id"]})
        elif kind == "conversation.item.truncate":
            item = next((i for i in self.items if i.get("id") == event.get("item_id")), None)
            length = self._audio_ms.get(str(event.get("item_id")), 0)
            if item is None or not isinstance(event.get("audio_end_ms"), int):
                await self._error("invalid_value", "Invalid 'item_id' or 'audio_end_ms'.")
                return
            if event["audio_end_ms"] > length:
                await self._error(
                    "invalid_value",
                    f"Audio content of {length}ms is already shorter than "
                    f"{event['audio_end_ms']}ms",
                )
                return
            self._audio_ms[str(event["item_id"])] = event["audio_end_ms"]
            keys = ("item_id", "content_index", "audio_end_ms")
            await self._send({"type": "conversation.item.truncated", **{k: event[k] for k in keys}})
        elif kind == "response.create":
            if self._active is not None and not self._active.done():
                await self._error(
                    "conversation_already_has_active_response",
                    "Conversation already has an active response in progress: "
                    f"{self.responses[-1]}. Wait until the response is finished before "
                    "creating a new one.",
                )
                return
            response_id = self._id("resp")
            self.responses.append(response_id)
            self._active = asyncio.create_task(self._respond(response_id))
        elif kind == "response.cancel":
            active = self._active
            if active is None or active.done():
                await self._error(
                    "response_cancel_not_active", "Cancellation failed: no active response found"
                )
                return
            active.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await active

    async def _speech(self, change: str, vad: _Vad) -> None:
        item_id = vad.item_id
        if change == "started":
            vad.item_id = item_id = self._id("item")
            await self._send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": vad.ms,
                    "item_id": item_id,
                }
            )
            return
        await self._send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": vad.ms,
                "item_id": item_id,
            }
        )
        await self._turn(vad)

    async def _turn(self, vad: _Vad) -> None:
        """The buffer becomes the caller's item, transcribed if the session asks."""
        item_id, vad.buffered = vad.item_id, 0
        previous = self.items[-1]["id"] if self.items else None
        await self._send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        transcribing = bool(self.session.get("audio", {}).get("input", {}).get("transcription"))
        said = (self.transcripts.pop(0) if self.transcripts else "") if transcribing else None
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": said}],
        }
        self.items.append(item)
        await self._send({"type": "conversation.item.added", "item": item})
        if transcribing and said is None:
            error = {"type": "server_error", "code": None, "message": "failed", "param": None}
            await self._send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item_id,
                    "content_index": 0,
                    "error": error,
                }
            )
        elif transcribing:
            await self._send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": said,
                }
            )

    # -- responses ---------------------------------------------------------------------

    async def _respond(self, response_id: str) -> None:
        output: list[dict[str, Any]] = []
        status = "completed"
        try:
            await self._send(
                {
                    "type": "response.created",
                    "response": {"id": response_id, "status": "in_progress"},
                }
            )
            if self.stall:
                self.stall -= 1
                await asyncio.Event().wait()  # until cancelled
            for index, part in enumerate(self.respond(list(self.items))):
                ids = {"response_id": response_id, "output_index": index}
                if part[0] == "say":
                    await self._say(ids, part[1], output)
                else:
                    await self._call(ids, part[1], part[2], output)
        except asyncio.CancelledError:
            status = "cancelled"
        done = {"id": response_id, "status": status, "output": output}
        with contextlib.suppress(Exception):
            await self._send({"type": "response.done", "response": done})

    async def _say(self, ids: dict[str, Any], text: str, output: list[dict[str, Any]]) -> None:
        """An audio answer; its item joins the conversation as it starts, as the
        server's does (a cancelled answer stays, cut where it was)."""
        item: dict[str, Any] = {
            "id": self._id("item"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [{"type": "output_audio", "transcript": ""}],
        }
        self.items.append(item)
        output.append(item)
        await self._send(
            {"type": "response.output_item.added", **ids, "item": {**item, "content": []}}
        )
        where = {**ids, "item_id": item["id"], "content_index": 0}
        words = text.split(" ")
        for n, word in enumerate(words):
            delta = word if n == 0 else " " + word
            await self._send(
                {"type": "response.output_audio_transcript.delta", **where, "delta": delta}
            )
            item["content"][0]["transcript"] += delta
            tone = _tone(len(delta) * SECONDS_PER_CHAR)
            for start in range(0, tone.size, RATE // 10):  # 100 ms a delta
                piece = tone[start : start + RATE // 10]
                self._audio_ms[item["id"]] = self._audio_ms.get(item["id"], 0) + (
                    piece.size * 1000 // RATE
                )
                chunk = base64.b64encode(piece.tobytes()).decode()
                await self._send({"type": "response.output_audio.delta", **where, "delta": chunk})
                await asyncio.sleep(self.pace)
        await self._send({"type": "response.output_audio.done", **where})
        await self._send(
            {"type": "response.output_audio_transcript.done", **where, "transcript": text}
        )
        item["status"] = "completed"
        await self._send({"type": "response.output_item.done", **ids, "item": item})

    async def _call(
        self, ids: dict[str, Any], name: str, args: dict[str, Any], output: list[dict[str, Any]]
    ) -> None:
        call_id = self._id("call")
        item = {"id": self._id("item"), "type": "function_call", "call_id": call_id, "name": name}
        await self._send(
            {"type": "response.output_item.added", **ids, "item": {**item, "arguments": ""}}
        )
        arguments = json.dumps(args)
        where = {**ids, "item_id": item["id"], "call_id": call_id}
        await self._send(
            {"type": "response.function_call_arguments.delta", **where, "delta": arguments}
        )
        await self._send(
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": name,
                "arguments": arguments,
            }
        )
        done = {**item, "arguments": arguments, "status": "completed"}
        self.items.append(done)
        output.append(done)
        await self._send({"type": "response.output_item.done", **ids, "item": done})

    # -- helpers -----------------------------------------------------------------------

    def _detection(self) -> Any:
        """The session's turn detection; ``None`` when the client commits turns."""
        audio = self.session.get("audio") or {}
        return (audio.get("input") or {}).get("turn_detection", {"type": "server_vad"})

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    async def _send(self, event: dict[str, Any]) -> None:
        self.sent.append((time.time(), event["type"]))
        if self._socket is not None:
            await self._socket.send(json.dumps({"event_id": self._id("event"), **event}))

    async def _error(self, code: str, message: str) -> None:
        error = {"type": "invalid_request_error", "code": code, "message": message, "param": None}
        self.errors.append(error)
        await self._send({"type": "error", "error": error})


class _Vad:
    """Energy-based speech detection on the input buffer, 20 ms at a time."""

    def __init__(self) -> None:
        self.ms = 0
        self.speaking = False
        self.quiet_ms = 0
        self.item_id = ""
        self.buffered = 0  # samples appended since the last commit
        self._carry = np.zeros(0, np.int16)

    def feed(self, pcm: Any) -> list[str]:
        changes = []
        samples = np.concatenate([self._carry, pcm])
        frame = RATE // 50
        while samples.size >= frame:
            chunk, samples = samples[:frame], samples[frame:]
            self.ms += 20
            loud = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) > 500
            if loud and not self.speaking:
                self.speaking, self.quiet_ms = True, 0
                changes.append("started")
            elif self.speaking:
                self.quiet_ms = 0 if loud else self.quiet_ms + 20
                if self.quiet_ms >= SILENCE_MS:
                    self.speaking = False
                    changes.append("stopped")
        self._carry = samples
        return changes


def _tone(seconds: float, rate: int = RATE) -> Any:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")


@asynccontextmanager
async def fake_realtime(
    respond: Callable[[list[dict[str, Any]]], Output],
    transcripts: list[str | None] | None = None,
    *,
    pace: float = 0.01,
) -> AsyncIterator[FakeRealtime]:
    fake = FakeRealtime(respond, list(transcripts or ()), pace=pace)
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        fake.port = next(iter(server.sockets)).getsockname()[1]
        yield fake
