"""Waiting for one result against an injectable clock, with a "still working" cue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from .clock import Clock

T = TypeVar("T")


async def wait_for_result(
    fut: asyncio.Future[T],
    clock: Clock,
    timeout: float,
    *,
    delay: float | None = None,
    on_delay: Callable[[], object] = lambda: None,
) -> T | None:
    """The future's value, or ``None`` once ``timeout`` passes on ``clock``.

    ``on_delay`` runs once, ``delay`` seconds in, if the value has not come by then. The
    future itself is never cancelled here: a result that comes after the timeout still
    lands where its sender put it.
    """
    start = clock.monotonic()
    deadline = start + timeout
    cue_at = start + delay if delay is not None and delay < timeout else None
    while not fut.done():
        now = clock.monotonic()
        if cue_at is not None and now >= cue_at:
            cue_at = None
            on_delay()
            continue
        if now >= deadline:
            return None
        wake_at = min(deadline, cue_at) if cue_at is not None else deadline
        timer = asyncio.ensure_future(clock.sleep(wake_at - now))
        try:
            await asyncio.wait([fut, timer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
    return fut.result()
