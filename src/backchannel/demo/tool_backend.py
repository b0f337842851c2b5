"""A tool server as a Vapi user writes one, with nothing but :mod:`backchannel.client`:
it checks each ``tool-calls`` webhook's signature, answers what it can in the reply, and
posts the rest through the call's result endpoint later. The demo's order desk and the
evals' tool server are two of these.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from ..client import Client, ToolCall, parse_tool_calls, results, verify_webhook


class Later:
    """Results posted after the webhook was answered, each in a task of the server's;
    those still owed when the server stops are dropped (their call is over)."""

    def __init__(self, client: Client, group: asyncio.TaskGroup) -> None:
        self.client = client
        self.group = group
        self.owed: set[asyncio.Task[None]] = set()

    def post(self, after: float, call: ToolCall, result: Any = None, **fields: Any) -> None:
        """Post ``call``'s result ``after`` seconds from now (``fields``: ``error``,
        ``message``, ``delivery``, as :meth:`Client.submit_result` takes them)."""
        task = self.group.create_task(self._post(after, call, result, fields))
        self.owed.add(task)
        task.add_done_callback(self.owed.discard)

    async def _post(self, after: float, call: ToolCall, result: Any, fields: Any) -> None:
        await asyncio.sleep(after)
        assert call.call_id is not None
        await self.client.submit_result(call.call_id, call.id, result, **fields)


#: Answers one webhook's calls: the results for its reply (an empty list: "later").
Answer = Callable[[list[ToolCall], Later], Awaitable[list[dict[str, Any]]]]


def tool_backend(
    title: str, backchannel_url: str, api_key: str, webhook_secret: str, answer: Answer
) -> FastAPI:
    """The server: ``POST /tools`` takes the signed webhook and replies what ``answer``
    gives."""
    later: list[Later] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with (
            Client(backchannel_url, api_key=api_key) as client,
            asyncio.TaskGroup() as group,
        ):
            later.append(Later(client, group))
            yield
            for task in later[0].owed:
                task.cancel()

    app = FastAPI(title=title, lifespan=lifespan)

    @app.post("/tools")
    async def tools(request: Request) -> dict[str, Any]:
        try:
            payload = verify_webhook(webhook_secret, await request.body(), dict(request.headers))
        except Exception as exc:
            raise HTTPException(401, "bad signature") from exc
        return results(*await answer(parse_tool_calls(payload), later[0]))

    return app
