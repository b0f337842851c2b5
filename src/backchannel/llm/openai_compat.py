"""Any OpenAI-compatible chat-completions server through the official ``openai`` SDK.

One provider covers OpenAI, vLLM, Ollama, llama.cpp's server, Groq and the like: they
differ only in base URL, key and model name.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from ..errors import ProviderError
from .base import LLMChunk, LLMRequest, TextDelta, ToolCallRequest, parse_arguments


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAICompatibleLLM:
    one_ask_per_response = False

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 1,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.model = model
        self.client = client or openai.AsyncOpenAI(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            # Local servers (llama.cpp, vLLM, Ollama) ignore the key but the SDK wants one.
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
        )

    async def prepare(self, request: LLMRequest) -> None:
        return None

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        kwargs: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": list(request.messages),
            "stream": True,
        }
        if request.tools:
            kwargs["tools"] = list(request.tools)
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        partials: dict[int, _Partial] = {}
        try:
            # The messages are already plain chat-completions JSON, so they go through
            # the SDK's documented raw ``post`` rather than ``create``, whose per-request
            # walk over every message cost a quarter of the server's CPU under load.
            stream = await self.client.post(
                "/chat/completions",
                body=kwargs,
                cast_to=ChatCompletionChunk,
                stream=True,
                stream_cls=openai.AsyncStream[ChatCompletionChunk],
            )
            async for chunk in stream:
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        yield TextDelta(delta.content)
                    for tc in delta.tool_calls or ():
                        p = partials.setdefault(tc.index, _Partial())
                        if tc.id:
                            p.id = tc.id
                        if tc.function and tc.function.name:
                            p.name += tc.function.name
                        if tc.function and tc.function.arguments:
                            p.arguments.append(tc.function.arguments)
        except openai.APIError as exc:
            raise ProviderError(f"LLM request failed: {exc}", code="llm_error") from exc
        for index in sorted(partials):
            p = partials[index]
            if not p.name:
                raise ProviderError("LLM streamed a tool call without a name", code="llm_error")
            yield ToolCallRequest(
                id=p.id or f"call_{index}",
                name=p.name,
                arguments=parse_arguments("".join(p.arguments)),
            )
