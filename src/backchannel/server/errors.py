"""The last line of the HTTP edge: no request ever gets a bare 500.

Routes answer their own errors (a :class:`~backchannel.errors.BackchannelError` becomes
``{"error": {"code", "message"}}`` with its status). :class:`ErrorEnvelope` catches what
still escapes: a store that failed under the request answers ``503 store_unavailable``
(retry later; nothing half-done was acknowledged), Redis ``503 redis_unavailable``,
anything else ``500 internal_error``. Each such answer carries a request id, in the
body (``requestId``), the ``x-request-id`` header and the one log line written for it.
A WebSocket whose handler fails is closed and logged the same way, once; a client
that simply went away is not an error.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from ..errors import BackchannelError
from ..ledger.retry import is_store_error

log = logging.getLogger("backchannel.server")


def request_id() -> str:
    return f"req_{uuid.uuid4().hex[:20]}"


def classify(exc: BaseException) -> tuple[int, str, str]:
    """The status, code and message a request gets for an exception nobody handled."""
    if isinstance(exc, BackchannelError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, RecursionError):
        return 400, "invalid_body", "the body is nested too deeply"
    if isinstance(exc, RedisError):
        return 503, "redis_unavailable", "Redis is unavailable; retry later"
    if is_store_error(exc):
        return (
            503,
            "store_unavailable",
            "the store is unavailable; nothing was recorded, retry later",
        )
    return 500, "internal_error", "the server failed on this request"


def envelope(status: int, body: dict[str, Any], rid: str) -> JSONResponse:
    return JSONResponse(
        {"error": {**body, "requestId": rid}}, status_code=status, headers={"x-request-id": rid}
    )


class ErrorEnvelope:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            rid = request_id()
            status, code, message = classify(exc)
            where = f"{scope.get('method')} {scope.get('path')}"
            if status >= 500 and code == "internal_error":
                log.exception("%s failed [%s]", where, rid)
            else:
                log.warning("%s: %s (%s: %s) [%s]", where, code, type(exc).__name__, exc, rid)
            if started:
                return  # the answer is under way; nothing more can be said
            await envelope(status, {"code": code, "message": message}, rid)(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except (WebSocketDisconnect, OSError):
            log.debug("client socket %s went away", scope.get("path"))
        except Exception:
            log.exception("client socket %s failed [%s]", scope.get("path"), request_id())
