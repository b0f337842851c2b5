"""A running call's link to its client, which may drop and come back.

What goes to the client — JSON events and, on web calls, audio frames — waits in one
:class:`Outbound` queue that outlives any one socket. A socket's sender takes items
from it and removes each only once it was sent, so an item a dying socket could not
send goes to the next one. Events pass through :class:`ClientSink`, which shows the
client an event that also goes to the server URL only once the outbox has stored it.

:class:`ClientLink` holds the socket now attached. When it drops without a clean close,
the call holds the floor (nothing is said to nobody) for a grace period; a client that
reconnects with its token within it gets what was queued meanwhile, and the call goes
on. Audio produced while nobody listens is dropped rather than replayed late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..clock import Clock, SystemClock
from ..events import OPT_IN_EVENT_TYPES, Event

log = logging.getLogger("backchannel.socket")

Item = dict[str, Any] | bytes | None


class Outbound:
    """What goes to the client, in order; ``None`` ends it."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()

    def put_nowait(self, item: Item) -> None:
        self._items.append(item)
        self._ready.set()

    async def peek(self) -> Item:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items[0]

    def pop(self) -> None:
        self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class ClientSink:
    """Queues the events the client asked for, each once it is durable.

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
        # Errors always reach the client, whatever its ``clientMessages`` list; without
        # a list, every event but those only sent on request.
        if self.types is None:
            wanted = event.type not in OPT_IN_EVENT_TYPES
        else:
            wanted = event.type in self.types or event.type == "error"
        if wanted:
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


class ClientLink:
    """The socket a call's client is attached through, if any."""

    def __init__(self, queue: Outbound, socket: WebSocket, clock: Clock | None = None) -> None:
        self.queue = queue
        self.socket: WebSocket | None = socket
        self.clock = clock or SystemClock()
        self._attached = asyncio.Event()
        self._attached.set()
        #: Set when the call is done with the socket a reconnecting handler gave it.
        self._released: dict[int, asyncio.Event] = {}

    @property
    def attached(self) -> bool:
        return self.socket is not None

    def send_audio(self, item: Item) -> None:
        """Audio (and its ``clear``) only while someone listens."""
        if self.socket is not None:
            self.queue.put_nowait(item)

    def detach(self) -> None:
        if self.socket is not None:
            self.release(self.socket)
        self.socket = None
        self._attached.clear()

    def attach(self, socket: WebSocket) -> asyncio.Event:
        """Hand the call a new socket; the event is set once the call is done with it."""
        done = asyncio.Event()
        self._released[id(socket)] = done
        self.socket = socket
        self._attached.set()
        return done

    def release(self, socket: WebSocket) -> None:
        done = self._released.pop(id(socket), None)
        if done is not None:
            done.set()

    def release_all(self) -> None:
        """The call is over: every handler waiting on a socket it gave may return."""
        for done in self._released.values():
            done.set()
        self._released.clear()

    async def wait_attached(self, within: float, ended: asyncio.Event) -> bool:
        """Whether a client attached within ``within`` seconds (and the call still runs)."""
        waits = [
            asyncio.ensure_future(self._attached.wait()),
            asyncio.ensure_future(ended.wait()),
            asyncio.ensure_future(self.clock.sleep(within)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self._attached.is_set() and not ended.is_set()


async def send_out(ws: WebSocket, queue: Outbound) -> bool:
    """Send queued items until ``None``: ``True`` then, ``False`` if the socket failed
    (the item it could not send stays first in line)."""
    while (item := await queue.peek()) is not None:
        try:
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_text(json.dumps(item, default=str))
        except (WebSocketDisconnect, RuntimeError, OSError):
            log.debug("client socket went away with %d items queued", len(queue))
            return False
        queue.pop()
    return True


async def close_quietly(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await ws.close(code=code, reason=reason)
