"""The OpenAI-compatible provider through the real SDK against a loopback server."""

from __future__ import annotations

import pytest

from backchannel import LLMRequest, OpenAICompatibleLLM, ProviderError, TextDelta, ToolCallRequest
from backchannel.llm.base import LLMChunk, parse_arguments

from .fake_openai import chunk, serve

pytestmark = pytest.mark.anyio

TOOLS = [
    {"type": "function", "function": {"name": "check_order", "parameters": {"type": "object"}}}
]


async def collect(llm: OpenAICompatibleLLM, request: LLMRequest) -> list[LLMChunk]:
    return [c async for c in llm.stream(request)]


async def test_streams_text_and_joins_fragmented_tool_calls() -> None:
    with serve() as (fake, url):
        fake.streams.append(
            [
                chunk({"role": "assistant", "content": "One "}),
                chunk({"content": "moment."}),
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "check_order", "arguments": ""},
                            }
                        ]
                    }
                ),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"id": '}}]}),
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_b",
                                "type": "function",
                                "function": {"name": "check_order", "arguments": '{"id": "2"}'},
                            }
                        ]
                    }
                ),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"1"}'}}]}),
                chunk({}, finish="tool_calls"),
            ]
        )
        llm = OpenAICompatibleLLM(model="qwen", base_url=url, api_key="sk-test")
        out = await collect(
            llm,
            LLMRequest(messages=[{"role": "user", "content": "hi"}], tools=TOOLS, temperature=0.2),
        )
    assert out == [
        TextDelta("One "),
        TextDelta("moment."),
        ToolCallRequest("call_a", "check_order", {"id": "1"}),
        ToolCallRequest("call_b", "check_order", {"id": "2"}),
    ]
    sent = fake.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer sk-test"
    assert sent["stream"] is True and sent["model"] == "qwen" and sent["temperature"] == 0.2
    assert sent["tools"] == TOOLS


async def test_no_tools_key_when_there_are_none_and_request_model_wins() -> None:
    with serve() as (fake, url):
        fake.streams.append([chunk({"content": "Hi."})])
        llm = OpenAICompatibleLLM(model="default", base_url=url)
        out = await collect(
            llm, LLMRequest(messages=[{"role": "user", "content": "hi"}], model="other")
        )
    assert out == [TextDelta("Hi.")]
    assert "tools" not in fake.requests[0]
    assert fake.requests[0]["model"] == "other"


async def test_server_errors_become_provider_errors_with_a_code() -> None:
    with serve() as (fake, url):
        fake.status = 503
        llm = OpenAICompatibleLLM(model="m", base_url=url, max_retries=0)
        with pytest.raises(ProviderError) as exc:
            await collect(llm, LLMRequest(messages=[{"role": "user", "content": "hi"}]))
    assert exc.value.code == "llm_error"
    assert exc.value.status == 502


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        (None, {}),
        ('```json\n{"a": 1,}\n```', {"a": 1}),
        ("[1, 2]", {"value": [1, 2]}),
        ("not json at all", {"_raw": "not json at all"}),
    ],
)
def test_tolerant_argument_parsing(raw: str | None, parsed: dict[str, object]) -> None:
    assert parse_arguments(raw) == parsed
