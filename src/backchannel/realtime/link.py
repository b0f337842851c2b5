"""One call's connection to an OpenAI Realtime server (or one that speaks its protocol).

:class:`RealtimeLink` connects with the ``openai`` SDK, configures the session from the
assistant (instructions, tools, audio formats, the server's turn detection with
``create_response`` and ``interrupt_response`` off: responses are asked for by the
call's arbiter, one at a time), and hands every server event to its ``on_event``
callback. A dropped connection is opened again, with backoff, and ``on_reconnect`` is
told, so the conversation can be written into the new session (OpenAI keeps nothing of
a dropped session). Client events are queued with :meth:`RealtimeLink.post` and go out
in order; the pump runs in the call's task group and ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ProviderError

log = logging.getLogger("backchannel.realtime")

#: Waits between attempts to connect again: the last one repeats.
RECONNECT_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
DEFAULT_URL = "wss://api.openai.com/v1"
DEFAULT_TRANSCRIBER = "gpt-4o-mini-transcribe"
#: Microphone chunks kept for a session not open yet (or away): about 5 s of 20 ms.
MAX_QUEUED_AUDIO = 250
#: The ``event_id`` of every ``session.update``: an error naming it is the session's.
CONFIGURE_EVENT = "bc_configure"


def session_config(
    instructions: str,
    tools: Sequence[Mapping[str, Any]],
    *,
    voice: str | None = None,
    transcriber: str | None = None,
    turn_detection: Mapping[str, Any] | None = None,
    transcribe: bool = True,
) -> dict[str, Any]:
    """The GA ``session.update`` body: PCM16 at 24 kHz both ways, the caller's speech
    transcribed (unless the call transcribes it itself), the server's VAD reporting
    turns but never answering on its own (or none: ``turn_detection`` ``None``).

    The assistant's sampling is not sent: the GA session has no temperature, and its
    ``max_output_tokens`` counts the answer's audio, so a ``maxTokens`` sized for text
    (Vapi's exports carry 200 to 300) would cut a spoken answer after a few seconds."""
    detection: dict[str, Any] | None = None
    if turn_detection is not None:
        detection = {**turn_detection, "create_response": False, "interrupt_response": False}
    output: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": 24000}}
    if voice:
        output["voice"] = voice
    return {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": instructions,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": (
                    {"model": transcriber or DEFAULT_TRANSCRIBER} if transcribe else None
                ),
                "turn_detection": detection,
            },
            "output": output,
        },
        "tools": [function_tool(t) for t in tools],
        "tool_choice": "auto",
    }


def function_tool(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions tool schema as a Realtime session tool."""
    function = schema.get("function", schema)
    out = {"type": "function", "name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


class RealtimeLink:
    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        url: str | None = None,
    ) -> None:
        self.model = model
        #: The ``session.update`` body each new session gets; its model sets it.
        self.session: dict[str, Any] = {}
        if not api_key:
            log.warning("realtime: no API key (BACKCHANNEL_OPENAI_API_KEY) for %s", model)
        self.api_key = api_key or "unset"
        #: The WebSocket base URL; an HTTP one is taken as the server's (as the SDK does).
        self.url = re.sub(r"^http(s?)://", r"ws\1://", (url or DEFAULT_URL).rstrip("/"))
        self.on_event: Callable[[dict[str, Any]], None] = lambda _event: None
        #: Told when a new session replaces a dropped one (not for the first).
        self.on_reconnect: Callable[[], None] | None = None
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._audio_queued = 0
        self._ready = asyncio.Event()
        self.connects = 0

    async def ready(self) -> None:
        """Wait until the session is open and configured."""
        await self._ready.wait()

    def post(self, event: Mapping[str, Any]) -> None:
        """Queue one client event; they go out in order once the session is open. What
        a dropped connection did not send is written again on reconnect (the history),
        or no longer matters (audio of a moment ago)."""
        if event.get("type") == "input_audio_buffer.append":
            if self._audio_queued >= MAX_QUEUED_AUDIO:
                return  # the session is away: the microphone's audio is not hoarded
            self._audio_queued += 1
        self._outbox.put_nowait(dict(event))

    async def run(self) -> None:
        """Connect, configure and pump events until cancelled; reconnect on a drop."""
        from openai import AsyncOpenAI

        client = AsyncOpenAI(api_key=self.api_key, websocket_base_url=self.url)
        failures = 0
        while True:
            try:
                connection: Any = await client.realtime.connect(model=self.model).enter()
            except Exception as exc:
                log.warning("realtime connect to %s failed: %s", self.url, exc)
                failures += 1
                await asyncio.sleep(backoff(failures))
                continue
            try:
                await connection.send(
                    {"type": "session.update", "session": self.session, "event_id": CONFIGURE_EVENT}
                )
                self.connects += 1
                if self.connects > 1:
                    self._outbox = asyncio.Queue()  # the history is written again instead
                    self._audio_queued = 0
                    if self.on_reconnect is not None:
                        self.on_reconnect()
                self._ready.set()
                failures = 0
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._write(connection))
                    await self._pump(connection)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a drop, in either direction
                log.warning("realtime connection lost: %s", exc)
            finally:
                self._ready.clear()
                with contextlib.suppress(Exception):
                    await connection.close()
            failures += 1
            await asyncio.sleep(backoff(failures))

    async def _write(self, connection: Any) -> None:
        while True:
            event = await self._outbox.get()
            if event.get("type") == "input_audio_buffer.append":
                self._audio_queued -= 1
            await connection.send(event)

    async def _pump(self, connection: Any) -> None:
        while True:
            raw = await connection.recv_bytes()
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("realtime server sent a frame that is not JSON: %r", raw[:80])
                continue
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                continue
            if event["type"] == "error":
                _log_error(event)
            try:
                self.on_event(event)
            except Exception:  # an odd event costs itself, not the session
                log.exception("realtime event %s could not be handled", event["type"])


def backoff(failures: int) -> float:
    """The wait before the next attempt to connect, after ``failures`` in a row."""
    return RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF)) - 1]


def error_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    error = event.get("error")
    return error if isinstance(error, dict) else {}


def _log_error(event: Mapping[str, Any]) -> None:
    error = error_of(event)
    log.warning("realtime server error %s: %s", error.get("code"), error.get("message"))


def server_error(event: Mapping[str, Any]) -> ProviderError:
    error = error_of(event)
    code = error.get("code") or "realtime_error"
    return ProviderError(str(error.get("message") or code), code="realtime_error", upstream=code)
