"""Tool calls written as text, the way local models emit them.

A model served through llama.cpp has no structured tool-call channel: Qwen2.5 writes
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` into its text, and a small
model gets the form wrong often enough to matter — the closing tag goes missing, the tag
is ``<tools>``, the JSON has single quotes, doubled braces or a trailing comma, the
arguments come as a string, the call is in OpenAI's ``{"type": "function", ...}`` shape,
or it is bare JSON with no tags at all, sometimes in a code fence.

:class:`ToolMarkupScanner` reads the stream as it is generated. Text the user should
hear is released at once; anything that might be (the start of) a tool call is held
until the model is done, then parsed forgivingly. Nothing the model wrote is dropped:
what does not parse as a call is spoken as text.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from collections.abc import Collection, Mapping
from typing import Any

from .base import ToolCallRequest, parse_arguments

#: Qwen's own tag first; small models also wrap calls in the tag the prompt lists the
#: tools under, or in an older function-calling tag.
OPENERS = ("<tool_call>", "<tools>", "<function_call>")
_BLOCK = re.compile(r"<(tool_call|tools|function_call)>(.*?)(?:</\1>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
#: A call's name, as soon as it is written ("name": "check_order").
_NAMED = re.compile(r"""["']name["']\s*:\s*["']([A-Za-z0-9_.\-]+)["']""")


class ToolMarkupScanner:
    def __init__(self, tool_names: Collection[str]) -> None:
        self.tool_names = frozenset(tool_names)
        self._pending = ""  # released nothing of this yet
        self._held = False  # a call has begun (or the reply opened like bare JSON)
        self._started = False  # some non-space text has been released
        self._announced = 0  # calls reported by ``starting``

    def feed(self, text: str) -> str:
        """Take generated text; return what can be spoken now."""
        self._pending += text
        if self._held:
            return ""
        if not self._started:
            head = self._pending.lstrip()
            if not head:
                return ""
            if self.tool_names and head[0] in "{`[":
                self._held = True  # looks like a bare call: wait for the whole reply
                return ""
        at = min((i for i in map(self._pending.find, OPENERS) if i >= 0), default=-1)
        if at >= 0:
            out, self._pending, self._held = self._pending[:at], self._pending[at:], True
            return self._release(out)
        # Keep back a tail that could be the start of the tag.
        keep = _partial_tag(self._pending)
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return self._release(out)

    def starting(self) -> str | None:
        """The name of a tool whose call has begun in the held text, once per call. With
        a single tool, a call tag is enough: the call can only be to that tool."""
        if not self._held:
            return None
        if len(self.tool_names) == 1 and not self._announced and self._pending.startswith(OPENERS):
            self._announced = 1  # its name, when written, is this call's
            return next(iter(self.tool_names))
        found = _NAMED.findall(self._pending)
        if len(found) <= self._announced:
            return None
        name = str(found[self._announced])
        self._announced += 1
        return name if name in self.tool_names else None

    def finish(self) -> tuple[str, list[ToolCallRequest]]:
        """The rest of the text and the tool calls, once generation has ended."""
        rest, self._pending = self._pending, ""
        if not self._held:
            return self._release(rest), []
        calls: list[ToolCallRequest] = []
        if _BLOCK.search(rest):
            for _tag, body in _BLOCK.findall(rest):
                calls.extend(self._calls_in(body, bare=False))
            # A call may also follow the tags bare (after an echo of the definition).
            outside = " ".join(_BLOCK.sub(" ", rest).split())
            bare = self._calls_in(outside, bare=True)
            calls.extend(bare)
            return ("" if bare else self._release(outside)), calls
        calls = self._calls_in(rest, bare=True)
        return ("", calls) if calls else (self._release(rest), [])

    def _release(self, text: str) -> str:
        if text.strip():
            self._started = True
        return text

    def _calls_in(self, body: str, *, bare: bool) -> list[ToolCallRequest]:
        """The calls in ``body``. Bare JSON (no tags) counts only when it names a tool we
        offered or has a call's shape, so an answer that is JSON is not taken for one;
        a call to a tool that does not exist still goes to the engine, which tells the
        model so instead of the user hearing JSON read aloud."""
        calls = []
        for obj in _json_objects(_FENCE.sub("", body)):
            call = _as_call(obj)
            if call is None:
                continue
            if bare and call.name not in self.tool_names and not _call_shaped(obj):
                continue
            calls.append(call)
        return calls


def _partial_tag(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a tag."""
    longest = max(len(tag) for tag in OPENERS) - 1
    for n in range(min(longest, len(text)), 0, -1):
        if any(tag.startswith(text[-n:]) for tag in OPENERS):
            return n
    return 0


def _json_objects(text: str) -> list[Any]:
    """Every JSON value in ``text``, in order; single-quoted (Python-style) dicts too."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    i = 0
    while (start := _next_open(text, i)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value, end = _lenient(text, start)
        if value is None:  # e.g. "{{...}}": try again from the next brace in
            i = start + 1
            continue
        found.extend(value if isinstance(value, list) else [value])
        i = end
    return found


def _next_open(text: str, i: int) -> int:
    positions = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
    return min(positions) if positions else -1


def _lenient(text: str, start: int) -> tuple[Any, int]:
    """Parse the balanced object at ``start`` with trailing commas or Python quoting."""
    end = _balanced_end(text, start)
    chunk = text[start:end]
    for candidate in (re.sub(r",\s*([}\]])", r"\1", chunk), chunk):
        try:
            return json.loads(candidate), end
        except json.JSONDecodeError:
            pass
        try:
            return ast.literal_eval(candidate), end
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    return None, end


def _balanced_end(text: str, start: int) -> int:
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        c = text[i]
        if escaped:
            escaped = False
        elif quote:
            if c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _call_shaped(obj: Any) -> bool:
    inner = obj.get("function", obj) if isinstance(obj, Mapping) else None
    return isinstance(inner, Mapping) and ("arguments" in inner or "parameters" in inner)


def _is_schema(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("type") == "object" and "properties" in value


def _as_call(obj: Any) -> ToolCallRequest | None:
    if not isinstance(obj, Mapping):
        return None
    fn = obj.get("function")
    if isinstance(fn, Mapping):  # OpenAI shape: {"type": "function", "function": {...}}
        obj = fn
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    if "arguments" not in obj and _is_schema(obj.get("parameters")):
        return None  # the model echoed the tool's definition, not a call
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = parse_arguments(args)
    elif not isinstance(args, Mapping):
        args = {"value": args}
    return ToolCallRequest(id=f"call_{secrets.token_hex(8)}", name=name, arguments=dict(args))
