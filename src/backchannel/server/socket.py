"""The client WebSocket: one connection runs one call.

In: JSON text frames — ``user-message``, ``tool-call-result``, and the control messages
(``add-message``, ``say``, ``end-call``, ``control``); on ``web`` calls, binary frames of
PCM16 mono microphone audio at ``?sampleRate=`` (default 16000). Out: on ``web`` calls,
binary frames of the assistant's audio at that rate, paced in real time, and ``clear``
when the caller barges in; and the call's events as JSON, by
Vapi's names, filtered by the assistant's ``clientMessages``, plus ``error`` for a frame
that could not be used (the call goes on) and ``tool-call-result-ack``. The protocol is
documented with examples in ``docs/client-protocol.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..call import Call
from ..errors import BackchannelError
from ..events import Event
from ..results import ResultSource
from ..speech import SpeechOutput
from ..voice.audio import RATE
from ..voice.session import VoiceSession
from .calls import CallHost
from .control import apply_control
from .errors import classify, request_id
from .wire import ClientMessage, UserMessage

log = logging.getLogger("backchannel.socket")

_messages: TypeAdapter[Any] = TypeAdapter(ClientMessage)

#: How long a closing session waits for its last events to be stored before it leaves.
RELEASE_SECONDS = 5.0

#: What goes to the client, in order: JSON events, binary audio frames, then ``None``.
Outbound = asyncio.Queue[dict[str, Any] | bytes | None]


class ClientSink:
    """Queues the events the client asked for; the session's sender writes them out.

    An event that also goes to the server URL is shown to the client only once the
    outbox has stored it (``stored``), so nothing the client saw can be lost by a crash.
    Events keep their order; audio frames do not wait behind them.
    """

    def __init__(
        self,
        queue: Outbound,
        types: frozenset[str] | None,
        stored: Callable[[str], asyncio.Future[None] | None] = lambda _id: None,
    ):
        self.queue = queue
        self.types = types
        self.stored = stored
        self._held: asyncio.Queue[tuple[asyncio.Future[None] | None, dict[str, Any]] | None] = (
            asyncio.Queue()
        )

    def emit(self, event: Event) -> None:
        if self.types is None or event.type in self.types:
            self._held.put_nowait((self.stored(event.id), event.to_message()["message"]))

    def close(self) -> None:
        self._held.put_nowait(None)

    async def release(self) -> None:
        """Pass events on to the sender in order, each once it is durable."""
        while (item := await self._held.get()) is not None:
            durable, message = item
            if durable is not None:
                await asyncio.shield(durable)
            self.queue.put_nowait(message)


async def client_session(ws: WebSocket, host: CallHost, call_id: str) -> None:
    token = ws.query_params.get("token") or _bearer(ws.headers.get("authorization"))
    # Accept first, then close with a code, so the client learns why it was refused.
    await ws.accept()
    try:
        hosted = await host.get(call_id)
    except BackchannelError:
        await ws.close(code=4404, reason="unknown call")
        return
    if not hosted.accepts(token, client=True):
        await ws.close(code=4401, reason="wrong or missing token")
        return
    queue: Outbound = asyncio.Queue()
    types = hosted.assistant.client_messages
    sink = ClientSink(queue, frozenset(types) if types is not None else None, host.outbox.stored)
    async with asyncio.TaskGroup() as tg:
        sender = tg.create_task(_send_out(ws, queue))
        releaser = tg.create_task(sink.release())
        error: BackchannelError | None = None
        try:
            output, make_session = await _voice(host, hosted, ws, queue)
            async with host.run(hosted, sink, output) as call:
                session = make_session(call) if make_session else None
                await _receive_until_end(ws, call, queue, session)
        except BackchannelError as exc:
            error = exc
        sink.close()
        # Events still waiting to be stored (the store is away) are not shown: the
        # client leaves; the outbox keeps them for the server URL.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RELEASE_SECONDS):
                await asyncio.shield(releaser)
        releaser.cancel()
        if error is not None:
            queue.put_nowait({"type": "error", "error": error.to_dict()})
        queue.put_nowait(None)
        await sender
    with contextlib.suppress(RuntimeError):  # the client may already have gone
        await ws.close()


async def _voice(
    host: CallHost, hosted: Any, ws: WebSocket, queue: Outbound
) -> tuple[SpeechOutput | None, Callable[[Call], VoiceSession] | None]:
    """For a web call: audio out at the client's rate, and the microphone's session."""
    if hosted.type != "web":
        return None, None
    try:
        rate = int(ws.query_params.get("sampleRate", RATE))
    except ValueError:
        rate = RATE
    rate = rate if 8_000 <= rate <= 48_000 else RATE

    async def send(frame: bytes) -> None:
        queue.put_nowait(frame)

    async def clear() -> None:
        queue.put_nowait({"type": "clear"})  # drop what the client buffered

    return await host.providers.audio(hosted.assistant, send, clear, rate=rate)


async def _receive_until_end(
    ws: WebSocket, call: Call, queue: Outbound, session: VoiceSession | None = None
) -> None:
    ended = asyncio.ensure_future(call.ended.wait())
    try:
        while True:
            receive = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({receive, ended}, return_when=asyncio.FIRST_COMPLETED)
            if ended in done:
                receive.cancel()
                return
            frame = receive.result()
            if frame["type"] == "websocket.disconnect":
                return
            if frame.get("text") is not None:
                await _handle(call, frame["text"], queue)
            elif session is not None:
                session.feed(frame.get("bytes") or b"")
            else:
                queue.put_nowait(_error("unsupported_frame", "binary audio needs a web call"))
    finally:
        ended.cancel()


async def _handle(call: Call, text: str, queue: Outbound) -> None:
    try:
        message = _messages.validate_python(json.loads(text))
    except json.JSONDecodeError as exc:
        queue.put_nowait(_error("invalid_json", f"frame is not JSON: {exc.msg}"))
        return
    except ValidationError as exc:
        queue.put_nowait(
            _error(
                "invalid_message",
                "frame is not a known message",
                errors=exc.errors(include_url=False, include_input=False),
            )
        )
        return
    try:
        if isinstance(message, UserMessage):
            call.send_text(message.content)
            return
        answer = await apply_control(call.engine, call.call_id, message, ResultSource.CLIENT)
        if message.type == "tool-call-result":
            queue.put_nowait({"type": "tool-call-result-ack", **answer})
    except BackchannelError as exc:
        queue.put_nowait({"type": "error", "error": exc.to_dict()})
    except Exception as exc:  # one frame's failure never ends the call
        _status, code, text = classify(exc)
        rid = request_id()
        log.warning("call %s: a client frame failed: %s (%s) [%s]", call.call_id, code, exc, rid)
        queue.put_nowait(
            {"type": "error", "error": {"code": code, "message": text, "requestId": rid}}
        )


async def _send_out(ws: WebSocket, queue: Outbound) -> None:
    while (item := await queue.get()) is not None:
        try:
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_text(json.dumps(item, default=str))
        except (WebSocketDisconnect, RuntimeError):
            log.debug("client went away; dropping the rest of its events")
            while await queue.get() is not None:
                pass
            return


def _error(code: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"type": "error", "error": body}


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None
