"""Assistant JSON as Vapi documents it loads, keeps what we do not use, and resolves tools."""

from __future__ import annotations

import pytest

from backchannel import AssistantConfig, ConfigError, Delivery, Route
from backchannel.tools.registry import ToolRegistry
from backchannel.tools.spec import resolve_tools

VAPI_EXPORT = {
    "id": "4b2c1d2e-0000-4000-8000-000000000001",
    "orgId": "org-1",
    "name": "Support",
    "firstMessage": "Hello!",
    "firstMessageMode": "assistant-speaks-first",
    "voicemailMessage": "Please call back.",
    "backgroundSound": "office",
    "model": {
        "provider": "openai",
        "model": "gpt-4o",
        "temperature": 0.3,
        "emotionRecognitionEnabled": True,
        "messages": [{"role": "system", "content": "Be brief."}],
        "tools": [
            {
                "type": "function",
                "async": True,
                "function": {
                    "name": "check_order",
                    "description": "Check an order",
                    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                },
                "server": {
                    "url": "https://tools.example.com/hook",
                    "timeoutSeconds": 15,
                    "headers": {"X-Vapi-Secret": "s"},
                },
                "messages": [
                    {"type": "request-start", "content": "Checking.", "blocking": True},
                    {"type": "request-complete", "content": "Done."},
                    {"type": "request-failed", "content": "That failed."},
                    {
                        "type": "request-response-delayed",
                        "content": "Still on it.",
                        "timingMilliseconds": 3000,
                    },
                ],
                "backchannel": {
                    "delivery": "interrupt",
                    "timeoutSeconds": 120,
                    "cancelOnInterruption": True,
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "get_style",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
            {"type": "endCall"},
        ],
    },
    "voice": {"provider": "11labs", "voiceId": "burt", "stability": 0.5},
    "transcriber": {"provider": "deepgram", "model": "nova-2", "language": "en"},
    "server": {"url": "https://assistant.example.com/events"},
    "serverMessages": ["end-of-call-report", "tool-calls"],
    "clientMessages": ["transcript"],
    "endCallPhrases": ["goodbye"],
    "silenceTimeoutSeconds": 30,
    "maxDurationSeconds": 600,
}


def test_a_vapi_export_loads_and_round_trips_unknown_fields() -> None:
    config = AssistantConfig.from_json(VAPI_EXPORT)
    assert config.first_message == "Hello!"
    assert config.model.tools[0].async_ is True
    assert config.voice is not None and config.voice.voice_id == "burt"
    out = config.to_json()
    assert out["voicemailMessage"] == "Please call back."
    assert out["model"]["emotionRecognitionEnabled"] is True
    assert out["voice"]["stability"] == 0.5
    assert out["model"]["tools"][0]["async"] is True
    assert out["model"]["tools"][0]["server"]["headers"] == {"X-Vapi-Secret": "s"}
    assert AssistantConfig.from_json(out).to_json() == out


def test_tools_resolve_route_timeout_delivery_and_lines() -> None:
    specs = resolve_tools(AssistantConfig.from_json(VAPI_EXPORT))
    order = specs["check_order"]
    assert order.route is Route.SERVER and order.server is not None
    assert order.server.url == "https://tools.example.com/hook"
    assert order.server.headers == {"X-Vapi-Secret": "s"}
    assert order.is_async and order.timeout_seconds == 120
    assert order.delivery is Delivery.INTERRUPT and order.cancel_on_interruption
    assert order.spoken.start == "Checking." and order.spoken.start_blocking
    assert order.spoken.delayed == "Still on it." and order.spoken.delayed_after == 3.0
    assert (order.spoken.complete, order.spoken.failed) == ("Done.", "That failed.")
    # No URL of its own: falls back to the assistant's server URL.
    style = specs["get_style"]
    assert style.route is Route.SERVER and style.timeout_seconds == 20
    assert specs["endCall"].route is Route.BUILTIN


def test_runs_on_client_overrides_the_assistant_server_fallback() -> None:
    data = {
        "server": {"url": "https://assistant.example.com/events"},
        "model": {
            "tools": [
                {"function": {"name": "pick"}, "backchannel": {"runsOn": "client"}},
                {"function": {"name": "other"}},
            ]
        },
    }
    specs = resolve_tools(AssistantConfig.from_json(data))
    assert specs["pick"].route is Route.CLIENT
    assert specs["other"].route is Route.SERVER


def test_defaults_client_route_and_async_timeout() -> None:
    config = AssistantConfig.from_json(
        {"model": {"tools": [{"type": "function", "async": True, "function": {"name": "pick"}}]}}
    )
    spec = resolve_tools(config)["pick"]
    assert spec.route is Route.CLIENT
    assert spec.timeout_seconds == 300
    assert spec.delivery is Delivery.WHEN_IDLE


def test_python_tools_win_over_urls_and_join_the_list() -> None:
    tools = ToolRegistry()

    @tools.tool
    async def check_order(id: str) -> str:
        """Check."""
        return id

    @tools.tool
    def extra() -> int:
        return 1

    specs = resolve_tools(AssistantConfig.from_json(VAPI_EXPORT), tools.specs())
    assert specs["check_order"].route is Route.IN_PROCESS
    assert specs["check_order"].is_async, "the config's async flag applies"
    assert specs["check_order"].spoken.start == "Checking."
    assert specs["extra"].route is Route.IN_PROCESS


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"model": {"tools": "nope"}}, "invalid_assistant"),
        ({"firstMessageMode": "sing"}, "invalid_assistant"),
        (b"{not json", "invalid_assistant"),
    ],
)
def test_bad_configs_are_refused_with_codes(data: object, code: str) -> None:
    with pytest.raises(ConfigError) as exc:
        AssistantConfig.from_json(data)  # type: ignore[arg-type]
    assert exc.value.code == code
    assert exc.value.details["errors"]


def test_tool_problems_are_refused() -> None:
    dup = AssistantConfig.from_json(
        {"model": {"tools": [{"function": {"name": "a"}}, {"function": {"name": "a"}}]}}
    )
    with pytest.raises(ConfigError) as exc:
        resolve_tools(dup)
    assert exc.value.code == "duplicate_tool"
    nameless = AssistantConfig.from_json({"model": {"tools": [{"type": "function"}]}})
    with pytest.raises(ConfigError) as exc2:
        resolve_tools(nameless)
    assert exc2.value.code == "invalid_tool"


def test_from_file(tmp_path: object) -> None:
    import json
    from pathlib import Path

    path = Path(str(tmp_path)) / "assistant.json"
    path.write_text(json.dumps(VAPI_EXPORT))
    assert AssistantConfig.from_file(path).name == "Support"
