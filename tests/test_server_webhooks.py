"""The tool-calls webhook body, and reading the replies tool servers really send."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from backchannel import (
    Delivery,
    Forbidden,
    InvalidInput,
    ProviderError,
    parse_tool_calls,
    results,
    verify_webhook,
)
from backchannel.server.webhooks import parse_tool_reply, tool_calls_message
from backchannel.tools.executors import Invocation
from backchannel.tools.spec import Route, ServerTarget, Spoken, ToolSpec

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def invocation(*, is_async: bool = False) -> Invocation:
    spec = ToolSpec(
        "check_order",
        "Check",
        {"type": "object"},
        Route.SERVER,
        is_async,
        Delivery.WHEN_IDLE,
        20,
        False,
        Spoken(),
        ServerTarget("https://tools.example.com/hook", 20),
    )
    return Invocation("call-1", "tc-1", spec, {"id": "42"})


def reply(data: object, status: int = 200) -> list[object]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return list(parse_tool_reply(invocation(), status, raw))


def test_tool_calls_body_reads_like_vapi_docs_and_parses_back() -> None:
    body = tool_calls_message(invocation(), {"id": "call-1"})
    message = body["message"]
    assert message["type"] == "tool-calls"
    assert message["toolCallList"][0]["id"] == "tc-1"
    assert message["toolCallList"][0]["arguments"] == {"id": "42"}
    assert message["toolWithToolCallList"][0]["toolCall"]["function"]["name"] == "check_order"
    (call,) = parse_tool_calls(body)
    assert (call.id, call.name, call.arguments) == ("tc-1", "check_order", {"id": "42"})


def test_replies_in_every_shape_users_send() -> None:
    (r,) = reply({"results": [{"toolCallId": "tc-1", "result": "ok"}]})
    assert r.result == "ok"  # type: ignore[attr-defined]
    (r,) = reply({"results": {"toolCallId": "tc-1", "result": {"a": 1}}})
    assert r.result == {"a": 1}, "an object instead of a list"  # type: ignore[attr-defined]
    (r,) = reply({"results": [{"result": 5}]})
    assert r.tool_call_id == "tc-1", "missing id with one call"  # type: ignore[attr-defined]
    (r,) = reply({"error": "warehouse down"})
    assert r.error == "warehouse down"  # type: ignore[attr-defined]
    assert list(parse_tool_reply(invocation(is_async=True), 200, b"")) == [], (
        "async: result comes later"
    )
    assert list(parse_tool_reply(invocation(is_async=True), 200, b'{"results": []}')) == []


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"<html>oops</html>", 200, "invalid_tool_reply"),
        (b"[1, 2]", 200, "invalid_tool_reply"),
        (b'{"results": "yes"}', 200, "invalid_tool_reply"),
        (b'{"results": [{"toolCallId": 5}]}', 200, "invalid_tool_reply"),
        (b'{"results": [{"toolCallId": "other", "result": 1}]}', 200, "invalid_tool_reply"),
        (b"", 200, "empty_tool_reply"),
        (b'{"results": []}', 200, "empty_tool_reply"),
        (b"boom", 500, "tool_server_error"),
    ],
)
def test_bad_replies_fail_with_a_clear_code(raw: bytes, status: int, code: str) -> None:
    with pytest.raises(ProviderError) as exc:
        parse_tool_reply(invocation(), status, raw)
    assert exc.value.code == code
    assert exc.value.message


def test_signatures_verify_and_tampering_is_refused() -> None:
    body = json.dumps({"message": {"type": "hang"}})
    now = datetime.now(tz=UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_1", now, body),
    }
    assert verify_webhook(SECRET, body, headers) == {"message": {"type": "hang"}}
    with pytest.raises(Forbidden) as bad:
        verify_webhook(SECRET, body.replace("hang", "gnah"), headers)
    assert bad.value.code == "invalid_signature"
    with pytest.raises(Forbidden):
        verify_webhook(SECRET, body, {})


def test_parse_tool_calls_refuses_other_messages_and_results_helper() -> None:
    with pytest.raises(InvalidInput):
        parse_tool_calls({"message": {"type": "hang"}})
    assert results({"toolCallId": "a", "result": 1}) == {
        "results": [{"toolCallId": "a", "result": 1}]
    }
