"""The frame backchannel puts around an assistant's prompt for a small local model.

What the model reads, beyond the assistant's own messages: that its words are spoken,
that it answers only from its instructions and the tools' results, and which turns are
tool calls; once the call has a history, a reminder of the last just before the caller's
latest words; right after tool results, what to do next. Measured with
``benchmarks/tool_use.py`` (5 assistants, requests at turns 1, 3 and 6, chit-chat).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from .base import LLMRequest

#: After the assistant's own prompt, without tools.
SPEECH_FRAME = (
    "Your words are spoken aloud on a phone call. Reply in one or two short sentences, "
    "only from these instructions and the conversation; if you don't know, say you "
    "don't know."
)
#: After the assistant's own prompt, with tools: it moved the first-token probability of a
#: call up on requests and down on chit-chat, so the decision step can tell them apart.
TOOL_GUIDANCE = (
    "Your words are spoken aloud on a phone call. If the caller asks you to do something "
    "that one of the tools below does (look something up, book, cancel, order, check), "
    "call that tool: reply with only "
    '<tool_call>{"name": ..., "arguments": {...}}</tool_call>, filled with the caller\'s '
    "values. Never mention tools, functions or arguments to the caller. For greetings, "
    "thanks and questions these instructions answer, reply in one or two short sentences, "
    "only from these instructions and the tools' results; if you don't know, say you "
    "don't know."
)
#: Said again just before the caller's latest words once the call has a history.
TOOL_REMINDER = (
    "When the caller asks for something a tool below does, reply with only the tool "
    "call; never mention tools to the caller."
)
# After its tool calls were answered, a small model tends to apologise or call again;
# told plainly what to do, it says what is going on.
ANSWER_NOW = "Now tell the user in one short sentence what is happening with their request."


#: When the call the model opened was turned down (values nobody said): left to itself
#: it speaks the call's intent instead ("Let me check the shipping cost"), a promise
#: nothing keeps.
NO_TOOL = "No tool fits this. Answer the caller now, in words, from these instructions."


def declined(request: LLMRequest) -> LLMRequest:
    """The request again, with the model told that no tool fits it."""
    messages = [*request.messages, {"role": "system", "content": NO_TOOL}]
    return dataclasses.replace(request, messages=messages)


def framed(request: LLMRequest) -> list[dict[str, Any]]:
    """The request's messages as the model reads them, frame included."""
    messages = [_for_template(m) for m in request.messages]
    messages = _with_guidance(messages, TOOL_GUIDANCE if request.tools else SPEECH_FRAME)
    if request.tools:
        messages = _reminded(messages, TOOL_REMINDER)
    if answering(request):
        messages.append({"role": "system", "content": ANSWER_NOW})
    return messages


def answering(request: LLMRequest) -> bool:
    """Right after its tool calls were answered, the model must speak, not call again.

    Small models tend to repeat a call whose result is still pending ("runs in the
    background") in a loop; barring call openers for that one step stops it, at the
    price of chained calls (tool A, then B from A's answer) within one turn.
    """
    return bool(request.messages) and request.messages[-1].get("role") == "tool"


def _for_template(message: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI-format message → what chat templates expect: arguments as objects (the
    template serializes them itself) and no ``None`` content."""
    out = dict(message)
    if out.get("content") is None:
        out["content"] = ""
    calls = out.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            {**c, "function": {**c["function"], "arguments": _arguments(c["function"])}}
            for c in calls
        ]
    return out


def _arguments(function: Mapping[str, Any]) -> Any:
    raw = function.get("arguments")
    if isinstance(raw, str):
        try:
            return json.loads(raw or "{}")
        except json.JSONDecodeError:
            return raw
    return raw


def _with_guidance(messages: list[dict[str, Any]], guidance: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{guidance}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": guidance}, *messages]


def _reminded(messages: list[dict[str, Any]], guidance: str) -> list[dict[str, Any]]:
    """The guidance again, just before the caller's latest words, once the call has a
    history: after a few spoken replies a small model keeps replying in words, and a
    request it called a tool for on the first turn it answered with an invented fact on
    the third. There it stays for every step of the turn (tool results, a reply that
    also announces), so the evaluated prompt is reused until the caller speaks again.
    An instruction given once their latest words were answered (an announcement after
    the reply) goes without it: no call is decided then, and its prompt is the history
    as the caller's next turn will have it, up to where the reminder goes then."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if not any(m.get("role") == "assistant" for m in messages[:last]):
        return messages
    after = messages[last + 1 :]
    if messages[-1].get("role") == "system" and any(
        m.get("role") == "assistant" and m.get("content") for m in after
    ):
        return messages
    return [*messages[:last], {"role": "system", "content": guidance}, *messages[last:]]
