"""A Python client for a backchannel server, and what a tool server needs.

Resolving a tool call later, from any backend, is one line::

    await Client(url, token=call_token).submit_result(call_id, tool_call_id, {"status": "shipped"})

For tool servers, :func:`verify_webhook` checks our Standard Webhooks signature and
:func:`parse_tool_calls` reads a ``tool-calls`` message the way Vapi's docs show.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from standardwebhooks import Webhook
from standardwebhooks.exceptions import WebhookVerificationError

from .errors import (
    BackchannelError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ProviderError,
    Unauthorized,
)

_BY_STATUS: dict[int, type[BackchannelError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
    502: ProviderError,
}


class Client:
    """Talks to one backchannel server with the API key or one call's token."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        credential = token or api_key
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        self.http = http or httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, json: Any = None) -> Any:
        response = await self.http.request(method, path, json=json)
        if response.status_code >= 400:
            raise _error(response)
        return None if response.status_code == 204 else response.json()

    # -- assistants ------------------------------------------------------------------

    async def create_assistant(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "/assistants", dict(config))  # type: ignore[no-any-return]

    async def get_assistant(self, assistant_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/assistants/{assistant_id}")  # type: ignore[no-any-return]

    async def list_assistants(self) -> list[dict[str, Any]]:
        return await self._request("GET", "/assistants")  # type: ignore[no-any-return]

    async def update_assistant(
        self, assistant_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._request("PATCH", f"/assistants/{assistant_id}", dict(changes))  # type: ignore[no-any-return]

    async def delete_assistant(self, assistant_id: str) -> None:
        await self._request("DELETE", f"/assistants/{assistant_id}")

    # -- calls -----------------------------------------------------------------------

    async def create_call(
        self,
        *,
        assistant_id: str | None = None,
        assistant: Mapping[str, Any] | None = None,
        type: str = "text",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type}
        if assistant_id is not None:
            body["assistantId"] = assistant_id
        if assistant is not None:
            body["assistant"] = dict(assistant)
        return await self._request("POST", "/calls", body)  # type: ignore[no-any-return]

    async def get_call(self, call_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/calls/{call_id}")  # type: ignore[no-any-return]

    async def end_call(self, call_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/calls/{call_id}/end")  # type: ignore[no-any-return]

    async def submit_result(
        self,
        call_id: str,
        tool_call_id: str,
        result: Any = None,
        *,
        error: str | None = None,
        message: str | None = None,
        delivery: str | None = None,
        will_continue: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Deliver one tool call's result (or progress, with ``will_continue``).

        Answers ``{"duplicate": true, ...}`` for a repeat of the same result; a different
        result for a resolved call raises :class:`~backchannel.errors.Conflict`.
        """
        body: dict[str, Any] = {"result": result, "willContinue": will_continue}
        for key, value in (
            ("error", error),
            ("message", message),
            ("delivery", delivery),
            ("metadata", metadata),
        ):
            if value is not None:
                body[key] = value
        if error is not None:
            body.pop("result")
        return await self._request(  # type: ignore[no-any-return]
            "POST", f"/calls/{call_id}/tool-calls/{tool_call_id}/result", body
        )

    async def control(self, call_id: str, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send one control-URL message (``say``, ``add-message``, ``end-call``, …)."""
        return await self._request("POST", f"/calls/{call_id}/control", dict(message))  # type: ignore[no-any-return]

    async def say(
        self, call_id: str, content: str, *, end_call_after: bool = False
    ) -> dict[str, Any]:
        return await self.control(
            call_id, {"type": "say", "content": content, "endCallAfterSpoken": end_call_after}
        )


def _error(response: httpx.Response) -> BackchannelError:
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
        details = body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text[:200], {}
    cls = _BY_STATUS.get(response.status_code, BackchannelError)
    error = cls(message, code=code, **details)
    error.status = response.status_code
    return error


# -- for tool servers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    #: The call it belongs to, and the URL and token to answer it on later.
    call_id: str | None = None
    control_url: str | None = None
    call_token: str | None = None


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
    """Check a backchannel webhook's signature and age; the parsed body, or ``Forbidden``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        data = Webhook(secret).verify(body, lowered)
    except WebhookVerificationError as exc:
        raise Forbidden(f"webhook signature check failed: {exc}", code="invalid_signature") from exc
    return data  # type: ignore[no-any-return]


def parse_tool_calls(payload: Mapping[str, Any]) -> list[ToolCall]:
    """The calls in a ``tool-calls`` message (Vapi's ``message.toolCallList``)."""
    message = payload.get("message", payload)
    if message.get("type") != "tool-calls":
        raise InvalidInput("not a tool-calls message", code="not_tool_calls")
    call = message.get("call") or {}
    control_url = (call.get("monitor") or {}).get("controlUrl")
    token = None
    if control_url:
        token = (parse_qs(urlsplit(control_url).query).get("token") or [None])[0]
    calls = []
    for item in message.get("toolCallList", []):
        function = item.get("function") or {}
        arguments = item.get("arguments") or function.get("arguments") or {}
        if isinstance(arguments, str):  # OpenAI's form: a JSON string
            arguments = json.loads(arguments or "{}")
        calls.append(
            ToolCall(
                id=str(item["id"]),
                name=str(item.get("name") or function.get("name")),
                arguments=dict(arguments),
                call_id=call.get("id"),
                control_url=control_url,
                call_token=token,
            )
        )
    return calls


def results(*items: Mapping[str, Any]) -> dict[str, Any]:
    """A reply to ``tool-calls``: ``{"results": [...]}``."""
    return {"results": [dict(i) for i in items]}
