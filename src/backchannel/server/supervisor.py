"""Background workers that never take each other, or the server, down.

A :class:`Supervisor` runs each long-lived worker of an instance (the outbox's writer
and deliverer, heartbeats, the inbox reader, the owner's sweep, …) in its own task of
one task group. A worker that raises is logged once for the episode, restarted after a
capped exponential backoff, and counted; the others go on. A worker that has run
cleanly for a while is considered healthy again and its backoff starts over.

``status()`` reports each worker's state for ``/ready``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum

from ..clock import Clock, SystemClock
from ..telemetry.metrics import WORKER_RESTARTS

log = logging.getLogger("backchannel.supervisor")

Worker = Callable[[], Awaitable[None]]


class WorkerState(StrEnum):
    RUNNING = "running"
    #: It failed and waits to be restarted.
    BACKING_OFF = "backing-off"
    STOPPED = "stopped"


@dataclass(slots=True)
class _Record:
    name: str
    state: WorkerState = WorkerState.RUNNING


class Supervisor:
    """Runs workers until closed; restarts any that fail.

    ``first_backoff`` doubles per consecutive failure up to ``max_backoff``; a run that
    lasted ``healthy_after`` seconds resets it.
    """

    def __init__(
        self,
        *,
        first_backoff: float = 0.5,
        max_backoff: float = 10.0,
        healthy_after: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.clock = clock or SystemClock()
        self._workers: dict[str, _Record] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        """Own the workers' task group for the block; cancel every worker on exit."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                self._tg = None
                for record in self._workers.values():
                    record.state = WorkerState.STOPPED
                for task in self._tasks:
                    task.cancel()

    def start(self, name: str, worker: Worker) -> None:
        """Run ``worker`` (a coroutine function meant to run until cancelled) forever."""
        assert self._tg is not None, "start workers inside `running()`"
        self._workers[name] = _Record(name)
        self._tasks.append(self._tg.create_task(self._keep(self._workers[name], worker)))

    async def _keep(self, record: _Record, worker: Worker) -> None:
        failures = 0
        while True:
            started = self.clock.monotonic()
            record.state = WorkerState.RUNNING
            try:
                await worker()
                error = "it returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            WORKER_RESTARTS.labels(worker=record.name).inc()
            if self.clock.monotonic() - started >= self.healthy_after:
                failures = 0  # it had been healthy: a new episode
            if failures == 0:
                log.error("worker %s failed: %s; restarting", record.name, error)
            else:
                log.debug("worker %s failed again: %s", record.name, error)
            failures += 1
            record.state = WorkerState.BACKING_OFF
            delay = min(self.max_backoff, self.first_backoff * 2 ** (failures - 1))
            await self.clock.sleep(delay)
            if failures > 1:
                log.info("worker %s restarting (attempt %d)", record.name, failures)

    def status(self) -> dict[str, str]:
        """Each worker's state, by name."""
        return {name: r.state.value for name, r in self._workers.items()}
