"""What the engine asks of a language model: stream text and tool calls for a chat."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A complete tool call from the model (streamed fragments already joined)."""

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCallStarting:
    """The model has begun a call to this tool (its arguments are still coming): enough
    to say the tool's start line while the rest is generated."""

    name: str


LLMChunk = TextDelta | ToolCallRequest | ToolCallStarting


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One chat-completions request: OpenAI-format messages and tools."""

    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[Mapping[str, Any]] = ()
    model: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    #: How many of the last messages are guidance for this request only (the
    #: instruction to tell the caller about a result), not part of the history.
    guidance: int = 0


class LLM(Protocol):
    #: True for models that reliably do one thing per response (small local models):
    #: the engine then gives background results a response of their own after the
    #: user's reply, instead of asking one reply to answer the user *and* announce.
    one_ask_per_response: bool

    def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        """Yield text as it is generated, then each tool call once it is complete.

        Cancelling the iteration (barge-in) must stop generation promptly.
        """
        ...

    async def prepare(self, request: LLMRequest) -> None:
        """Get ready for requests that start like this one: while the call opens (system
        prompt and tools), while the caller is still talking (their words so far), and
        while a reply is heard (the history up to the caller's next words). A local model
        evaluates the prompt ahead, so the reply does not pay for it, and gives up a
        read-ahead once a later request or read-ahead is made. Remote models have
        nothing to do."""
        ...


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def parse_arguments(raw: str | None) -> dict[str, Any]:
    """Read a model's tool-call arguments, forgiving what small models get wrong.

    Code fences, trailing commas and an empty string are accepted. Arguments that still
    do not parse to an object are kept verbatim under ``"_raw"`` so the tool (and the
    ledger) can see what the model said rather than losing it.
    """
    text = (raw or "").strip()
    if not text:
        return {}
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", _FENCE.sub("", text))):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
        return {"value": value}
    return {"_raw": text}
