"""The conversation history, in the OpenAI chat format.

Two things make it more than a list:

* OpenAI requires every ``tool`` message to follow the assistant message that called the
  tool, with nothing in between. A background result that lands while such a block is
  still open (a sync tool is running) is held back and added once the block closes.
* The assistant's words are stored as *heard*: when speech is cut, the message is
  rewritten to what the listener actually got (see :meth:`Conversation.replace`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .llm.base import ToolCallRequest

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": json.dumps(dict(tc.arguments))},
                }
                for tc in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class Conversation:
    def __init__(self, preamble: Sequence[Mapping[str, Any]] = ()) -> None:
        #: The assistant's configured messages (system prompt), passed through untouched.
        self.preamble: list[dict[str, Any]] = [dict(m) for m in preamble]
        self.messages: list[Message] = []
        self._unanswered: set[str] = set()
        self._held: list[Message] = []

    @property
    def unanswered(self) -> frozenset[str]:
        """Tool-call ids the history still owes a ``tool`` message."""
        return frozenset(self._unanswered)

    @property
    def block_open(self) -> bool:
        """Whether an assistant tool-call message still waits for some tool messages."""
        return bool(self._unanswered)

    def append(self, message: Message) -> int:
        """Add a message now; returns its index (for a later :meth:`replace`)."""
        self.messages.append(message)
        if message.role == "assistant" and message.tool_calls:
            self._unanswered.update(tc.id for tc in message.tool_calls)
        if message.role == "tool" and message.tool_call_id is not None:
            self._unanswered.discard(message.tool_call_id)
            if not self._unanswered:
                held, self._held = self._held, []
                self.messages.extend(held)
        return len(self.messages) - 1

    def add_note(self, message: Message) -> None:
        """Add a message that may wait: held back while a tool-call block is open."""
        if self.block_open:
            self._held.append(message)
        else:
            self.messages.append(message)

    def replace(self, index: int, message: Message) -> None:
        self.messages[index] = message

    def drop_empty(self) -> None:
        """Remove assistant messages that say nothing and call nothing (all speech cut)."""
        self.messages[:] = [
            m for m in self.messages if m.role != "assistant" or m.content or m.tool_calls
        ]

    def to_openai(self, extra: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
        """The history as chat-completions ``messages``, with transient ``extra`` at the end."""
        return [*self.preamble, *(m.to_openai() for m in self.messages), *map(dict, extra)]

    def transcript(self) -> list[dict[str, Any]]:
        """What was said, by whom: user and assistant text only."""
        return [
            {"role": m.role, "content": m.content}
            for m in self.messages
            if m.role in ("user", "assistant") and m.content
        ]
