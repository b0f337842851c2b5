"""The demo's tool server: an order desk whose lookup is slow, written the way a Vapi
user writes one, with nothing but :mod:`backchannel.client`.

It answers the ``tool-calls`` webhook at once with an empty ``results`` list (for an
async tool that means "later"), looks the order up in the background, and posts the
result to the call's result endpoint when it has it, seconds later.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ..client import ToolCall
from .tool_backend import Later, tool_backend

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
    async def answer(calls: list[ToolCall], later: Later) -> list[dict[str, Any]]:
        for call in calls:
            order_id = str(call.arguments.get("order_id") or call.arguments.get("orderId", ""))
            # The warehouse takes its time.
            later.post(lookup_seconds, call, order_lookup(order_id))
        return []  # nothing yet: the results follow when the lookups finish

    title = "order desk (backchannel demo tool server)"
    return tool_backend(title, backchannel_url, api_key, webhook_secret, answer)
