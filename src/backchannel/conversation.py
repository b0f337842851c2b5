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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .clock import Clock, SystemClock
from .llm.base import ToolCallRequest

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    #: When it entered the history (wall time), stamped by the conversation.
    at: float | None = None

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
    def __init__(
        self, preamble: Sequence[Mapping[str, Any]] = (), *, clock: Clock | None = None
    ) -> None:
        #: The assistant's configured messages (system prompt), passed through untouched.
        self.preamble: list[dict[str, Any]] = [dict(m) for m in preamble]
        self.clock = clock or SystemClock()
        self.started_at = self.clock.wall()
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

    def _stamped(self, message: Message) -> Message:
        return message if message.at is not None else replace(message, at=self.clock.wall())

    def append(self, message: Message) -> int:
        """Add a message now; returns its index (for a later :meth:`replace`)."""
        message = self._stamped(message)
        self.messages.append(message)
        index = len(self.messages) - 1
        if message.role == "assistant" and message.tool_calls:
            self._unanswered.update(tc.id for tc in message.tool_calls)
        if message.role == "tool" and message.tool_call_id is not None:
            self._unanswered.discard(message.tool_call_id)
            if not self._unanswered:
                held, self._held = self._held, []
                self.messages.extend(held)  # notes held back follow it
        return index

    def add_note(self, message: Message) -> None:
        """Add a message that may wait: held back while a tool-call block is open."""
        message = self._stamped(message)
        if self.block_open:
            self._held.append(message)
        else:
            self.messages.append(message)

    def replace(self, index: int, message: Message) -> None:
        """Rewrite a message (to what was heard); it keeps its time."""
        self.messages[index] = replace(message, at=message.at or self.messages[index].at)

    def drop_empty(self) -> None:
        """Remove assistant messages that say nothing and call nothing (all speech cut)."""
        self.messages[:] = [
            m for m in self.messages if m.role != "assistant" or m.content or m.tool_calls
        ]

    def to_openai(self, extra: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
        """The history as chat-completions ``messages``, with transient ``extra`` at the end."""
        said = (m for m in self.messages if m.role != "assistant" or m.content or m.tool_calls)
        return [*self.preamble, *(m.to_openai() for m in said), *map(dict, extra)]

    def transcript(self) -> list[dict[str, Any]]:
        """What was said, by whom: user and assistant text only."""
        return [
            {"role": m.role, "content": m.content}
            for m in self.messages
            if m.role in ("user", "assistant") and m.content
        ]

    def to_vapi(self) -> list[dict[str, Any]]:
        """The history as Vapi's ``messages``: ``system``, ``user``, ``bot``,
        ``tool_calls`` and ``tool_call_result`` entries with ``time`` (ms) and
        ``secondsFromStart``."""
        start = self.started_at
        names = {tc.id: tc.name for m in self.messages for tc in m.tool_calls}
        out: list[dict[str, Any]] = [
            _vapi_entry("system", str(m.get("content") or ""), start, start)
            for m in self.preamble
            if m.get("role") == "system"
        ]
        for m in self.messages:
            at = m.at if m.at is not None else start
            if m.role == "tool":
                entry = _vapi_entry("tool_call_result", None, at, start)
                name = names.get(m.tool_call_id or "", "")
                entry |= {"toolCallId": m.tool_call_id, "name": name, "result": m.content or ""}
                out.append(entry)
            elif m.role == "assistant" and m.tool_calls:
                if m.content:
                    out.append(_vapi_entry("bot", m.content, at, start))
                entry = _vapi_entry("tool_calls", "", at, start)
                entry["toolCalls"] = m.to_openai()["tool_calls"]
                out.append(entry)
            elif m.content:
                role = "bot" if m.role == "assistant" else m.role
                out.append(_vapi_entry(role, m.content, at, start))
        return out


def _vapi_entry(role: str, message: str | None, at: float, start: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "role": role,
        "time": at * 1000,
        "secondsFromStart": max(0.0, at - start),
    }
    if message is not None:
        entry["message"] = message
    if role in ("user", "bot"):
        entry["endTime"] = at * 1000
    return entry


_RESULT_NOTE = re.compile(r"Background tool result for (\S+) \(toolCallId ([^)]+)\): (.*)", re.S)


def result_note(name: str, tool_call_id: str, content: str) -> Message:
    """The history's note of a result that came back in the background."""
    return Message(
        "system", f"Background tool result for {name} (toolCallId {tool_call_id}): {content}"
    )


def noted_result(message: Mapping[str, Any]) -> tuple[str, str] | None:
    """The tool call id and content of a :func:`result_note`, for a model that takes
    results as such (a speech-to-speech model's ``function_call_output``)."""
    if message.get("role") != "system":
        return None
    m = _RESULT_NOTE.fullmatch(str(message.get("content") or ""))
    return (m.group(2), m.group(3)) if m else None
