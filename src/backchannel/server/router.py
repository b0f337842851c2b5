"""Messages between instances: "a result for your call is in the ledger", "apply this
control message", and the answers.

Each instance reads one inbox; others append to it. :class:`RedisRouter` keeps each
inbox as a Redis *stream*, not a pub/sub channel:

- Pub/sub delivers only to a subscriber connected at that moment; a reader whose
  connection blips loses what was published meanwhile. A stream keeps entries, and the
  reader resumes from the last id it handled.
- A stream is one ordered log, so the messages for one call reach its owner in the
  order they were sent, which keeps a call's results in order.
- One reader per stream (the owner) needs no consumer group. Delivery is at least
  once; the owner applies each message once because what it applies is checked against
  the database (the ledger record's state, a control row it must claim).

Answers to a control message go back on a short-lived list that the sender waits on
with ``BLPOP``. :class:`MemoryRouter` does the same within one process, for tests of
the routing rules without Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .episode import Episode

log = logging.getLogger("backchannel.router")

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None]]

#: Entries kept per inbox at most (approximately); a live owner reads them in ms.
INBOX_LENGTH = 10_000
#: An answer nobody collects is dropped after this long.
ANSWER_TTL_SECONDS = 60


class Router(Protocol):
    async def send(self, instance_id: str, message: Message) -> None:
        """Append ``message`` to the instance's inbox."""

    async def serve(self, instance_id: str, handle: Handler) -> None:
        """Hand each message of this instance's inbox to ``handle``, in order, until
        cancelled. Messages left from an earlier run under the same id are dropped."""

    async def answer(self, reply_id: str, answer: Message) -> None: ...

    async def wait_answer(self, reply_id: str, within: float) -> Message | None:
        """The answer to ``reply_id``, or ``None`` after ``within`` seconds."""

    async def aclose(self) -> None: ...


async def _handled(handle: Handler, message: Message) -> None:
    try:
        await handle(message)
    except Exception:
        log.exception("routed message %s failed", message.get("kind"))


def _still_cancelled(exc: BaseException) -> None:
    """Re-raise a cancellation that the client turned into a connection error (a blocking
    read cut by ``cancel()``), so the reader stops instead of retrying forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class RedisRouter:
    """Inboxes on Redis streams. Redis may go away and come back: a command is tried
    again on a fresh connection (a pooled one may have died with the old server), sends
    give up after ``send_limit`` seconds with a ``RedisError``/``TimeoutError`` for the
    caller to handle, and the reader reconnects by itself, logging once per outage."""

    def __init__(self, url: str, *, prefix: str = "backchannel", send_limit: float = 2.0) -> None:
        self.redis: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_keepalive=True,
            health_check_interval=15,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self.prefix = prefix
        self.send_limit = send_limit

    def _inbox(self, instance_id: str) -> str:
        return f"{self.prefix}:inbox:{instance_id}"

    def _answer(self, reply_id: str) -> str:
        return f"{self.prefix}:answer:{reply_id}"

    async def ping(self) -> None:
        await self.redis.ping()

    async def send(self, instance_id: str, message: Message) -> None:
        async with asyncio.timeout(self.send_limit):
            await self.redis.xadd(
                self._inbox(instance_id),
                {"m": json.dumps(message)},
                maxlen=INBOX_LENGTH,
                approximate=True,
            )

    async def serve(self, instance_id: str, handle: Handler) -> None:
        inbox = self._inbox(instance_id)
        await self.redis.delete(inbox)
        last = "0-0"
        outage = Episode(log, "reading the inbox")
        while True:
            try:
                batches: Any = await self.redis.xread({inbox: last}, count=256, block=5_000)
            except (RedisError, OSError) as exc:
                _still_cancelled(exc)
                if not isinstance(exc, RedisTimeoutError | TimeoutError):
                    outage.failed(exc)  # a quiet inbox timing out is routine, not a fault
                await asyncio.sleep(1.0)
                continue
            outage.succeeded()
            handled = []
            for _stream, entries in batches or ():
                for entry_id, fields in entries:
                    last = entry_id
                    handled.append(entry_id)
                    await _handled(handle, json.loads(fields["m"]))
            if handled:
                try:
                    await self.redis.xdel(inbox, *handled)
                except (RedisError, OSError) as exc:
                    _still_cancelled(exc)
                    log.warning("could not trim the inbox: %s", exc)

    async def answer(self, reply_id: str, answer: Message) -> None:
        key = self._answer(reply_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(answer))
            pipe.expire(key, ANSWER_TTL_SECONDS)
            await pipe.execute()

    async def wait_answer(self, reply_id: str, within: float) -> Message | None:
        async with asyncio.timeout(within + self.send_limit):
            popped = await self.redis.blpop([self._answer(reply_id)], timeout=within)
        if popped is None:
            return None
        answer: Message = json.loads(popped[1])
        return answer

    async def aclose(self) -> None:
        await self.redis.aclose()


@dataclass
class MemoryBus:
    """What instances in one process share: their inboxes and the pending answers."""

    inboxes: dict[str, asyncio.Queue[Message]] = field(default_factory=dict)
    answers: dict[str, asyncio.Queue[Message]] = field(default_factory=dict)

    def answers_for(self, reply_id: str) -> asyncio.Queue[Message]:
        return self.answers.setdefault(reply_id, asyncio.Queue())


class MemoryRouter:
    """Inboxes and answers in one process; instances that talk share one bus."""

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self.bus = bus or MemoryBus()

    async def send(self, instance_id: str, message: Message) -> None:
        # A copy through JSON, as on the wire: nothing shared by reference.
        inbox = self.bus.inboxes.setdefault(instance_id, asyncio.Queue())
        inbox.put_nowait(json.loads(json.dumps(message)))

    async def serve(self, instance_id: str, handle: Handler) -> None:
        inbox = self.bus.inboxes[instance_id] = asyncio.Queue()
        while True:
            await _handled(handle, await inbox.get())

    async def answer(self, reply_id: str, answer: Message) -> None:
        self.bus.answers_for(reply_id).put_nowait(answer)

    async def wait_answer(self, reply_id: str, within: float) -> Message | None:
        try:
            async with asyncio.timeout(within):
                return await self.bus.answers_for(reply_id).get()
        except TimeoutError:
            return None
        finally:
            self.bus.answers.pop(reply_id, None)

    async def aclose(self) -> None:
        return None
