"""The eval's tool server: answers each tool as the eval file's ``tools`` plan says.

A plan with ``after: 0`` is answered in the webhook's reply. Otherwise an async tool's
webhook is answered at once with no results ("later") and its result posted through
the API ``after`` seconds on, the way a Vapi user's backend does; a sync tool's reply
itself comes that late (the caller hears its ``request-response-delayed`` line).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from ..client import Client, ToolCall, parse_tool_calls, results, verify_webhook
from .spec import ToolPlan


def eval_tools(
    plans: Mapping[str, ToolPlan],
    async_tools: Collection[str],
    *,
    backchannel_url: str,
    api_key: str,
    webhook_secret: str,
) -> FastAPI:
    later: list[asyncio.TaskGroup] = []
    owed: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            Client(backchannel_url, api_key=api_key) as client,
            asyncio.TaskGroup() as group,
        ):
            app.state.client = client
            later.append(group)
            yield
            for task in owed:  # the call is over: results still owed are moot
                task.cancel()

    app = FastAPI(title="backchannel eval tool server", lifespan=lifespan)

    async def post_later(client: Client, call: ToolCall, plan: ToolPlan) -> None:
        await asyncio.sleep(plan.after)
        assert call.call_id is not None
        await client.submit_result(
            call.call_id,
            call.id,
            plan.result,
            error=plan.error,
            message=plan.message,
            delivery=plan.delivery,
        )

    @app.post("/tools")
    async def tools(request: Request) -> dict[str, Any]:
        try:
            payload = verify_webhook(webhook_secret, await request.body(), dict(request.headers))
        except Exception as exc:
            raise HTTPException(401, "bad signature") from exc
        answers: list[dict[str, Any]] = []
        for call in parse_tool_calls(payload):
            plan = plans.get(call.name)
            if plan is None:
                answers.append({"toolCallId": call.id, "error": f"no plan for {call.name}"})
            elif call.name in async_tools and plan.result is None and plan.error is None:
                continue  # acknowledged: the eval's ``result`` steps answer it
            elif plan.after > 0 and call.name in async_tools:
                task = later[0].create_task(post_later(request.app.state.client, call, plan))
                owed.add(task)
                task.add_done_callback(owed.discard)
            else:
                await asyncio.sleep(plan.after)
                answers.append(_answer(call, plan))
        return results(*answers)

    return app


def _answer(call: ToolCall, plan: ToolPlan) -> dict[str, Any]:
    answer: dict[str, Any] = {"toolCallId": call.id, "name": call.name}
    if plan.error is not None:
        answer["error"] = plan.error
    else:
        answer["result"] = plan.result
    for key, value in (("message", plan.message), ("delivery", plan.delivery)):
        if value is not None:
            answer[key] = value
    return answer
