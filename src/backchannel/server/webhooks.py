"""Outgoing webhooks: signed per Standard Webhooks, and the tool-calls webhook of server tools.

Every request carries ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
(HMAC-SHA256 over ``id.timestamp.body`` with the server's ``whsec_`` secret, through the
``standardwebhooks`` library), plus the assistant's or tool's static headers, so
``X-Vapi-Secret`` setups keep working.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError
from standardwebhooks import Webhook

from ..errors import ProviderError
from ..results import ToolResult, ToolResultPayload
from ..tools.executors import Invocation
from ..tools.vapi import tool_call_item, tool_with_tool_call
from .urls import check_webhook_url


class WebhookSender:
    def __init__(self, secret: str, *, allow_private: bool, http: httpx.AsyncClient | None = None):
        self.signer = Webhook(secret)
        self.allow_private = allow_private
        self.http = http or httpx.AsyncClient(follow_redirects=False)

    async def close(self) -> None:
        await self.http.aclose()

    def signed_headers(
        self, body: str, extra: Mapping[str, str] = {}, *, message_id: str | None = None
    ) -> dict[str, str]:
        """Standard Webhooks headers; ``message_id`` is the ``webhook-id`` (the same on
        every retry of one event), new when not given."""
        msg_id = message_id or f"msg_{uuid.uuid4().hex}"
        now = datetime.now(tz=UTC)
        return {
            **extra,
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(msg_id, now, body),
        }

    async def post(
        self,
        url: str,
        body: str,
        headers: Mapping[str, str],
        *,
        limit: float,
        message_id: str | None = None,
    ) -> httpx.Response:
        """POST a signed body; ``limit`` seconds for the whole exchange (a receiver that
        trickles its answer is cut off too)."""
        await check_webhook_url(url, allow_private=self.allow_private)
        signed = self.signed_headers(body, headers, message_id=message_id)
        async with asyncio.timeout(limit):
            return await self.http.post(url, content=body.encode(), headers=signed, timeout=limit)


def tool_calls_message(invocation: Invocation, call: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tool-calls`` webhook body, as Vapi sends it (one tool call per request)."""
    spec, arguments = invocation.spec, dict(invocation.arguments)
    return {
        "message": {
            "type": "tool-calls",
            "timestamp": int(datetime.now(tz=UTC).timestamp() * 1000),
            "toolCallList": [tool_call_item(invocation.tool_call_id, spec, arguments)],
            "toolWithToolCallList": [tool_with_tool_call(invocation.tool_call_id, spec, arguments)],
            "call": dict(call),
        }
    }


def parse_tool_reply(invocation: Invocation, status: int, raw: bytes) -> list[ToolResult]:
    """Read a tool server's reply to ``tool-calls``, forgiving what Vapi users send.

    ``{"results": [...]}`` is the contract; a single object instead of a list, a
    non-string ``result``, and a missing ``toolCallId`` (there is only one call) are
    accepted. An empty reply means "later" for an async tool and is an error for a sync
    one. Anything else is refused with a ``ProviderError`` whose message says what was
    wrong, so the call records a clear failure rather than "No result returned".
    """
    if not 200 <= status < 300:
        raise ProviderError(
            f"tool server answered HTTP {status}: {raw[:200]!r}", code="tool_server_error"
        )
    text = raw.decode("utf-8", errors="replace").strip()
    data: Any = {}
    if text:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProviderError(
                f"tool server reply is not JSON: {text[:200]!r}", code="invalid_tool_reply"
            ) from exc
    if not isinstance(data, dict):
        raise ProviderError(
            f"tool server reply must be an object with 'results', got {type(data).__name__}",
            code="invalid_tool_reply",
        )
    if data.get("error") and not data.get("results"):
        return [ToolResult(invocation.tool_call_id, error=str(data["error"]))]
    results = data.get("results", [])
    if isinstance(results, dict):
        results = [results]
    if not isinstance(results, list):
        raise ProviderError("'results' must be a list of results", code="invalid_tool_reply")
    if not results:
        if invocation.spec.is_async:
            return []
        raise ProviderError(
            "tool server returned no result for a sync tool", code="empty_tool_reply"
        )
    out: list[ToolResult] = []
    for item in results:
        if isinstance(item, dict) and "toolCallId" not in item and len(results) == 1:
            item = {**item, "toolCallId": invocation.tool_call_id}
        try:
            parsed = ToolResultPayload.model_validate(item).to_result()
        except ValidationError as exc:
            raise ProviderError(
                f"tool server result is malformed: {exc.errors(include_url=False)}",
                code="invalid_tool_reply",
            ) from exc
        if parsed.tool_call_id == invocation.tool_call_id:
            out.append(parsed)
    if not out and not invocation.spec.is_async:
        raise ProviderError(
            f"tool server reply has no result for toolCallId {invocation.tool_call_id!r}",
            code="invalid_tool_reply",
        )
    return out


class WebhookToolServer:
    """The :class:`~backchannel.tools.executors.ToolServer` that really POSTs."""

    def __init__(
        self,
        sender: WebhookSender,
        *,
        reply_limit: float,
        call_context: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        """``call_context`` adds to the webhook's ``call`` object (the control URL a
        tool server answers on later)."""
        self.sender = sender
        self.reply_limit = reply_limit
        self.call_context = call_context

    async def call(self, invocation: Invocation) -> Sequence[ToolResult]:
        server = invocation.spec.server
        if server is None:
            raise ProviderError("the tool has no server URL", code="tool_server_unavailable")
        call = dict(invocation.call or {"id": invocation.call_id})
        if self.call_context is not None:
            call.update(self.call_context(invocation.call_id))
        body = json.dumps(tool_calls_message(invocation, call))
        headers = dict(server.headers)
        if server.secret:
            headers.setdefault("X-Vapi-Secret", server.secret)
        # The model stops waiting at the tool's timeout; the request stays open longer,
        # so a slow reply is still recorded (late) instead of being lost.
        limit = max(server.timeout_seconds, invocation.spec.timeout_seconds, self.reply_limit)
        try:
            response = await self.sender.post(server.url, body, headers, limit=limit)
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"tool server did not answer within {limit:g} s", code="tool_server_timeout"
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"tool server unreachable: {exc}", code="tool_server_error"
            ) from exc
        return parse_tool_reply(invocation, response.status_code, response.content)
