"""An asyncio lock per event loop, for a model object that outlives its loop.

A loaded model (Whisper, Piper) is expensive, so one object serves every call, and may
serve more than one event loop over its life (tests, a restarted server). An
``asyncio.Lock`` belongs to the loop it was first contended on, and a lock left held by
a task whose loop closed would refuse every later caller; so each loop gets its own.
"""

from __future__ import annotations

import asyncio
import weakref


class LoopLock:
    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> asyncio.Lock:
        """The running loop's lock."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock
