"""The scripted model of ``backchannel eval --llm scripted``: an eval file's rules,
answering exactly and at once, so a conversation's timing is the server's alone.

A rule with ``heard`` answers the caller's newest words while they wait for an answer;
one with ``result`` answers a tool's message (its reply, or the placeholder of an async
tool) or a background result that has not been talked about yet; a rule with neither
is the fallback. The answer to words and the one to a result may go together ("the
shipping is free. Your order is out for delivery."), as one reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..llm.base import LLMChunk, LLMRequest
from ..llm.scripted import ScriptedLLM, call, say
from .spec import Rule

#: How a result that came in the background is written into the history.
_NOTE = "Background tool result"


def rules_model(rules: Sequence[Rule]) -> ScriptedLLM:
    def respond(request: LLMRequest) -> list[LLMChunk]:
        return answer(rules, request.messages)

    return ScriptedLLM(respond=respond)


def answer(rules: Sequence[Rule], messages: Sequence[Mapping[str, Any]]) -> list[LLMChunk]:
    """The reply to a request's messages, by the first rules that match."""
    reply: list[LLMChunk] = []
    words = _waiting_words(messages)
    if words is not None and (rule := _first(rules, heard=words)) is not None:
        reply += _reply(rule, words)
        if rule.call:
            return reply
    note = _fresh_note(messages)
    if note is not None and (rule := _first(rules, result=note)) is not None:
        reply += _reply(rule, "", spacer=bool(reply))
    tool = _tool_message(messages) if not reply else None
    if tool is not None and (rule := _first(rules, result=tool)) is not None:
        reply += _reply(rule, "")
    if not reply:
        fallback = next((r for r in rules if r.heard is None and r.result is None), None)
        reply = _reply(fallback, words or "") if fallback else say("Okay.")
    return reply


def _first(
    rules: Sequence[Rule], *, heard: str | None = None, result: str | None = None
) -> Rule | None:
    for rule in rules:
        if heard is not None and rule.heard is not None and rule.heard.search(heard):
            return rule
        if result is not None and rule.result is not None and rule.result.search(result):
            return rule
    return None


def _reply(rule: Rule, words: str, *, spacer: bool = False) -> list[LLMChunk]:
    chunks: list[LLMChunk] = []
    if rule.say:
        chunks += say((" " if spacer else "") + rule.say + (" " if rule.call else ""))
    if rule.call:
        digits = "".join(re.findall(r"\d", words))
        arguments = {
            k: v.replace("{digits}", digits) if isinstance(v, str) else v
            for k, v in rule.arguments.items()
        }
        chunks.append(call(rule.call, arguments))
    return chunks


def _waiting_words(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The caller's newest words, if nothing but guidance came after them."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
        if m.get("role") != "system":
            return None
    return None


def _tool_message(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest tool message (a reply, or an async tool's placeholder) of the
    model's latest tool calls; lines said while they ran may follow it."""
    for m in reversed(messages):
        if m.get("role") == "tool":
            return str(m.get("content"))
        if m.get("role") == "user" or m.get("tool_calls"):
            return None
    return None


def _fresh_note(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest background result not yet followed by the assistant's words."""
    for m in reversed(messages):
        if m.get("role") == "assistant" and m.get("content"):
            return None
        if m.get("role") == "system" and str(m.get("content", "")).startswith(_NOTE):
            return str(m["content"])
    return None
