"""Time as a dependency.

Every timer in backchannel (tool timeouts, ``request-response-delayed`` messages, fake
speech playback) goes through a :class:`Clock`, so tests drive races by moving a
:class:`ManualClock` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for timers and wall time for records."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for timestamps users read."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


def iso_time(at: float) -> str:
    """A wall time as ISO 8601 in UTC (``…Z``), as Vapi writes timestamps."""
    return datetime.fromtimestamp(at, tz=UTC).isoformat().replace("+00:00", "Z")


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that only moves when told to.

    Sleepers wake in deadline order (ties in the order they went to sleep) as
    :meth:`advance` passes their deadlines, and the event loop gets to run everything a
    wake-up makes ready before the next sleeper is woken. That makes every interleaving of
    timers reproducible.
    """

    def __init__(self, start: float = 0.0, epoch: float = 1_767_225_600.0) -> None:
        self._now = start
        self._epoch = epoch
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._epoch + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def next_deadline(self) -> float | None:
        """When the earliest live sleeper wakes, or ``None`` with nobody asleep."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline is passed, in order."""
        target = self._now + seconds
        await settle()
        while (deadline := self.next_deadline) is not None and deadline <= target:
            _, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await settle()
        self._now = target
        await settle()


async def settle(rounds: int = 64) -> None:
    """Let every task that is ready run until the loop has nothing left to do right now.

    Only meaningful for code that waits on the event loop alone (the in-memory ledger,
    a :class:`ManualClock`); work in threads is not waited for.
    """
    for _ in range(rounds):
        await asyncio.sleep(0)
