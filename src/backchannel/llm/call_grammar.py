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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json

from ..tools.arguments import digits_only, heard_tokens, said_in, said_so_far, ungrounded
from .base import LLMRequest, parse_arguments

log = logging.getLogger("backchannel.llm")


#: How Qwen-style chat templates write a call inside the tag, up to its arguments object.
NAME_OPEN = '{"name": "'
ARGUMENTS_OPEN = '", "arguments":'


def by_name(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The tools (OpenAI function format) that have a name, by their name."""
    return {str(n): t for t in tools if (n := (t.get("function") or {}).get("name"))}


def _schema(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """A tool's parameters (its arguments' JSON schema) as given, or empty."""
    return (tool.get("function") or {}).get("parameters") or {}


def _parameters(request: LLMRequest, name: str) -> Mapping[str, Any]:
    return _schema(by_name(request.tools).get(name) or {})


def _words(messages: Sequence[Mapping[str, Any]]) -> str:
    return " ".join(str(m.get("content") or "") for m in messages)


def arguments_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of one tool's arguments, with no keys beyond its own."""
    parameters = dict((tool.get("function") or {}).get("parameters") or {"type": "object"})
    if parameters.get("properties") and "additionalProperties" not in parameters:
        parameters["additionalProperties"] = False  # no invented keys
    return parameters


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


@dataclass(frozen=True, slots=True)
class ArgumentsGrammar:
    """A call's arguments as written: ``opening``, fixed text evaluated in one batch
    (``{"order_id": "`` when the schema's first key is certain), then what ``grammar``
    allows (None: anything)."""

    opening: str
    grammar: Any


_RULE = re.compile(r"^([\w-]+) ::= (.*)$")


def _opened(rules: str) -> tuple[str, str] | None:
    """The first key of an object grammar from llama.cpp's converter, when it is certain
    (a required key comes first), as fixed text up to its value (and the value's opening
    quote), with the rules for what follows; None when the grammar is not of that shape."""
    lines = rules.strip().splitlines()
    table = {m[1]: m[2] for line in lines if (m := _RULE.match(line))}
    first = re.fullmatch(r'"\{" space ([\w-]+-kv)( .*)', table.get("root", ""))
    if len(table) != len(lines) or first is None:
        return None
    pair = re.fullmatch(r'("(?:[^"\\]|\\.)*") space ":" space ([\w-]+)', table[first[1]])
    if pair is None:
        return None
    try:
        key = json.loads(json.loads(pair[1]))  # a GBNF literal of a JSON string
    except (ValueError, TypeError):
        return None
    # Up to where the model's own tokens would break: ``": "`` then the value's first
    # token when it is quoted text, else ``":`` (a value after a written-out space is
    # one the model never saw split so, and it then chooses worse).
    opening, value = " {" + json.dumps(key, ensure_ascii=False) + ":", f"space {pair[2]}"
    quoted = table.get(pair[2], "")
    if quoted.startswith('"\\"" ') and "|" not in quoted:
        opening, value = opening + ' "', f"( {quoted[5:]} )"
    table["root"] = value + first[2]
    return opening, "\n".join(f"{name} ::= {rule}" for name, rule in table.items())


class CallGrammars:
    """Compiled grammars for the two parts of a call the model chooses: which tool (one
    of the assistant's names) and its arguments (that tool's JSON schema). What lies
    between them (``", "arguments":``) is fixed, so it is evaluated in one batch rather
    than sampled a token at a time. A schema the grammar converter or llama.cpp's parser
    cannot take (lookarounds, unanchored patterns, ``$ref``) falls back to any JSON
    object, and failing that to no grammar: a grammar llama.cpp cannot parse would crash
    the process at the first token, so each is checked with ``valid`` (llama.cpp's own
    parser) before use."""

    def __init__(self, valid: Callable[[str], bool]) -> None:
        self._valid = valid
        self._grammars: dict[str, Any] = {}
        self._opened: dict[str, ArgumentsGrammar] = {}

    def names(self, tools: Sequence[Mapping[str, Any]]) -> Any:
        """The grammar for a tool's name and the quote that closes it, or None."""
        names = by_name(tools)
        if not names:
            return None
        choice = " | ".join(json.dumps(n, ensure_ascii=False) for n in names)
        return self._compiled(f'root ::= ({choice}) "\\""')

    def arguments(self, tool: Mapping[str, Any]) -> ArgumentsGrammar:
        """How one call's arguments object is written: the fixed text it opens with and
        the grammar (or None) for the rest."""
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        schema = arguments_schema(tool)
        key = json.dumps(schema, sort_keys=True, default=str)
        if key in self._opened:
            return self._opened[key]
        written = ArgumentsGrammar("", None)
        for attempt in (_plain_patterns(schema), {"type": "object"}):
            try:
                rules = json_schema_to_gbnf(json.dumps(attempt))
            except Exception:  # the converter's own limits: try looser
                log.warning("a tool's schema is too rich for a grammar; using a looser one")
                continue
            opened = _opened(rules)
            if opened and (grammar := self._compiled(opened[1])):
                written = ArgumentsGrammar(opened[0], grammar)
                break
            if grammar := self._compiled(_spaced(rules)):
                written = ArgumentsGrammar("", grammar)
                break
        self._opened[key] = written
        _bound(self._opened)
        return written

    def _compiled(self, rules: str) -> Any:
        """llama.cpp's grammar for ``rules``, or None when its parser refuses them."""
        from llama_cpp.llama_grammar import LlamaGrammar

        if rules not in self._grammars:
            grammar = None
            if self._valid(rules):
                grammar = LlamaGrammar.from_string(rules, verbose=False)
            else:
                log.warning("llama.cpp refused a call grammar; using a looser one")
            self._grammars[rules] = grammar
            _bound(self._grammars)
        return self._grammars[rules]


def _spaced(rules: str) -> str:
    """The rules with the space before the object (`` {"``, one token) allowed."""
    return re.sub(r"^root ::= (.*)$", r'root ::= " "? ( \1 )', rules, count=1, flags=re.M)


def _bound(cache: dict[str, Any], size: int = 64) -> None:
    while len(cache) > size:
        del cache[next(iter(cache))]


def grounded(body: str, request: LLMRequest) -> bool:
    """Whether a call the model wrote under the grammar carries values somebody said in
    the conversation (see :func:`~backchannel.tools.arguments.ungrounded`). A call the
    conversation already made, with the same arguments, counts only when the caller's
    latest words ask for it again: a small model repeats an earlier lookup on "goodbye"."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return False
    arguments = call.get("arguments") if isinstance(call, dict) else None
    if not isinstance(arguments, dict) or call.get("name") not in by_name(request.tools):
        return False
    users = [i for i, m in enumerate(request.messages) if m.get("role") == "user"]
    since = request.messages[users[-1] + 1 :] if users else request.messages
    made = (call["name"], arguments)
    if made in _calls_made(since):
        return False  # made already for these words: never again for them
    messages = list(request.messages)
    if made in _calls_made(messages):  # asked again? only the latest words can say so
        messages = [request.messages[users[-1]]] if users else []
    return not ungrounded(arguments, _parameters(request, call["name"]), _words(messages))


def said_values(tool: Mapping[str, Any]) -> bool:
    """Whether a call to the tool carries a value that is checked against what was
    said: a required text that is not one of a list of choices (numbers are chosen,
    see :func:`doomed`)."""
    parameters = _schema(tool)
    properties = parameters.get("properties") or {}
    for key in parameters.get("required") or ():
        schema = properties.get(key) or {}
        if not schema.get("enum") and schema.get("type") == "string":
            return True
    return False


def possible(request: LLMRequest, name: str | None = None) -> bool:
    """Whether a tool (any, or the one named) could be called with values somebody said:
    not one that needs digits (a required ``pattern`` of digits) when no number is left
    for it: none was said, or only ones it was called with already, which only the
    caller's latest words can ask for again (see :func:`grounded`). Asked before a
    doubtful call is written, which costs a small model time."""
    messages = list(request.messages)
    if messages and messages[0].get("role") == "system":
        messages = messages[1:]  # the assistant's prompt: its numbers are not the caller's
    users = [m for m in messages if m.get("role") == "user"]
    latest, said = _numbers(_words(users[-1:])), _numbers(_words(messages))
    made = _calls_made(messages)
    for tool in request.tools:
        function = tool.get("function") or {}
        if name is not None and function.get("name") != name:
            continue
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") or {}
        required = parameters.get("required") or []
        if not any(digits_only(properties.get(key) or {}) for key in required):
            return True
        past = [a for n, a in made if n == function.get("name") and isinstance(a, Mapping)]
        used = _numbers(" ".join(str(v) for a in past for v in a.values()))
        if latest or said - used:
            return True
    return False


def _numbers(words: str) -> set[str]:
    return {t for t in heard_tokens(words) if t[:1].isdigit()}


#: Words that ask rather than say what a question is about.
_ASKING = frozenset(
    [
        "how",
        "much",
        "many",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "does",
        "did",
        "can",
        "could",
        "would",
        "will",
        "you",
        "your",
        "are",
        "was",
        "were",
        "have",
        "has",
        "had",
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "there",
        "any",
        "about",
        "like",
        "please",
        "just",
        "time",
        "get",
        "tell",
        "know",
        "its",
        "our",
        "not",
        "yes",
        "okay",
    ]
)


def answerable(request: LLMRequest) -> bool:
    """Whether the assistant's own prompt looks like it answers the caller's latest
    words: they hold no number, and what they are about (their words but the ones that
    ask) is in the prompt, all of it or all but one of three or more. "How much is a
    tune-up?" to a shop whose prompt gives the price is a question, not a request for
    a stock check, however much a small model leans to the tool."""
    messages = request.messages
    users = [m for m in messages if m.get("role") == "user"]
    if not users or not messages or messages[0].get("role") != "system":
        return False
    latest = heard_tokens(_words(users[-1:]))
    if any(t[:1].isdigit() for t in latest):
        return False
    about = [t for t in latest if len(t) >= 3 and t not in _ASKING]
    prompt = heard_tokens(_words(messages[:1]))
    missing = sum(not said_in(t, prompt) for t in about)
    return bool(about) and (missing == 0 or (len(about) >= 3 and missing == 1))


def filled(request: LLMRequest) -> bool:
    """Whether the caller's latest words hold a value one of the tools requires: one of
    its ``enum`` choices, or a number where it needs digits. A request made late in a
    call gets little of a small model's first-token weight even then."""
    users = [m for m in request.messages if m.get("role") == "user"]
    if not users:
        return False
    said = set(heard_tokens(_words(users[-1:])))
    number = any(t[:1].isdigit() for t in said)
    for tool in request.tools:
        parameters = _schema(tool)
        properties = parameters.get("properties") or {}
        for key in parameters.get("required") or []:
            schema = properties.get(key) or {}
            choices = {str(c).lower() for c in schema.get("enum") or ()}
            if (number and digits_only(schema)) or choices & said:
                return True
    return False


def doomed(name: str, partial: str, request: LLMRequest) -> bool:
    """Whether a call still being written to the tool ``name`` (``partial``: its
    arguments so far) already holds a value nobody said, so it can be dropped before it
    is finished (see :func:`grounded`): a value written whole and unsaid, a number being
    written that no number said contains, or a tool that needs a number nobody gave. A
    call that so far repeats one made before is judged by the caller's latest words."""
    if not partial.strip():
        return not possible(request, name)
    schema = _parameters(request, name)
    try:  # the values written whole, then with the one being written
        whole = from_json(partial, allow_partial=True)
        writing = from_json(partial, allow_partial="trailing-strings")
    except ValueError:
        return False
    if not isinstance(whole, dict) or not isinstance(writing, dict):
        return False
    messages = list(request.messages)
    users = [m for m in messages if m.get("role") == "user"]
    if users and any(n == name and _agrees(writing, a) for n, a in _calls_made(messages)):
        messages = users[-1:]  # a repeat so far: only the latest words can ask for it
    heard = _words(messages)
    if ungrounded(whole, schema, heard):
        return True
    started = {k: v for k, v in writing.items() if whole.get(k) != v and isinstance(v, str)}
    properties = schema.get("properties") or {}
    return any(not said_so_far(v, properties.get(k) or {}, heard) for k, v in started.items())


_NEXT_KEY = re.compile(r',\s*"[^"\\]*"\s*:')


def salvaged(name: str, partial: str, request: LLMRequest) -> str | None:
    """A doomed call (see :func:`doomed`) whose bad value belongs to an optional key,
    written after every required one: its arguments up to that key, to be closed with
    ``}``, so an invented guest name does not cost the booking. None when the bad value
    is a required one's, or what comes before it is not sound either."""
    required = set(_parameters(request, name).get("required") or ())
    keys = list(_NEXT_KEY.finditer(partial))
    if not keys:
        return None
    kept = partial[: keys[-1].start()]
    try:
        arguments = json.loads(kept + "}")
    except json.JSONDecodeError:
        return None
    key = json.loads(keys[-1].group()[1:].strip().rstrip(":").strip())
    if not isinstance(arguments, dict) or key in required or not required <= arguments.keys():
        return None
    return None if doomed(name, kept, request) else kept


def _agrees(writing: Mapping[str, Any], made: Any) -> bool:
    """Whether arguments being written can still turn out to be ``made`` (a past call's)."""
    if not isinstance(made, Mapping) or not writing:
        return False
    for key, value in writing.items():
        if key not in made:
            return False
        past = made[key]
        if value != past and not (isinstance(value, str) and str(past).startswith(value)):
            return False
    return True


def _calls_made(messages: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any]]:
    made = []
    for message in messages:
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") or {}
            raw = function.get("arguments")
            arguments = parse_arguments(raw) if isinstance(raw, str) or raw is None else raw
            made.append((function.get("name"), arguments))
    return made
