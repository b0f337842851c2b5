"""A scripted LLM: plays back text and tool calls, for tests and demos that must be exact.

Each request pops the next reply from the script; a ``respond`` function can decide
replies from the request instead (e.g. "announce once the result is in the history").
Timing goes through a :class:`~backchannel.clock.Clock`, so a first-token delay and
gaps between chunks are simulated without real sleeping.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from ..clock import Clock, SystemClock
from .base import LLMChunk, LLMRequest, TextDelta, ToolCallRequest

Reply = Sequence[LLMChunk]

_ids = itertools.count(1)


def say(text: str, *, chunk_words: int = 0) -> list[LLMChunk]:
    """Text as the model would stream it: whole, or ``chunk_words`` words a chunk."""
    if chunk_words <= 0:
        return [TextDelta(text)]
    words = text.split(" ")
    return [
        TextDelta(
            " ".join(words[i : i + chunk_words]) + (" " if i + chunk_words < len(words) else "")
        )
        for i in range(0, len(words), chunk_words)
    ]


def call(
    name: str, arguments: Mapping[str, Any] | None = None, id: str | None = None
) -> ToolCallRequest:
    """A tool call with a fresh id unless one is given."""
    return ToolCallRequest(
        id=id or f"call_{next(_ids)}", name=name, arguments=dict(arguments or {})
    )


class ScriptedLLM:
    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        respond: Callable[[LLMRequest], Reply] | None = None,
        clock: Clock | None = None,
        first_chunk_delay: float = 0.0,
        chunk_gap: float = 0.0,
        one_ask_per_response: bool = False,
    ) -> None:
        self.one_ask_per_response = one_ask_per_response
        self.script: list[Reply] = list(script)
        self.respond = respond
        self.clock = clock or SystemClock()
        self.first_chunk_delay = first_chunk_delay
        self.chunk_gap = chunk_gap
        self.requests: list[LLMRequest] = []
        self.active = 0
        self.max_active = 0

    def reply(self, *chunks: LLMChunk) -> None:
        """Queue one more reply."""
        self.script.append(list(chunks))

    def _next(self, request: LLMRequest) -> Reply:
        if self.script:
            return self.script.pop(0)
        if self.respond is not None:
            return self.respond(request)
        return [TextDelta("Okay.")]

    async def prepare(self, request: LLMRequest) -> None:
        return None

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        self.requests.append(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            reply = self._next(request)
            if self.first_chunk_delay:
                await self.clock.sleep(self.first_chunk_delay)
            for i, chunk in enumerate(reply):
                if i and self.chunk_gap and isinstance(chunk, TextDelta):
                    await self.clock.sleep(self.chunk_gap)
                yield chunk
        finally:
            self.active -= 1
