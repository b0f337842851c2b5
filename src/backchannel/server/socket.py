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
from starlette.websockets import WebSocket

from ..call import Call
from ..errors import BackchannelError, InvalidInput
from ..results import ResultSource
from ..speech import SpeechOutput
from ..voice.audio import RATE
from ..voice.session import CallInput
from .calls import CallHost, HostedCall
from .client_link import ClientLink, ClientSink, Outbound, close_quietly, send_out
from .control import apply_control
from .errors import classify, request_id
from .wire import ClientMessage, UserMessage

log = logging.getLogger("backchannel.socket")

_messages: TypeAdapter[Any] = TypeAdapter(ClientMessage)
#: Close codes of a client that hung up on purpose (normal closure, going away).
CLEAN_CLOSE = frozenset({1000, 1001})

#: How long a closing session waits for its last events to be stored before it leaves.
RELEASE_SECONDS = 5.0


async def client_session(ws: WebSocket, host: CallHost, call_id: str) -> None:
    token = ws.query_params.get("token") or _bearer(ws.headers.get("authorization"))
    # Accept first, then close with a code, so the client learns why it was refused.
    await ws.accept()
    try:
        hosted = await host.get(call_id)
    except BackchannelError:
        await close_quietly(ws, 4404, "unknown call")
        return
    if not hosted.accepts(token, client=True):
        await close_quietly(ws, 4401, "wrong or missing token")
        return
    link = host.clients.get(call_id)
    if link is not None:
        await _reconnect(ws, link)
        return
    await _run(ws, host, hosted)


async def _reconnect(ws: WebSocket, link: ClientLink) -> None:
    """A client coming back to its running call: the call's own session takes this
    socket over; this handler keeps it open until the call is done with it."""
    if link.attached:
        await ws.send_text(json.dumps(_error("call_already_connected", "a client is connected")))
        await close_quietly(ws, 4409, "call_already_connected")
        return
    done = link.attach(ws)
    await done.wait()


async def _run(ws: WebSocket, host: CallHost, hosted: HostedCall) -> None:
    """Run the call for as long as a client is attached, or comes back in time."""
    queue = Outbound()
    types = hosted.assistant.client_messages
    sink = ClientSink(queue, frozenset(types) if types is not None else None, host.outbox.stored)
    link = ClientLink(queue, ws, host.engine.clock)
    error: BackchannelError | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            releaser = tg.create_task(sink.release())
            sender: asyncio.Task[bool] | None = None
            try:
                output, make_session = await _voice(host, hosted, ws, link)
                async with host.run(hosted, sink, output) as call:
                    session = make_session(call) if make_session else None
                    host.clients[hosted.id] = link
                    try:
                        grace = host.settings.client_grace_seconds
                        sender = await _serve(tg, link, call, session, grace)
                    finally:
                        host.clients.pop(hosted.id, None)
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
            socket = link.socket
            if socket is not None:
                # The socket's own sender sends what is left, then stops at ``None``.
                await (sender or tg.create_task(send_out(socket, queue)))
                await close_quietly(socket)
    finally:
        link.release_all()


async def _serve(
    tg: asyncio.TaskGroup,
    link: ClientLink,
    call: Call,
    session: CallInput | None,
    grace: float,
) -> asyncio.Task[bool] | None:
    """Serve the attached socket until the call ends; the sender of the socket attached
    then, still running. A socket that drops (no clean close) leaves the call holding
    the floor for ``grace`` seconds; a client that comes back in time carries on, else
    the call ends (``client-disconnected``)."""
    while True:
        ws = link.socket
        assert ws is not None
        sender = tg.create_task(send_out(ws, link.queue))
        outcome = await _receive_until_end(ws, call, link.queue, session, sender)
        if outcome == "ended":
            return sender
        sender.cancel()  # the socket is gone; what it could not send stays queued
        link.detach()
        if outcome == "closed":
            return None  # the client hung up
        if grace <= 0:
            await call.hang_up("client-disconnected")
            return None
        log.info("call %s: its client dropped; waiting %g s for it", call.call_id, grace)
        call.listener_left()
        if not await link.wait_attached(grace, call.ended):
            if not call.ended.is_set():
                await call.hang_up("client-disconnected")
            return None
        log.info("call %s: its client is back", call.call_id)
        call.listener_back()


async def _voice(
    host: CallHost, hosted: Any, ws: WebSocket, link: ClientLink
) -> tuple[SpeechOutput | None, Callable[[Call], CallInput] | None]:
    """For a web call: audio out at the client's rate, and the microphone's session."""
    if hosted.type != "web":
        return None, None
    given = ws.query_params.get("sampleRate", str(RATE))
    rate = int(given) if given.isdigit() else 0
    if not 8_000 <= rate <= 48_000:
        # Audio at a rate other than the one it is read at is noise both ways: refused.
        raise InvalidInput(
            f"sampleRate must be a whole number from 8000 to 48000, not {given!r}",
            code="invalid_sample_rate",
        )

    async def send(frame: bytes) -> None:
        link.send_audio(frame)

    async def clear() -> None:
        link.send_audio({"type": "clear"})  # drop what the client buffered

    return await host.providers.audio(hosted.assistant, send, clear, rate=rate)


async def _receive_until_end(
    ws: WebSocket,
    call: Call,
    queue: Outbound,
    session: CallInput | None,
    sender: asyncio.Task[bool],
) -> str:
    ended = asyncio.ensure_future(call.ended.wait())
    try:
        while True:
            receive = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait(
                {receive, ended, sender}, return_when=asyncio.FIRST_COMPLETED
            )
            if ended in done:
                receive.cancel()
                return "ended"
            if receive not in done:  # the sender found the socket broken
                receive.cancel()
                return "dropped"
            frame = receive.result()
            if frame["type"] == "websocket.disconnect":
                return "closed" if frame.get("code", 1000) in CLEAN_CLOSE else "dropped"
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
    except RecursionError:
        queue.put_nowait(_error("invalid_json", "frame is nested too deeply"))
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


def _error(code: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"type": "error", "error": body}


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None
