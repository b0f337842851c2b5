"""A caller that types: the eval's caller for text calls, over the call's real
WebSocket, with the same surface as the demo's speaking :class:`~..demo.caller.Caller`
(lines said, events heard, each with its time on the eval's timeline)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from ..demo.caller import Timeline, narrate, wait_until


@dataclass
class TextCaller:
    url: str
    timeline: Timeline
    t0: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_at: list[float] = field(default_factory=list)
    lines: list[tuple[float, float, str]] = field(default_factory=list)
    #: Typed calls carry no audio: nothing is heard but events.
    heard: list[tuple[float, bytes]] = field(default_factory=list)
    _ws: ClientConnection | None = None
    _last_said: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self, script: Callable[[TextCaller], Awaitable[None]]) -> None:
        async with connect(self.url) as ws, asyncio.TaskGroup() as group:
            self._ws = ws
            play = group.create_task(self._play(script, ws))
            await self._listen(ws)
            play.cancel()

    async def _play(self, script: Callable[[TextCaller], Awaitable[None]], ws: Any) -> None:
        await script(self)
        self.timeline(self.now(), "caller", "hangs up")
        await ws.send(json.dumps({"type": "end-call"}))

    async def say(self, text: str) -> None:
        assert self._ws is not None
        at = self.now()
        self.timeline(at, "caller", f'types "{text}"')
        await self._ws.send(json.dumps({"type": "user-message", "content": text}))
        self.lines.append((at, at, text))

    async def until(self, check: Callable[[], bool], *, within: float = 60.0) -> None:
        await wait_until(check, within=within, every=0.02)

    def quiet_for(self) -> float:
        """Seconds since the assistant last said anything."""
        return self.now() - self._last_said

    async def _listen(self, ws: ClientConnection) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            at = self.now()
            self.events.append(event)
            self.event_at.append(at)
            narrate(self.timeline, at, event)
            if event.get("role") == "assistant" or event.get("type") == "model-output":
                self._last_said = at
