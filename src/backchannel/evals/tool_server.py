"""The eval's tool server: answers each tool as the eval file's ``tools`` plan says.

A plan with ``after: 0`` is answered in the webhook's reply. Otherwise an async tool's
webhook is answered at once with no results ("later") and its result posted through
the API ``after`` seconds on, the way a Vapi user's backend does; a sync tool's reply
itself comes that late (the caller hears its ``request-response-delayed`` line).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import FastAPI

from ..client import ToolCall
from ..demo.tool_backend import Later, tool_backend
from .spec import ToolPlan


def eval_tools(
    plans: Mapping[str, ToolPlan],
    async_tools: Collection[str],
    *,
    backchannel_url: str,
    api_key: str,
    webhook_secret: str,
) -> FastAPI:
    async def answer(calls: list[ToolCall], later: Later) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        for call in calls:
            plan = plans.get(call.name)
            if plan is None:
                answers.append({"toolCallId": call.id, "error": f"no plan for {call.name}"})
            elif call.name in async_tools and plan.result is None and plan.error is None:
                continue  # acknowledged: the eval's ``result`` steps answer it
            elif plan.after > 0 and call.name in async_tools:
                fields = {"error": plan.error, "message": plan.message, "delivery": plan.delivery}
                later.post(plan.after, call, plan.result, **fields)
            else:
                await asyncio.sleep(plan.after)
                answers.append(_answer(call, plan))
        return answers

    title = "backchannel eval tool server"
    return tool_backend(title, backchannel_url, api_key, webhook_secret, answer)


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
