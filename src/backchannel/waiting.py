"""Waiting for one result against an injectable clock, with a "still working" cue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from .clock import Clock

T = TypeVar("T")


async def wait_for_result(
    fut: asyncio.Future[T],
    clock: Clock,
    limit: float,
    *,
    delay: float | None = None,
    on_delay: Callable[[], object] = lambda: None,
) -> T | None:
    """The future's value, or ``None`` once ``limit`` seconds pass on ``clock``.

    ``on_delay`` runs once, ``delay`` seconds in, if the value has not come by then. The
    future itself is never cancelled here: a result that comes after the limit still
    lands where its sender put it.
    """
    start = clock.monotonic()
    deadline = start + limit
    cue_at = start + delay if delay is not None and delay < limit else None
    while not fut.done():
        now = clock.monotonic()
        if cue_at is not None and now >= cue_at:
            cue_at = None
            on_delay()
            continue
        if now >= deadline:
            return None
        wake_at = min(deadline, cue_at) if cue_at is not None else deadline
        timer: asyncio.Future[None] = asyncio.ensure_future(clock.sleep(wake_at - now))
        waitables: set[asyncio.Future[Any]] = {fut, timer}
        try:
            await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
    return fut.result()
