"""One phone call over a Twilio Media Streams WebSocket.

Twilio sends ``connected``, then ``start`` (the stream and call ids, and the custom
parameters our TwiML set: the backchannel call id and its client token), then ``media``
every 20 ms (µ-law 8 kHz, base64), ``mark`` echoes, and ``stop``. We send ``media``
(the assistant's speech, paced in 20 ms frames), ``mark`` (a named point in what we
sent; Twilio echoes it once the caller has heard up to it) and ``clear`` (barge-in:
Twilio drops what it has buffered).

Bad frames are logged and skipped; the call goes on. A stream that stops or drops ends
its call cleanly, as a hang-up. Closing the socket hangs up the phone call, since the
TwiML has nothing after ``<Connect>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from ..events import Event
from ..voice.audio import to_samples
from ..voice.session import CallInput
from . import mulaw

log = logging.getLogger("backchannel.phone")

RATE = 8_000
#: A mark every this many frames (0.5 s), so the caller's playback position is known.
MARK_EVERY = 25
START_TIMEOUT = 10.0


@dataclass
class StreamStart:
    stream_sid: str
    call_sid: str
    parameters: dict[str, str]


@dataclass
class Playback:
    """What was sent and what Twilio says the caller has heard, in frames."""

    sent: int = 0
    heard: int = 0
    marks: dict[str, int] = field(default_factory=dict)


class NoEvents:
    """Twilio takes no events; the call's events still go to its webhooks."""

    def emit(self, event: Event) -> None:
        return None


async def read_start(ws: WebSocket) -> StreamStart | None:
    """Frames up to ``start``; ``None`` if the stream ends or never starts properly."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            frame = _parse(message.get("text") or "")
            if frame is None:
                continue
            kind = frame.get("event")
            if kind == "connected":
                continue
            if kind != "start":
                log.error("media stream sent %r before 'start'; ignored", kind)
                continue
            start = frame.get("start") or {}
            sid = frame.get("streamSid") or start.get("streamSid")
            if not isinstance(sid, str) or not isinstance(start.get("callSid"), str):
                log.error("media stream 'start' without streamSid/callSid; closing")
                return None
            params = start.get("customParameters") or {}
            return StreamStart(sid, start["callSid"], {str(k): str(v) for k, v in params.items()})


class MediaStream:
    """The running stream: caller audio to the session, assistant audio to Twilio."""

    def __init__(self, ws: WebSocket, start: StreamStart) -> None:
        self.ws = ws
        self.start = start
        self.playback = Playback()
        self._out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def send_frame(self, pcm: bytes) -> None:
        """One 20 ms PCM16 frame at 8 kHz from the assistant's speech, as µ-law."""
        payload = base64.b64encode(mulaw.encode(to_samples(pcm))).decode()
        self._put({"event": "media", "media": {"payload": payload}})
        self.playback.sent += 1
        if self.playback.sent % MARK_EVERY == 0:
            name = f"frame-{self.playback.sent}"
            self.playback.marks[name] = self.playback.sent
            self._put({"event": "mark", "mark": {"name": name}})

    async def clear(self) -> None:
        self._put({"event": "clear"})

    def _put(self, message: dict[str, Any]) -> None:
        self._out.put_nowait({**message, "streamSid": self.start.stream_sid})

    async def send_out(self) -> None:
        """Write queued messages until told to stop; a gone socket drops the rest."""
        while (message := await self._out.get()) is not None:
            try:
                await self.ws.send_text(json.dumps(message))
            except (WebSocketDisconnect, RuntimeError):
                while await self._out.get() is not None:
                    pass
                return

    def close_out(self) -> None:
        self._out.put_nowait(None)

    async def receive(self, session: CallInput, ended: asyncio.Event) -> str:
        """Feed the caller's audio to the session until the stream or the call ends.
        Returns why: ``stream-stopped``, ``stream-dropped`` or ``call-ended``."""
        end = asyncio.ensure_future(ended.wait())
        try:
            while True:
                receive = asyncio.ensure_future(self.ws.receive())
                done, _ = await asyncio.wait({receive, end}, return_when=asyncio.FIRST_COMPLETED)
                if end in done:
                    receive.cancel()
                    return "call-ended"
                message = receive.result()
                if message["type"] == "websocket.disconnect":
                    return "stream-dropped"
                frame = _parse(message.get("text") or "")
                if frame is None:
                    continue
                if self._handle(frame, session):
                    return "stream-stopped"
        finally:
            end.cancel()

    def _handle(self, frame: dict[str, Any], session: CallInput) -> bool:
        """Act on one frame; True when it ends the stream."""
        kind = frame.get("event")
        if frame.get("streamSid") not in (None, self.start.stream_sid):
            log.error("frame for unknown stream %r on %s; ignored", frame.get("streamSid"), self)
            return False
        if kind == "media":
            media = frame.get("media") or {}
            if media.get("track", "inbound") != "inbound":
                return False
            try:
                audio = base64.b64decode(str(media.get("payload", "")), validate=True)
            except (binascii.Error, ValueError):
                log.error("media frame with a payload that is not base64; skipped")
                return False
            session.feed(mulaw.decode(audio).astype("<i2").tobytes())
        elif kind == "mark":
            name = str((frame.get("mark") or {}).get("name", ""))
            self.playback.heard = max(self.playback.heard, self.playback.marks.pop(name, 0))
        elif kind == "stop":
            return True
        elif kind not in ("connected", "start", "dtmf"):
            log.error("unknown media stream event %r; ignored", kind)
        return False

    def __repr__(self) -> str:
        return f"<stream {self.start.stream_sid} call {self.start.call_sid}>"


def _parse(text: str) -> dict[str, Any] | None:
    try:
        frame = json.loads(text)
    except json.JSONDecodeError:
        log.error("media stream frame is not JSON: %.80r; skipped", text)
        return None
    if not isinstance(frame, dict):
        log.error("media stream frame is not an object; skipped")
        return None
    return frame


async def close(ws: WebSocket) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.close()
