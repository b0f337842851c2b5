"""One call's connection to Gemini Live (``BidiGenerateContent``), or a server that
speaks its protocol.

:class:`LiveLink` connects with the ``google-genai`` SDK once its model has given it the
session's set-up (the system instruction, the tools, the output transcription; Live takes
them only when a session opens), and hands every server message to ``on_message``.
Messages to the server are queued with :meth:`LiveLink.post` and go out in order.

A session the server ends (a dropped connection, a ``goAway`` before its time limit) is
opened again with the last ``sessionResumptionUpdate`` handle, so the server restores the
conversation as it was when it gave the handle, and ``on_reconnect(resumed=True)`` is
told. What was sent after that handle is lost with the connection: it is written into
the resumed session again, first and as context only (a turn that was to start a
generation no longer does; an answer to a call goes in as a ``functionResponse`` part,
which a resumed session takes for a call of the lost connection). A handle the server refuses
(it closes the set-up with 1007 or 1008) is dropped: the next session starts empty and
``on_reconnect(resumed=False)`` lets the model write the conversation into it. A ``goAway``
is acted on once the model is idle (or just before the time it gave runs out), so an
answer in progress is not lost to it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .link import MAX_QUEUED_AUDIO, backoff

log = logging.getLogger("backchannel.realtime")

DEFAULT_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
#: The rate of the caller's audio Live takes.
INPUT_RATE = 16_000


@dataclass(frozen=True)
class Outgoing:
    """One client message: ``clientContent``, ``toolResponse`` or ``realtimeInput``
    (the SDK's keyword arguments for it)."""

    kind: str
    arguments: dict[str, Any] = field(default_factory=dict)


class LiveLink:
    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.model = model or DEFAULT_MODEL
        if not api_key:
            log.warning("gemini live: no API key (BACKCHANNEL_GOOGLE_API_KEY) for %s", model)
        self.api_key = api_key or "unset"
        #: The server's base URL; the SDK speaks ``wss://`` to it.
        self.url = re.sub(r"^ws(s?)://", r"http\1://", (url or DEFAULT_URL).rstrip("/"))
        self.ssl_context = ssl_context
        #: The session's ``LiveConnectConfig`` (as a dict); set by the model, then ``run``
        #: connects.
        self.setup: dict[str, Any] | None = None
        self._configured = asyncio.Event()
        self.on_message: Callable[[Any], None] = lambda _message: None
        #: Told when a new session replaces a lost one: whether the server resumed it.
        self.on_reconnect: Callable[[bool], None] | None = None
        #: Whether the model has no generation in progress (a ``goAway`` waits for it).
        self.idle: Callable[[], bool] = lambda: True
        #: The latest resumption handle the server gave, if it can resume.
        self.handle: str | None = None
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        #: Messages sent since the session's latest handle (not the caller's audio).
        self._unsaved: list[Outgoing] = []
        self._audio_queued = 0
        self._ready = asyncio.Event()
        self._over = asyncio.Event()
        #: When a ``goAway`` came: the loop time by which to leave the session.
        self._go_away: float | None = None
        self.connects = 0

    def configure(self, setup: dict[str, Any]) -> None:
        """The session's set-up; the first call lets ``run`` connect."""
        if self.setup is None:
            self.setup = setup
            self._configured.set()

    async def ready(self) -> None:
        """Wait until a session is open."""
        await self._ready.wait()

    def post(self, kind: str, **arguments: Any) -> None:
        """Queue one client message; they go out in order once a session is open."""
        self._outbox.put_nowait(Outgoing(kind, arguments))

    def post_audio(self, pcm: bytes) -> None:
        """Queue the caller's audio (PCM16, 16 kHz); while no session is open, at most
        about 5 s is kept, and the rest dropped."""
        if self._audio_queued >= MAX_QUEUED_AUDIO:
            return
        self._audio_queued += 1
        self.post("realtimeInput", audio={"data": pcm, "mime_type": f"audio/pcm;rate={INPUT_RATE}"})

    async def run(self) -> None:
        """Connect once configured, pump messages until cancelled, reconnect on a loss."""
        from google import genai
        from google.genai import types

        await self._configured.wait()
        options: dict[str, Any] = {"base_url": self.url, "api_version": "v1beta"}
        if self.ssl_context is not None:
            options["async_client_args"] = {"ssl": self.ssl_context}
        client = genai.Client(api_key=self.api_key, http_options=types.HttpOptions(**options))
        failures = 0
        while True:
            replayed = False
            config = types.LiveConnectConfig(**(self.setup or {}))
            resuming = self.handle
            config.session_resumption = types.SessionResumptionConfig(handle=resuming)
            try:
                async with client.aio.live.connect(model=self.model, config=config) as session:
                    self.connects += 1
                    if self.connects > 1:
                        if resuming is None:  # the history is written again instead
                            self._outbox, self._audio_queued = asyncio.Queue(), 0
                        else:
                            replayed = self._replay()
                        self._unsaved = []
                        if self.on_reconnect is not None:
                            self.on_reconnect(resuming is not None)
                    self._ready.set()
                    failures = 0
                    self._over, self._go_away = asyncio.Event(), None
                    async with asyncio.TaskGroup() as group:
                        tasks = [
                            group.create_task(self._write(session)),
                            group.create_task(self._pump(session)),
                        ]
                        await self._until_left()
                        for task in tasks:
                            task.cancel()
                    if self._go_away is None:
                        raise ConnectionError("the session ended")
                    log.info("gemini live: session rotated after goAway")
                    continue
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # refused, or dropped in either direction
                log.warning("gemini live connection to %s lost: %s", self.url, _reason(exc))
                if resuming is not None and not self._ready.is_set() and _refused(exc):
                    self.handle = None  # the server would not resume it: start afresh
                elif replayed and self.handle == resuming:
                    # Lost again before a new handle, perhaps over what was written
                    # again: the next session starts afresh, with the whole history.
                    self.handle = None
            finally:
                self._ready.clear()
            failures += 1
            await asyncio.sleep(backoff(failures))

    def _replay(self) -> bool:
        """Put what the resumed session lost (sent after its handle) ahead of what waits
        to be sent, all of it as context only (what waits was meant for the lost
        connection: its calls, and the generation it was to start, are gone with it).
        Whether anything was written again."""
        waiting, messages = self._outbox, list(self._unsaved)
        self._outbox = asyncio.Queue()
        while not waiting.empty():
            messages.append(waiting.get_nowait())
        for message in messages:
            if (again := as_context(message)) is not None:
                self._outbox.put_nowait(again)
        return bool(self._unsaved)

    async def _write(self, session: Any) -> None:
        while True:
            message = await self._outbox.get()
            if message.kind != "realtimeInput" and self.handle is not None:
                self._unsaved.append(message)  # lost if the session is resumed
            if message.kind == "clientContent":
                await session.send_client_content(**message.arguments)
            elif message.kind == "toolResponse":
                await session.send_tool_response(**message.arguments)
            else:
                if "audio" in message.arguments:
                    self._audio_queued -= 1
                await session.send_realtime_input(**message.arguments)

    async def _pump(self, session: Any) -> None:
        try:
            while True:
                try:
                    message = await session._receive()
                except Exception as exc:
                    if _closed(session):
                        raise
                    # A frame that is not JSON, or not a message: skipped.
                    log.warning("gemini live server sent a bad frame: %s", str(exc)[:120])
                    continue
                self._note(message)
                try:
                    self.on_message(message)
                except Exception:  # an odd message costs itself, not the session
                    log.exception("gemini live message could not be handled")
        finally:
            self._over.set()

    def _note(self, message: Any) -> None:
        """Keep the latest resumption handle; note a ``goAway``'s deadline."""
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self.handle = update.new_handle
            self._unsaved = []  # the server has what was sent before it
        if message.go_away is not None and self._go_away is None:
            seconds = _seconds(message.go_away.time_left)
            self._go_away = asyncio.get_running_loop().time() + max(0.0, seconds - 1.0)
            self._over.set()

    async def _until_left(self) -> None:
        """Until the session is over, or told to go away: then once the model is idle
        (or a second before the server would end it)."""
        await self._over.wait()
        while self._go_away is not None and not self.idle():
            if asyncio.get_running_loop().time() >= self._go_away:
                break
            await asyncio.sleep(0.05)


def as_context(message: Outgoing) -> Outgoing | None:
    """A message written again into a resumed session: a turn without ``turnComplete``
    (none, if it had no content), answers to calls as ``functionResponse`` parts of a
    user turn; the caller's audio as it was."""
    if message.kind == "clientContent":
        if not message.arguments.get("turns"):
            return None
        return Outgoing("clientContent", {**message.arguments, "turn_complete": False})
    if message.kind == "toolResponse":
        parts = [
            {
                "function_response": {
                    k: v
                    for k, v in response.items()
                    if k in ("id", "name", "response", "will_continue")
                }
            }
            for response in message.arguments.get("function_responses") or ()
        ]
        return Outgoing(
            "clientContent", {"turns": [{"role": "user", "parts": parts}], "turn_complete": False}
        )
    return message


def _refused(exc: BaseException) -> bool:
    """Whether the server refused the set-up (a bad request, or a handle it does not
    know), not a transport failure."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_refused(e) for e in exc.exceptions)
    return getattr(exc, "code", None) in (1007, 1008)


def _closed(session: Any) -> bool:
    """Whether the session's socket is closed (else a frame was bad, not the socket)."""
    from websockets.protocol import State

    return getattr(getattr(session, "_ws", None), "state", State.CLOSED) is not State.OPEN


def _seconds(value: Any) -> float:
    """A ``goAway``'s ``timeLeft`` (a duration: the SDK's ``timedelta`` or ``"10s"``)."""
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    match = re.fullmatch(r"([0-9.]+)s", str(value or ""))
    return float(match.group(1)) if match else 0.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_reason(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"
