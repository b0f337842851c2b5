"""Constrained tool calls for a local model: the JSON of a call, as a llama.cpp grammar.

Once a local model has decided to call a tool, what it writes inside ``<tool_call>`` is
sampled under a grammar made from the assistant's tools: the name is one of theirs and
the arguments follow that tool's JSON schema (types, enums, required keys, and string
``pattern`` such as digits only), so a small model cannot write a call that does not
parse, name a tool that does not exist, or pass "4,417" where the schema asks for digits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..tools.arguments import digits_only, heard_tokens, ungrounded
from .base import LLMRequest, parse_arguments

log = logging.getLogger("backchannel.llm")


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


#: Regex escapes llama.cpp's grammar parser does not know, as the classes they stand for.
_ESCAPES = {r"\d": "[0-9]", r"\w": "[A-Za-z0-9_]", r"\s": "[ \t]", r"\S": "[^ \t]"}


def _plain_patterns(schema: Any) -> Any:
    """The schema with ``\\d``-style escapes in its patterns spelled as classes."""
    if isinstance(schema, dict):
        out = {k: _plain_patterns(v) for k, v in schema.items()}
        if isinstance(out.get("pattern"), str):
            for escape, spelled in _ESCAPES.items():
                out["pattern"] = out["pattern"].replace(escape, spelled)
        return out
    if isinstance(schema, list):
        return [_plain_patterns(v) for v in schema]
    return schema


def _loose(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools with any object as arguments: only the call's shape and name held."""
    return [
        {"type": "function", "function": {"name": t["function"]["name"]}}
        for t in tools
        if (t.get("function") or {}).get("name")
    ]


class CallGrammars:
    """Compiled grammars, one per set of tools. A schema the grammar converter or
    llama.cpp's parser cannot take (lookarounds, unanchored patterns, ``$ref``) falls back
    to a grammar of the call's shape alone, and failing that to none: a grammar llama.cpp
    cannot parse would crash the process at the first token, so each is checked with
    ``valid`` (llama.cpp's own parser) before use."""

    def __init__(self, valid: Callable[[str], bool]) -> None:
        self._valid = valid
        self._grammars: dict[str, Any] = {}

    def get(self, tools: Sequence[Mapping[str, Any]]) -> Any:
        """The grammar for one call to any of ``tools``, or None."""
        key = json.dumps(tools, sort_keys=True, default=str)
        if key not in self._grammars:
            self._grammars[key] = self._compile(tools)
            while len(self._grammars) > 32:
                del self._grammars[next(iter(self._grammars))]
        return self._grammars[key]

    def _compile(self, tools: Sequence[Mapping[str, Any]]) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        for attempt in (_plain_patterns(list(tools)), _loose(tools)):
            if not attempt:
                return None
            try:
                # The name first, as the model was trained to write it.
                rules = json_schema_to_gbnf(
                    json.dumps(call_schema(attempt)), prop_order=["name", "arguments"]
                )
            except Exception:  # the converter's own limits: try looser
                log.warning("tool schemas too rich for a call grammar; using a looser one")
                continue
            if self._valid(rules):
                return LlamaGrammar.from_string(rules, verbose=False)
            log.warning("llama.cpp refused a call grammar; using a looser one")
        return None


def grounded(body: str, request: LLMRequest) -> bool:
    """Whether a call the model wrote under the grammar carries values somebody said in
    the conversation (see :func:`~backchannel.tools.arguments.ungrounded`). A call the
    conversation already made, with the same arguments, counts only when the caller's
    latest words ask for it again: a small model repeats an earlier lookup on "goodbye"."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return False
    functions = [t.get("function") or {} for t in request.tools]
    schemas = {f.get("name"): f.get("parameters") or {} for f in functions}
    arguments = call.get("arguments") if isinstance(call, dict) else None
    if not isinstance(arguments, dict) or call.get("name") not in schemas:
        return False
    users = [i for i, m in enumerate(request.messages) if m.get("role") == "user"]
    since = request.messages[users[-1] + 1 :] if users else request.messages
    made = (call["name"], arguments)
    if made in _calls_made(since):
        return False  # made already for these words: never again for them
    messages = list(request.messages)
    if made in _calls_made(messages):  # asked again? only the latest words can say so
        messages = [request.messages[users[-1]]] if users else []
    heard = " ".join(str(m.get("content") or "") for m in messages)
    return not ungrounded(arguments, schemas[call["name"]], heard)


def possible(request: LLMRequest) -> bool:
    """Whether any tool could be called with values somebody said: not when every tool
    needs digits (a ``pattern`` of digits, required) and nobody has said a number. Asked
    before a doubtful call is written, which costs most of a second on a small model."""
    messages = list(request.messages)
    if messages and messages[0].get("role") == "system":
        messages = messages[1:]  # the assistant's prompt: its numbers are not the caller's
    heard = " ".join(str(m.get("content") or "") for m in messages)
    if any(t[:1].isdigit() for t in heard_tokens(heard)):
        return True
    for tool in request.tools:
        parameters = (tool.get("function") or {}).get("parameters") or {}
        properties = parameters.get("properties") or {}
        required = parameters.get("required") or []
        if not any(digits_only(properties.get(name) or {}) for name in required):
            return True
    return False


def _calls_made(messages: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any]]:
    made = []
    for message in messages:
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") or {}
            raw = function.get("arguments")
            arguments = parse_arguments(raw) if isinstance(raw, str) or raw is None else raw
            made.append((function.get("name"), arguments))
    return made
