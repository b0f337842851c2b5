"""Spoken numbers in a tool call's arguments, as the tool's schema asks for them.

A caller says "four four one seven"; speech recognition writes "4,417", "4 4 1 7" or
"four four one seven", and a model passes that on. Where a parameter's JSON schema asks
for digits (a string ``pattern`` the value fails and its digits pass, or an ``integer``
/ ``number`` given as a string), the value is read as the number the caller said. Any
other value, and any value that already fits, is left exactly as the model wrote it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

_UNITS = {
    "zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_REPEAT = {"double": 2, "triple": 3}
_WORD = re.compile(r"[a-z]+|\d+")
_SEPARATORS = re.compile(r"[\s,.\-/#]+")
_DIGITS = re.compile(r"[0-9]{1,64}")


def normalise(arguments: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` with each spoken number read as its schema asks (top level only):
    a string whose ``pattern`` wants digits, an ``integer``. Numbers with a sign or a
    decimal point, and ``number`` values, are left as written."""
    properties = parameters.get("properties")
    out = dict(arguments)
    if not isinstance(properties, Mapping):
        return out
    for name, value in arguments.items():
        schema = properties.get(name)
        if isinstance(schema, Mapping) and isinstance(value, str):
            out[name] = _as_schema_asks(value, schema)
    return out


def _as_schema_asks(value: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":  # a sign or a decimal point is not ours to drop
        digits = None if re.search(r"[-+.]", value) else spoken_digits(value)
        return int(digits) if digits is not None and len(digits) <= 18 else value
    pattern = schema.get("pattern")
    if kind in (None, "string") and isinstance(pattern, str):
        try:
            rule = re.compile(pattern)
        except re.error:
            return value
        if rule.search(value):
            return value
        digits = spoken_digits(value)
        if digits is not None and rule.search(digits):
            return digits
    return value


def spoken_digits(text: str) -> str | None:
    """The digits a caller said, or None when ``text`` is not only a number.

    "4,417", "4 4 1 7", "44-17" → "4417"; "four four one seven", "double four one
    seven" → "4417"; "forty four seventeen" → "4417" (groups said one after another);
    "two thousand and five" → "2005".
    """
    compact = _SEPARATORS.sub("", text)
    if _DIGITS.fullmatch(compact):
        return compact
    words = [w for w in _WORD.findall(text.lower()) if w != "and"]
    if not words:
        return None
    out, i = "", 0
    while i < len(words):
        group, i = _group(words, i)
        if group is None:
            return None
        out += group
    return out


def _group(words: list[str], i: int) -> tuple[str | None, int]:
    """One number said as a unit ("seven", "forty four", "double four", "two thousand
    and five", "4417"), starting at ``words[i]``: its digits and where the next begins."""
    word = words[i]
    if word.isdigit():
        return word, i + 1
    if word in _REPEAT and i + 1 < len(words) and words[i + 1] in _UNITS:
        return str(_UNITS[words[i + 1]]) * _REPEAT[word], i + 2
    value, j = _below_thousand(words, i)
    if value is None:
        return None, i
    if j < len(words) and words[j] in ("hundred", "thousand"):
        total = 0
        while j < len(words) and words[j] in ("hundred", "thousand"):
            scale = 100 if words[j] == "hundred" else 1000
            total, value = (total + value) * scale, 0
            j += 1
            rest, k = _below_thousand(words, j)
            if rest is not None:
                value, j = rest, k
        return str(total + value), j
    return str(value), j


def _below_thousand(words: list[str], i: int) -> tuple[int | None, int]:
    if i >= len(words):
        return None, i
    word = words[i]
    if word in _UNITS:
        return _UNITS[word], i + 1
    if word in _TEENS:
        return _TEENS[word], i + 1
    if word in _TENS:
        unit = _UNITS.get(words[i + 1], 0) if i + 1 < len(words) else 0
        if unit:  # "forty four"; "forty oh" is two numbers
            return _TENS[word] + unit, i + 2
        return _TENS[word], i + 1
    return None, i


#: Words too common to show that a value came from the conversation.
_COMMON = frozenset(
    [
        "the",
        "a",
        "an",
        "of",
        "for",
        "to",
        "and",
        "my",
        "me",
        "at",
        "on",
        "in",
        "is",
        "it",
        "this",
        "that",
        "with",
    ]
)
_NUMBER_WORDS = frozenset([*_UNITS, *_TEENS, *_TENS, *_REPEAT, "hundred", "thousand"])


#: Digits in a row that make a number said as it is (an account, a phone number), never
#: reshaped from words like a time or a price.
LONG_RUN = 8


def ungrounded(
    arguments: Mapping[str, Any], parameters: Mapping[str, Any], heard: str
) -> list[str]:
    """The arguments whose values nobody said: a free-text or digits value that is not
    in ``heard`` (the conversation's words). Enum, number and boolean values are chosen
    from what the schema offers, so they are not checked. A small model asked to call
    a tool it should not call fills it with placeholders ("12345", "John Doe",
    "2023-10-15"); a real request carries the caller's own values."""
    properties = parameters.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    tokens = heard_tokens(heard)
    missing = []
    for name, value in arguments.items():
        schema = properties.get(name)
        schema = schema if isinstance(schema, Mapping) else {}
        if not isinstance(value, str) or not _checkable(value, schema):
            continue
        if not said_in(value, tokens):
            missing.append(name)
    return missing


def said_so_far(value: str, schema: Mapping[str, Any], heard: str) -> bool:
    """Whether a value still being written can yet turn out to be one somebody said in
    ``heard``, judged only where the finished value will be judged the same way: a
    digits value (a ``pattern`` of digits, or digits so far) must be part of a number
    said, and a run of more than :data:`LONG_RUN` digits, or a word longer than any
    spoken one, must have been said as it is. Other text is judged once it is whole: it
    may yet grow past the few words that are checked at all."""
    if not _checkable(value, schema):
        return True
    tokens = heard_tokens(heard)
    if digits_only(schema) or re.fullmatch(r"[\d ,.\-]+", value.strip()):
        return said_in(value, tokens)
    parts = heard_tokens(value)
    last = parts[-1] if parts else ""
    if len(last) > 24 or (last.isdigit() and len(last) > LONG_RUN and value[-1].isdigit()):
        return said_in(last, tokens)
    return True


def _checkable(value: str, schema: Mapping[str, Any]) -> bool:
    """Values a caller says as they are: digits, and short names or words. Not chosen
    ones (``enum``, ``const``), nor ones the model must reshape (a ``format``, another
    kind of ``pattern``, free text of more than a few words)."""
    if "enum" in schema or "const" in schema or "format" in schema:
        return False
    if isinstance(schema.get("pattern"), str):
        return digits_only(schema)
    return len(value.split()) <= 4


def digits_only(schema: Mapping[str, Any]) -> bool:
    """Whether a string schema's ``pattern`` takes digits and nothing else."""
    pattern = schema.get("pattern")
    if not isinstance(pattern, str):
        return False
    return re.fullmatch(r"\^?(\[0-9\]|\\d)[+*]?(\{\d+(,\d*)?\})?\$?", pattern) is not None


@functools.lru_cache(maxsize=64)
def heard_tokens(text: str) -> tuple[str, ...]:
    """The words of ``text``, lower case, with each spoken number as one run of digits
    ("order eight one seven two" → ("order", "8172"); "4,417" → ("4417",)). Cached: a
    call being written is checked against the same conversation at every token."""
    out: list[str] = []
    run: list[str] = []
    for word in re.findall(r"[a-z]+|\d+(?:[ ,.\-]\d+)*", text.lower()):
        if word[0].isdigit() or word in _NUMBER_WORDS:
            run.append(word)
            continue
        if run:
            out.append(spoken_digits(" ".join(run)) or " ".join(run))
            run = []
        out.append(word)
    if run:
        out.append(spoken_digits(" ".join(run)) or " ".join(run))
    return tuple(out)


def said_in(value: str, tokens: Sequence[str]) -> bool:
    """Whether every part of ``value`` is among ``tokens`` (see :func:`heard_tokens`): a
    number within a number said, a word by its stem (its first five letters either way,
    "delivered" / "delivery"); short and common words always count."""
    for part in heard_tokens(value):
        if part[0].isdigit():
            if not any(part in t for t in tokens if t[:1].isdigit()):
                return False
        elif len(part) >= 3 and part not in _COMMON:
            stem = part[:5]  # "delivered" / "delivery", "pizzas" / "pizza"
            if not any(t.startswith(stem) or part.startswith(t[:5]) for t in tokens if len(t) >= 3):
                return False
    return True
