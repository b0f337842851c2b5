"""Routers: an instance's inbox keeps order and survives a reader that starts late;
answers reach the one sender waiting; no answer in time is ``None``. The same checks
run on Redis streams and in memory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from backchannel.server.router import MemoryRouter, Message, RedisRouter, Router

from .peers import REDIS_URL

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "redis", marks=pytest.mark.skipif(REDIS_URL is None, reason="no Redis configured")
        ),
    ]
)
async def routers(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Router, Router]]:
    """Two instances' routers that can reach each other."""
    if request.param == "memory":
        a = MemoryRouter()
        yield a, MemoryRouter(a.bus)
        return
    assert REDIS_URL is not None
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    a_redis, b_redis = RedisRouter(REDIS_URL, prefix=prefix), RedisRouter(REDIS_URL, prefix=prefix)
    yield a_redis, b_redis
    await a_redis.aclose()
    await b_redis.aclose()


async def test_messages_arrive_in_order_and_answers_find_their_sender(
    routers: tuple[Router, Router],
) -> None:
    a, b = routers
    got: list[Message] = []
    arrived = asyncio.Event()

    async def handle(message: Message) -> None:
        got.append(message)
        if message.get("ask"):
            await a.answer(message["ask"], {"ok": message["n"]})
        if len(got) == 100:
            arrived.set()

    async with asyncio.TaskGroup() as tg:
        reader = tg.create_task(a.serve("a", handle))
        await asyncio.sleep(0.2)  # the reader has started (and cleared any old inbox)
        for n in range(99):
            await b.send("a", {"kind": "result", "n": n})
        await b.send("a", {"kind": "control", "n": 99, "ask": "q1"})
        assert await b.wait_answer("q1", 5) == {"ok": 99}
        await asyncio.wait_for(arrived.wait(), 5)
        assert [m["n"] for m in got] == list(range(100))
        assert await b.wait_answer("nobody-answers", 0.2) is None
        reader.cancel()


async def test_a_handler_that_fails_does_not_stop_the_inbox(
    routers: tuple[Router, Router],
) -> None:
    a, b = routers
    got: list[int] = []

    async def handle(message: Message) -> None:
        if message["n"] == 0:
            raise RuntimeError("broken handler")
        got.append(message["n"])

    async with asyncio.TaskGroup() as tg:
        reader = tg.create_task(a.serve("a", handle))
        await asyncio.sleep(0.2)
        for n in range(3):
            await b.send("a", {"n": n})
        for _ in range(100):
            if got == [1, 2]:
                break
            await asyncio.sleep(0.05)
        assert got == [1, 2]
        reader.cancel()
