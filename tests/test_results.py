"""Results off the wire: Vapi's ToolCallResult, the shapes users really send, and refusals."""

from __future__ import annotations

import pytest

from backchannel import Delivery, InvalidInput, ToolResult, parse_result


def test_vapi_shape_with_message_object() -> None:
    r = parse_result(
        {
            "toolCallId": "call_1",
            "name": "check_order",
            "result": "shipped",
            "message": {"type": "request-complete", "content": "It shipped!"},
            "metadata": {"trace": "x"},
        }
    )
    assert r == ToolResult(
        "call_1", "check_order", result="shipped", message="It shipped!", metadata={"trace": "x"}
    )


def test_forgiving_shapes() -> None:
    assert parse_result({"toolCallId": "c", "result": {"a": [1]}}).result == {"a": [1]}
    assert parse_result({"toolCallId": "c", "result": 42}).result == 42
    assert parse_result({"toolCallId": "c", "message": "Say this."}).message == "Say this."
    assert parse_result({"toolCallId": "c", "error": "no stock"}).error == "no stock"


def test_delivery_and_vapi_trigger_flag() -> None:
    assert parse_result({"toolCallId": "c", "delivery": "interrupt"}).delivery is Delivery.INTERRUPT
    assert (
        parse_result({"toolCallId": "c", "triggerResponseEnabled": False}).delivery
        is Delivery.SILENT
    )
    assert (
        parse_result({"toolCallId": "c", "triggerResponseEnabled": True}).delivery
        is Delivery.WHEN_IDLE
    )
    both = parse_result({"toolCallId": "c", "delivery": "silent", "triggerResponseEnabled": True})
    assert both.delivery is Delivery.SILENT, "our own field wins"
    assert parse_result({"toolCallId": "c", "willContinue": True}).will_continue


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"toolCallId": ""},
        {"toolCallId": "c", "result": "x", "error": "y"},
        {"toolCallId": "c", "delivery": "loudly"},
        {"toolCallId": 5},
        "not an object",
    ],
)
def test_malformed_results_are_refused_with_a_code(bad: object) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_result(bad)
    assert exc.value.code == "invalid_tool_result"
    assert exc.value.status == 422
    assert exc.value.to_dict()["details"]["errors"]


def test_outcome_comparison_and_model_content() -> None:
    a = ToolResult("c", result={"x": 1, "y": 2})
    assert a.same_outcome(ToolResult("c", result={"y": 2, "x": 1}, message="different words"))
    assert not a.same_outcome(ToolResult("c", result={"x": 2}))
    assert ToolResult("c", result="plain").model_content() == "plain"
    assert ToolResult("c", error="boom").model_content() == '{"error": "boom"}'
    assert ToolResult("c", result={"b": 1, "a": 2}).model_content() == '{"a": 2, "b": 1}'
