"""Who may do what: the API key for management, a call's token for that call only."""

from __future__ import annotations

import hmac

from fastapi import Request

from ..errors import Unauthorized


def presented(request: Request, *, query: bool = False) -> str | None:
    """The credential a request carries: ``Authorization: Bearer …`` or ``X-API-Key``;
    with ``query``, also ``?token=`` (a call's control URL as handed to tool servers)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    key = request.headers.get("x-api-key")
    if key is None and query:
        return request.query_params.get("token")
    return key


def is_api_key(request: Request, api_key: str) -> bool:
    token = presented(request)
    return token is not None and hmac.compare_digest(token.encode(), api_key.encode())


def require_api_key(request: Request, api_key: str) -> None:
    if not is_api_key(request, api_key):
        raise Unauthorized("this route needs the API key", code="unauthorized")
