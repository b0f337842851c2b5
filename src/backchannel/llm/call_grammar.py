"""Constrained tool calls for a local model: the JSON of a call, as a llama.cpp grammar.

Once a local model has decided to call a tool, what it writes inside ``<tool_call>`` is
sampled under a grammar made from the assistant's tools: the name is one of theirs and
the arguments follow that tool's JSON schema (types, enums, required keys, and string
``pattern`` such as digits only), so a small model cannot write a call that does not
parse, name a tool that does not exist, or pass "4,417" where the schema asks for digits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..tools.arguments import ungrounded
from .base import LLMRequest


def call_schema(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to any of ``tools`` (OpenAI function format), in the
    ``{"name": ..., "arguments": {...}}`` shape Qwen-style templates put in the tag."""
    options = []
    for tool in tools:
        function = tool.get("function") or {}
        name = function.get("name")
        if not name:
            continue
        parameters = dict(function.get("parameters") or {"type": "object"})
        if parameters.get("properties") and "additionalProperties" not in parameters:
            parameters["additionalProperties"] = False  # no invented keys
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"oneOf": options}


class CallGrammars:
    """Compiled grammars, one per set of tools (compiling takes milliseconds, but a call
    asks for the same tools every turn)."""

    def __init__(self) -> None:
        self._grammars: dict[str, Any] = {}

    def get(self, tools: Sequence[Mapping[str, Any]]) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        schema = json.dumps(call_schema(tools))
        grammar = self._grammars.get(schema)
        if grammar is None:
            # The name first, as the model was trained to write it (and as soon as it is
            # written, the tool's start line can play).
            rules = json_schema_to_gbnf(schema, prop_order=["name", "arguments"])
            grammar = LlamaGrammar.from_string(rules, verbose=False)
            self._grammars[schema] = grammar
            while len(self._grammars) > 32:
                del self._grammars[next(iter(self._grammars))]
        return grammar


def grounded(body: str, request: LLMRequest) -> bool:
    """Whether a call the model wrote under the grammar carries values somebody said in
    the conversation (see :func:`~backchannel.tools.arguments.ungrounded`). A call the
    conversation already made, with the same arguments, counts only when the caller's
    latest words ask for it again: a small model repeats an earlier lookup on "goodbye"."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return False
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in request.tools}
    arguments = call.get("arguments") if isinstance(call, dict) else None
    if not isinstance(arguments, dict) or call.get("name") not in schemas:
        return False
    messages = [m for m in request.messages if m.get("role") != "system"]
    if (call["name"], arguments) in _calls_made(messages):
        latest = [m for m in messages if m.get("role") == "user"][-1:]
        messages = latest
    heard = " ".join(str(m.get("content") or "") for m in messages)
    return not ungrounded(arguments, schemas[call["name"]], heard)


def _calls_made(messages: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any]]:
    made = []
    for message in messages:
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") or {}
            raw = function.get("arguments")
            try:
                arguments = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError:
                continue
            made.append((function.get("name"), arguments))
    return made
