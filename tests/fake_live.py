"""A Gemini Live server on loopback (``BidiGenerateContent`` over TLS), for tests.

It follows the public reference: the client's first message is ``setup``, answered with
``setupComplete``; ``clientContent`` turns join the context, and ``turnComplete: true``
starts a generation; ``toolResponse`` answers the model's calls by id, and for a
``NON_BLOCKING`` function its ``scheduling`` says what happens (``SILENT``: context only;
``WHEN_IDLE``: a generation once none runs; ``INTERRUPT``: the running one is
``interrupted`` and a new one starts). A generation streams ``serverContent`` with the
model's audio (a tone, PCM16 at 24 kHz) and its ``outputTranscription``, ``toolCall`` for
each call, then ``generationComplete`` and ``turnComplete``. Sessions that asked for it
get ``sessionResumptionUpdate`` handles between generations; a new session that brings
one gets the conversation back.

With automatic activity detection on (the default), an energy VAD hears the caller's
``realtimeInput`` audio: its transcript (from ``transcripts``) as ``inputTranscription``,
``finished`` after 500 ms of silence (unless told not to), and the model answers on its
own; speech over a generation interrupts it unless ``activityHandling`` is
``NO_INTERRUPTION`` (then the answer to it waits for the generation's end). Any
``clientContent`` cuts a running generation (``interrupted``, then ``turnComplete``), as
the reference says.

The test reads off what the client did wrong (``problems``): a response for a call the
session never made, a ``toolResponse`` for a call made before the session was resumed (a
resumed session does not act on those), a second response to a call whose last one was
final.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

RATE = 24_000
Output = list[tuple[Any, ...]]
SECONDS_PER_CHAR = 1 / 14
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


#: Fields whose values are the user's own data: their keys are kept as sent.
_DATA = frozenset({"args", "response", "parametersJsonSchema", "parameters"})


def camel(value: Any) -> Any:
    """The message with lowerCamelCase keys: the server takes proto3 JSON, whose parser
    accepts the field names either way (the SDK sends ``tool_response``,
    ``will_continue``…)."""
    if isinstance(value, list):
        return [camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        head, *rest = key.split("_")
        name = head + "".join(r[:1].upper() + r[1:] for r in rest)
        out[name] = item if name in _DATA else camel(item)
    return out


@dataclass
class _State:
    """What a session knows; a resumption handle brings it back."""

    contents: list[dict[str, Any]] = field(default_factory=list)
    #: The model's calls by id, and whether a final response came.
    calls: dict[str, bool] = field(default_factory=dict)
    #: Calls made on an earlier connection of a resumed session.
    earlier: set[str] = field(default_factory=set)

    def resumed(self) -> _State:
        return _State(json.loads(json.dumps(self.contents)), dict(self.calls), set(self.calls))


@dataclass
class FakeLive:
    respond: Callable[[list[dict[str, Any]]], Output]
    #: What the server's transcription hears of each of the caller's turns, in order.
    transcripts: list[str] = field(default_factory=list)
    port: int = 0
    pace: float = 0.01
    #: Raw frames sent after ``setupComplete`` (garbage, for the client to survive).
    preamble: list[str] = field(default_factory=list)
    #: Generations that start and then send nothing (a stuck model), counted down.
    stall: int = 0
    #: Refuse resumption handles (as after the server's handle lifetime).
    forget: bool = False
    #: Close a resumed session that is sent a turn (as the server may for what it
    #: cannot take: an answer to a call it never saw).
    refuse_resumed_turns: bool = False
    #: Transcribe a turn late: its words after its answer's first audio, no ``finished``
    #: (the reference gives transcripts no order with the model's turn).
    late_words: bool = False
    #: Mark a turn's transcript ``finished`` when the turn ends (the native-audio models
    #: are reported never to: the turn's end shows only in the answer to it).
    finished: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)
    setups: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: What started each generation: ``turn``, or a result's scheduling.
    generations: list[str] = field(default_factory=list)
    interrupted: int = 0
    #: When each client message arrived and each audio chunk was sent (wall time).
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    sent: list[tuple[float, str]] = field(default_factory=list)
    state: _State = field(default_factory=_State)
    handles: dict[str, _State] = field(default_factory=dict)
    connections: int = 0
    ca: trustme.CA = field(default_factory=trustme.CA)
    _socket: ServerConnection | None = None
    _generation: asyncio.Task[None] | None = None
    _waiting: list[str] = field(default_factory=list)
    #: The server's VAD: in a turn, and how much silence (in samples) since speech.
    _speaking: bool = False
    _quiet: int = 0
    _heard: str = ""
    _words_due: str | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    @property
    def setup(self) -> dict[str, Any]:
        return self.setups[-1]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m[kind] for m in self.received if kind in m]

    def responses(self, call_id: str) -> list[dict[str, Any]]:
        """Every answer the client gave to one call, as a tool response or as content."""
        found = []
        for message in self.of_kind("toolResponse"):
            found += [r for r in message["functionResponses"] if r.get("id") == call_id]
        for message in self.of_kind("clientContent"):
            for turn in message.get("turns") or ():
                for part in turn.get("parts", ()):
                    if part.get("functionResponse", {}).get("id") == call_id:
                        found.append(part["functionResponse"])
        return found

    async def drop(self) -> None:
        if self._socket is not None:
            await self._socket.close(1011, "internal error")

    async def go_away(self, seconds: float) -> None:
        """Tell the client to leave, then end the session ``seconds`` later."""
        socket = self._socket
        if socket is None:
            return
        await socket.send(json.dumps({"goAway": {"timeLeft": f"{seconds}s"}}))
        await asyncio.sleep(seconds)
        if self._socket is socket:
            await socket.close(1000, "session time limit")

    # -- the server ----------------------------------------------------------------------

    async def serve(self, ws: ServerConnection) -> None:
        self.connections += 1
        request = ws.request
        self.paths.append(request.path if request is not None else "")
        self.headers.append(
            {k.lower(): v for k, v in request.headers.raw_items()} if request else {}
        )
        setup = camel(json.loads(await ws.recv())).get("setup")
        if not isinstance(setup, dict) or not setup.get("model"):
            await ws.close(1007, "Request contains an invalid argument.")
            return
        self.setups.append(setup)
        handle = (setup.get("sessionResumption") or {}).get("handle")
        if handle:
            if handle not in self.handles or self.forget:
                await ws.close(1008, "Session resumption handle is invalid.")
                return
            self.state = self.handles[handle].resumed()
        else:
            self.state = _State()
        self._socket = ws
        await ws.send(json.dumps({"setupComplete": {}}))
        for raw in self.preamble:
            await ws.send(raw)
        try:
            async for raw in ws:
                message = camel(json.loads(raw))
                self.arrivals.append((time.time(), next(iter(message), "")))
                self.received.append(message)
                await self._take(ws, message)
        except Exception as exc:
            if not isinstance(exc, ConnectionClosed):
                self.problems.append(f"the server failed: {exc!r}")
        finally:
            if self._generation is not None:
                self._generation.cancel()
            self._generation = None
            self._waiting.clear()

    async def _take(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        if "clientContent" in message and self.refuse_resumed_turns and self.state.earlier:
            await ws.close(1007, "Request contains an invalid argument.")
            return
        if "clientContent" in message:
            content = message["clientContent"]
            if self._busy:  # "a message here will interrupt any current model generation"
                await self._interrupt(ws)
            for turn in content.get("turns") or ():
                for part in turn.get("parts", ()):
                    if "functionResponse" in part:
                        self._answered(part["functionResponse"], known=False)
                self.state.contents.append(turn)
            if content.get("turnComplete"):
                self._start(ws, "turn")
        elif "toolResponse" in message:
            responses = message["toolResponse"].get("functionResponses") or ()
            scheduled = None
            for response in responses:
                if (response.get("scheduling") or "WHEN_IDLE") != "SILENT":
                    scheduled = response.get("scheduling") or "WHEN_IDLE"
            if scheduled == "INTERRUPT" and self._busy:
                await self._interrupt(ws)
            for response in responses:
                self._answered(response, known=True)
                self.state.contents.append(
                    {"role": "user", "parts": [{"functionResponse": response}]}
                )
            if scheduled is not None:
                if self._busy:
                    self._waiting.append(scheduled)
                else:
                    self._start(ws, scheduled)
        elif "realtimeInput" in message:
            audio = message["realtimeInput"].get("audio")
            if audio and self._detecting:
                await self._detect(ws, _proto_bytes(audio["data"]))

    @property
    def _detecting(self) -> bool:
        """Whether the session's automatic activity detection is on (the default)."""
        config = self.setup.get("realtimeInputConfig") or {}
        return not (config.get("automaticActivityDetection") or {}).get("disabled")

    async def _detect(self, ws: ServerConnection, pcm: bytes) -> None:
        """An energy VAD over the caller's audio: speech opens a turn (its transcript
        sent at once); 500 ms of silence ends it, and the model answers."""
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float64)
        loud = samples.size > 0 and float(np.sqrt(np.mean(samples**2))) > 1000
        if loud:
            self._quiet = 0
            if not self._speaking:
                self._speaking = True
                handling = (self.setup.get("realtimeInputConfig") or {}).get("activityHandling")
                if self._busy and handling != "NO_INTERRUPTION":
                    await self._interrupt(ws)
                self._heard = self.transcripts.pop(0) if self.transcripts else ""
                if self.late_words:
                    self._words_due = self._heard
                else:
                    transcription = {"inputTranscription": {"text": self._heard}}
                    await ws.send(json.dumps({"serverContent": transcription}))
        elif self._speaking:
            self._quiet += samples.size
            if self._quiet >= 16_000 // 2:
                self._speaking = False
                if self.finished and not self.late_words:
                    finished = {"inputTranscription": {"text": "", "finished": True}}
                    await ws.send(json.dumps({"serverContent": finished}))
                self.state.contents.append({"role": "user", "parts": [{"text": self._heard}]})
                if self._busy:
                    self._waiting.append("vad")
                else:
                    self._start(ws, "vad")

    async def _interrupt(self, ws: ServerConnection) -> None:
        """Cut the running generation: ``interrupted``, then its ``turnComplete``."""
        assert self._generation is not None
        self._generation.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._generation  # what it sent stays in the history, before what cut it
        self.interrupted += 1
        await ws.send(json.dumps({"serverContent": {"interrupted": True}}))
        await ws.send(json.dumps({"serverContent": {"turnComplete": True}}))

    def _answered(self, response: dict[str, Any], *, known: bool) -> None:
        call_id = str(response.get("id"))
        if known and call_id in self.state.earlier:
            # A resumed session does not act on an answer to a call of the lost one.
            self.problems.append(f"a tool response for {call_id}, made before the resumption")
        if call_id not in self.state.calls:
            if known:
                self.problems.append(f"a response for {call_id}, a call this session never made")
            return
        if self.state.calls[call_id]:
            self.problems.append(f"a second response for {call_id} after a final one")
        self.state.calls[call_id] = not response.get("willContinue", False)

    @property
    def _busy(self) -> bool:
        return self._generation is not None and not self._generation.done()

    def _start(self, ws: ServerConnection, why: str) -> None:
        self.generations.append(why)
        self._generation = asyncio.get_running_loop().create_task(self._generate(ws))

    async def _generate(self, ws: ServerConnection) -> None:
        if self.stall > 0:
            self.stall -= 1
            await asyncio.Event().wait()
        parts: list[dict[str, Any]] = []
        try:
            await self._steps(ws, parts)
        finally:  # what was sent stays in the history, even if cut
            self.state.contents.append({"role": "model", "parts": parts})
        await ws.send(json.dumps({"serverContent": {"generationComplete": True}}))
        await ws.send(json.dumps({"serverContent": {"turnComplete": True}}))
        if any("sessionResumption" in s for s in self.setups[-1:]):
            handle = f"handle-{next(self._ids)}"
            self.handles[handle] = self.state.resumed()
            update = {"newHandle": handle, "resumable": True}
            await ws.send(json.dumps({"sessionResumptionUpdate": update}))
        if self._waiting:
            self._start(ws, self._waiting.pop(0))

    async def _steps(self, ws: ServerConnection, parts: list[dict[str, Any]]) -> None:
        for step in self.respond(self.state.contents):
            if step[0] == "say":
                parts.append({"text": step[1]})
                await self._say(ws, step[1])
            else:
                call_id = f"function-call-{next(self._ids)}"
                call = {"id": call_id, "name": step[1], "args": step[2]}
                parts.append({"functionCall": call})
                self.state.calls[call_id] = False
                await ws.send(json.dumps({"toolCall": {"functionCalls": [call]}}))

    async def _say(self, ws: ServerConnection, text: str) -> None:
        seconds = len(text) * SECONDS_PER_CHAR
        n = int(seconds * RATE)
        t = np.arange(n) / RATE
        tone = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")
        words = text.split(" ")
        chunks = max(1, n // (RATE // 10))
        for i in range(chunks):
            audio = tone[i * n // chunks : (i + 1) * n // chunks].tobytes()
            piece = words[i * len(words) // chunks : (i + 1) * len(words) // chunks]
            content: dict[str, Any] = {
                "modelTurn": {
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": f"audio/pcm;rate={RATE}",
                                "data": base64.b64encode(audio).decode(),
                            }
                        }
                    ]
                }
            }
            if piece:
                lead = "" if i * len(words) // chunks == 0 else " "
                content["outputTranscription"] = {"text": lead + " ".join(piece)}
            self.sent.append((time.time(), "audio"))
            await ws.send(json.dumps({"serverContent": content}))
            if self._words_due is not None:  # the caller's words, after the answer began
                late = {"inputTranscription": {"text": self._words_due}}
                self._words_due = None
                await ws.send(json.dumps({"serverContent": late}))
            await asyncio.sleep(self.pace)


@asynccontextmanager
async def fake_live(
    respond: Callable[[list[dict[str, Any]]], Output], **options: Any
) -> AsyncIterator[FakeLive]:
    fake = FakeLive(respond, **options)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    fake.ca.issue_cert("127.0.0.1").configure_cert(context)
    async with serve(fake.serve, "127.0.0.1", 0, ssl=context, max_size=None) as server:
        fake.port = next(iter(server.sockets)).getsockname()[1]
        try:
            yield fake
        finally:
            if fake._generation is not None:
                fake._generation.cancel()
                with contextlib.suppress(BaseException):
                    await fake._generation


def _proto_bytes(text: str) -> bytes:
    """A proto3 JSON ``bytes`` field: standard or URL-safe base64, padded or not (the
    SDK sends URL-safe)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def last_user_text(contents: list[dict[str, Any]]) -> str:
    """The words of the caller's latest turn."""
    for content in reversed(contents):
        if content.get("role") == "user":
            texts = [p["text"] for p in content.get("parts", ()) if "text" in p]
            if texts:
                return texts[0]  # the caller's words; what follows is guidance
    return ""
