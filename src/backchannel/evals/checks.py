"""What an eval expects, checked against what happened in its call.

Everything is read off what the caller sent and received (lines, audio frames and
events, each with its time on the eval's timeline) and the end-of-call report's tool
calls (the ledger's times). Each expectation gives a verdict with a message that says
what was seen, so a failure reads without the log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..demo.feel import announcement, floor_free
from .spec import EXPECTATIONS, Expectation

#: Events that end a passage of the assistant's (see :meth:`Happened.said`).
_BETWEEN = frozenset({"tool-calls", "tool-calls-result", "tool-call-progress", "user-interrupted"})
#: A caller's line may be spoken over this long at its start: the assistant stops once
#: the turn opens (the VAD's 0.2 s, and the audio already on its way).
BARGE_IN_GRACE = 0.6


@dataclass(frozen=True, slots=True)
class Happened:
    """One conversation, as the caller saw it."""

    events: list[dict[str, Any]]
    event_at: list[float]
    #: (start, end, text) of each caller line on the timeline.
    lines: list[tuple[float, float, str]]
    #: Arrival times of the assistant's audio frames (voice calls).
    frames: list[float]
    #: The end-of-call report's tool calls.
    tool_calls: list[dict[str, Any]]
    #: Wall-clock time of the timeline's zero, to place the ledger's times on it.
    wall0: float

    def said(self) -> list[tuple[float, str]]:
        """What the assistant said, passage by passage, each with the time its first
        transcript came. A passage is the sentences (or a first clause and the rest)
        heard one after another, until the caller speaks or a tool call or result
        comes between them: "Your order is out for delivery," and "arriving this
        afternoon." are one thing said, not two."""
        passages: list[tuple[float, str]] = []
        joined = False
        for e, at in zip(self.events, self.event_at, strict=False):
            kind, role = e.get("type"), e.get("role")
            if kind == "transcript" and role == "assistant":
                if e.get("transcriptType", "final") != "final":
                    continue
                text = str(e.get("transcript")).strip()
                if joined:
                    first, before = passages[-1]
                    passages[-1] = (first, f"{before} {text}")
                else:
                    passages.append((at, text))
                joined = True
            elif kind in _BETWEEN or (kind in ("transcript", "speech-update") and role == "user"):
                joined = False
        return passages

    def calls(self) -> list[dict[str, Any]]:
        """Each tool call the model made: ``name`` and ``arguments``."""
        return [
            item
            for e in self.events
            if e.get("type") == "tool-calls"
            for item in e.get("toolCallList", ())
        ]

    def ledger(self, tool: str) -> list[dict[str, Any]]:
        return [tc for tc in self.tool_calls if tc.get("name") == tool]

    def on_timeline(self, wall: float | None) -> float | None:
        return None if wall is None else wall - self.wall0


@dataclass(frozen=True, slots=True)
class Verdict:
    expectation: Expectation
    passed: bool
    detail: str


def check(expectation: Expectation, happened: Happened) -> Verdict:
    passed, detail = _CHECKS[expectation.kind](expectation.value, happened)
    return Verdict(expectation, passed, detail)


def _times(n: int) -> str:
    return "said once" if n == 1 else f"said {n} times"


def _matching(pattern: str, happened: Happened) -> list[str]:
    regex = re.compile(pattern, re.IGNORECASE)
    return [line for _at, line in happened.said() if regex.search(line)]


def _said(pattern: Any, happened: Happened) -> tuple[bool, str]:
    found = _matching(str(pattern), happened)
    if found:
        return True, f"said {found[0]!r}"
    return False, f"never said; the assistant said {[line for _at, line in happened.said()]}"


def _not_said(pattern: Any, happened: Happened) -> tuple[bool, str]:
    found = _matching(str(pattern), happened)
    return (not found), (f"said {found}" if found else "not said")


def _said_once(pattern: Any, happened: Happened) -> tuple[bool, str]:
    found = _matching(str(pattern), happened)
    return len(found) == 1, f"{_times(len(found))}: {found}"


def _arguments_match(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    return all(k in actual and str(actual[k]) == str(v) for k, v in expected.items())


def _tool_called(value: Any, happened: Happened) -> tuple[bool, str]:
    name = str(value["name"] if isinstance(value, dict) else value)
    expected = dict(value.get("arguments") or {}) if isinstance(value, dict) else {}
    calls = [c for c in happened.calls() if c.get("name") == name]
    if any(_arguments_match(expected, c.get("arguments") or {}) for c in calls):
        return True, f"called {name}"
    made = [f"{c.get('name')}{json.dumps(c.get('arguments'))}" for c in happened.calls()]
    return False, f"no call of {name} with {expected or 'any arguments'}; calls made: {made}"


def _not_called(value: Any, happened: Happened) -> tuple[bool, str]:
    calls = [c for c in happened.calls() if c.get("name") == str(value)]
    return (not calls), (f"called {len(calls)} times" if calls else "not called")


def _result_spoken_once(value: Any, happened: Happened) -> tuple[bool, str]:
    tool = str(value["tool"] if isinstance(value, dict) else value)
    records = happened.ledger(tool)
    if not records:
        return False, f"{tool} was never called"
    record = records[-1]
    if record.get("spokenAt") is None:
        return False, f"{tool}'s result was not announced (state {record.get('state')})"
    says = value.get("says") if isinstance(value, dict) else None
    if says is None:
        return True, "announced"
    arrived = happened.on_timeline(record.get("resolvedAt")) or 0.0
    regex = re.compile(str(says), re.IGNORECASE)
    after = [line for at, line in happened.said() if at >= arrived and regex.search(line)]
    return len(after) == 1, f"{_times(len(after))} after the result came: {after}"


def _silent(value: Any, happened: Happened) -> tuple[bool, str]:
    records = happened.ledger(str(value))
    if not records:
        return False, f"{value} was never called"
    record = records[-1]
    if record.get("resolvedAt") is None or record.get("deliveredAt") is None:
        return False, f"its result never entered the conversation (state {record.get('state')})"
    if record.get("spokenAt") is not None:
        return False, "its result was announced"
    return True, "in the history, not spoken"


def _not_over_caller(_value: Any, happened: Happened) -> tuple[bool, str]:
    if not happened.frames:
        return True, "no audio: a text call's lines take no time to type over"
    over = [
        (text, round(at - start, 2))
        for start, end, text in happened.lines
        for at in happened.frames
        if start + BARGE_IN_GRACE < at < end
    ]
    if over:
        first = over[0]
        return False, f"assistant audio over {first[0]!r} at {first[1]} s into it"
    return True, f"no assistant audio over the caller's {len(happened.lines)} lines"


def _spoken_within(value: Any, happened: Happened) -> tuple[bool, str]:
    records = happened.ledger(str(value["tool"]))
    arrived = happened.on_timeline(records[-1].get("resolvedAt")) if records else None
    if arrived is None:
        return False, f"no result for {value['tool']}"
    regex = re.compile(str(value["says"]), re.IGNORECASE)
    started = announcement(
        happened.events, happened.event_at, lambda s: regex.search(s) is not None, after=arrived
    )
    if started is None:
        return False, f"nothing matching {value['says']!r} was said after the result came"
    free = floor_free(arrived, started, happened.lines, happened.frames)
    waited = started - free
    limit = float(value["seconds"])
    return waited <= limit, (
        f"result at {arrived:.2f} s, floor free at {free:.2f} s, announcement at "
        f"{started:.2f} s: {waited:.2f} s after the floor was free (limit {limit:g} s)"
    )


_CHECKS: dict[str, Callable[[Any, Happened], tuple[bool, str]]] = {
    "said": _said,
    "not_said": _not_said,
    "said_once": _said_once,
    "tool_called": _tool_called,
    "not_called": _not_called,
    "result_spoken_once": _result_spoken_once,
    "silent": _silent,
    "not_over_caller": _not_over_caller,
    "spoken_within": _spoken_within,
}
#: Every expectation an eval file may name has its check.
assert set(_CHECKS) == set(EXPECTATIONS)
