"""The demo's tool server: an order desk whose lookup is slow, written the way a Vapi
user writes one, with nothing but :mod:`backchannel.client`.

It answers the ``tool-calls`` webhook at once with an empty ``results`` list (for an
async tool that means "later"), looks the order up in the background, and posts the
result to the call's result endpoint when it has it, seconds later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from ..client import Client, parse_tool_calls, results, verify_webhook

ORDERS = {"5521": {"status": "delivered", "eta": "yesterday"}}
IN_TRANSIT = {"status": "out for delivery", "eta": "this afternoon"}


def order_lookup(order_id: str) -> dict[str, Any]:
    """Every order with a number is on its way, except the ones in ``ORDERS``."""
    digits = "".join(c for c in order_id if c.isdigit())
    if not digits:
        return {"orderId": order_id, "status": "not found"}
    return {"orderId": digits, **ORDERS.get(digits, IN_TRANSIT)}


def order_desk(
    backchannel_url: str, api_key: str, webhook_secret: str, *, lookup_seconds: float
) -> FastAPI:
    lookups: list[asyncio.TaskGroup] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            Client(backchannel_url, api_key=api_key) as client,
            asyncio.TaskGroup() as group,
        ):
            app.state.client = client
            lookups.append(group)
            yield

    app = FastAPI(title="order desk (backchannel demo tool server)", lifespan=lifespan)

    async def look_up(client: Client, call_id: str, tool_call_id: str, order_id: str) -> None:
        await asyncio.sleep(lookup_seconds)  # the warehouse takes its time
        await client.submit_result(call_id, tool_call_id, order_lookup(order_id))

    @app.post("/tools")
    async def tools(request: Request) -> dict[str, Any]:
        try:
            payload = verify_webhook(webhook_secret, await request.body(), dict(request.headers))
        except Exception as exc:
            raise HTTPException(401, "bad signature") from exc
        call_id = str(payload["message"]["call"]["id"])
        for call in parse_tool_calls(payload):
            order_id = str(call.arguments.get("order_id") or call.arguments.get("orderId", ""))
            lookups[0].create_task(look_up(request.app.state.client, call_id, call.id, order_id))
        return results()  # nothing yet: the results follow when the lookups finish

    return app
