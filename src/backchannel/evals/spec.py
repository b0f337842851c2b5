"""An eval file: an assistant, how its tools answer, and conversations to play against
it, each with what must be true afterwards.

YAML or JSON, read once and checked whole: a mistake is a ``ConfigError``
(``invalid_eval``) naming where it is, before any call starts::

    name: order desk
    assistant: order-desk.json      # a path (relative to this file) or Vapi's JSON inline
    tools:                          # answered by the eval's own tool server
      check_order: {result: {status: out for delivery}, after: 3}
    scripted:                       # the rules of ``--llm scripted``; the first match answers
      - {heard: "order", say: "Let me check.", call: check_order, arguments: {order_id: "{digits}"}}
      - {result: "out for delivery", say: "Your order is out for delivery."}
      - {say: "Anything else?"}
    conversations:
      - name: the result is said once, when the floor is free
        steps:
          - say: Where is my order 4417?
          - say: Also, what does shipping cost?
          - wait_for: {said: "out for delivery"}
        expect:
          - tool_called: {name: check_order, arguments: {order_id: "4417"}}
          - said_once: out for delivery
          - spoken_within: {tool: check_order, says: "out for delivery", seconds: 3}
          - not_over_caller: true

Steps: ``say`` (a caller line, after the assistant falls quiet; ``{say: …, interrupt:
true}`` speaks at once), ``wait`` (seconds), ``wait_for`` (``said``, ``tool_called`` or
``result`` of a tool, within ``within`` seconds, 120 by default; or ``quiet``: the
assistant has answered the last line and its tool calls, then said nothing for that
many seconds), ``result`` (post a tool's result through the API: ``{tool, result,
after, delivery, message, willContinue}``). The caller hangs up after the last step,
once the assistant is quiet.

A tool's plan with no ``result`` or ``error`` only acknowledges an async tool's calls:
its results come from ``result`` steps.

Expectations: ``said``, ``not_said``, ``said_once`` (a regular expression, searched in
each assistant line, case-insensitive); ``tool_called`` (a name, or ``{name,
arguments}`` where the arguments given must match); ``not_called`` (a name);
``result_spoken_once`` (``{tool, says}``: announced, and exactly one line after the
result says it); ``silent`` (a tool whose result entered the history unspoken);
``not_over_caller`` (no assistant audio over the caller's lines after their first
0.6 s); ``spoken_within`` (``{tool, says, seconds}``: the announcement starts within
that long of the floor being free).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

STEPS = ("say", "wait", "wait_for", "result")
EXPECTATIONS = (
    "said",
    "not_said",
    "said_once",
    "tool_called",
    "not_called",
    "result_spoken_once",
    "silent",
    "not_over_caller",
    "spoken_within",
)
MODES = ("text", "voice")


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    value: Any
    #: The step's other keys (``interrupt``, ``within``…).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Expectation:
    kind: str
    value: Any

    def describe(self) -> str:
        return f"{self.kind}: {json.dumps(self.value)}"


@dataclass(frozen=True, slots=True)
class Conversation:
    name: str
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...]
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How the eval's tool server answers a tool: its result (or error), ``after``
    seconds (for an async tool, posted later through the API; 0 answers in the reply)."""

    result: Any = None
    error: str | None = None
    after: float = 0.0
    message: str | None = None
    delivery: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of the scripted model: ``heard`` (the caller's newest words) or
    ``result`` (a tool message or result note the model is answering) must match."""

    heard: re.Pattern[str] | None
    result: re.Pattern[str] | None
    say: str | None
    call: str | None
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EvalFile:
    path: Path
    name: str
    assistant: dict[str, Any]
    tools: dict[str, ToolPlan]
    rules: tuple[Rule, ...]
    conversations: tuple[Conversation, ...]
    mode: str = "text"


def load(path: Path) -> EvalFile:
    """Read and check an eval file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise _invalid(path, f"cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise _invalid(
            path, f"is not valid {'YAML' if path.suffix != '.json' else 'JSON'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise _invalid(path, "must be a mapping at the top")
    assistant = data.get("assistant")
    if isinstance(assistant, str):
        assistant_path = (path.parent / assistant).resolve()
        try:
            assistant = json.loads(assistant_path.read_text())
        except (OSError, ValueError) as exc:
            raise _invalid(path, f"assistant {assistant!r}: {exc}") from exc
    if not isinstance(assistant, dict):
        raise _invalid(path, "needs `assistant`: Vapi's assistant JSON, or a path to it")
    mode = str(data.get("mode", "text"))
    if mode not in MODES:
        raise _invalid(path, f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    conversations = data.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise _invalid(path, "needs `conversations`: a list of at least one")
    return EvalFile(
        path=path,
        name=str(data.get("name") or path.stem),
        assistant=assistant,
        tools={str(k): _tool_plan(path, k, v) for k, v in _mapping(path, data, "tools").items()},
        rules=tuple(_rule(path, i, r) for i, r in enumerate(data.get("scripted") or [])),
        conversations=tuple(_conversation(path, i, c) for i, c in enumerate(conversations)),
        mode=mode,
    )


def _mapping(path: Path, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise _invalid(path, f"`{key}` must be a mapping")
    return value


def _invalid(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}", code="invalid_eval")


def _tool_plan(path: Path, name: str, value: Any) -> ToolPlan:
    if not isinstance(value, dict):
        raise _invalid(path, f"tools.{name} must be a mapping (result, error, after…)")
    unknown = set(value) - {"result", "error", "after", "message", "delivery"}
    if unknown:
        raise _invalid(path, f"tools.{name}: unknown keys {sorted(unknown)}")
    return ToolPlan(
        result=value.get("result"),
        error=value.get("error"),
        after=_seconds(path, f"tools.{name}.after", value.get("after", 0)),
        message=value.get("message"),
        delivery=value.get("delivery"),
    )


def _seconds(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _invalid(path, f"{where} must be a number of seconds, not {value!r}")
    return float(value)


def _pattern(path: Path, where: str, value: Any) -> re.Pattern[str]:
    try:
        return re.compile(str(value), re.IGNORECASE)
    except re.error as exc:
        raise _invalid(path, f"{where}: {value!r} is not a regular expression: {exc}") from exc


def _rule(path: Path, i: int, value: Any) -> Rule:
    where = f"scripted[{i}]"
    if not isinstance(value, dict) or not ({"say", "call"} & set(value)):
        raise _invalid(path, f"{where} must say something or call a tool")
    return Rule(
        heard=_pattern(path, where, value["heard"]) if "heard" in value else None,
        result=_pattern(path, where, value["result"]) if "result" in value else None,
        say=str(value["say"]) if value.get("say") is not None else None,
        call=str(value["call"]) if value.get("call") is not None else None,
        arguments=dict(value.get("arguments") or {}),
    )


def _conversation(path: Path, i: int, value: Any) -> Conversation:
    where = f"conversations[{i}]"
    if not isinstance(value, dict):
        raise _invalid(path, f"{where} must be a mapping (name, steps, expect)")
    name = str(value.get("name") or f"conversation {i + 1}")
    steps = [_step(path, f"{where}.steps[{j}]", s) for j, s in enumerate(value.get("steps") or [])]
    expect = [
        _expectation(path, f"{where}.expect[{j}]", e)
        for j, e in enumerate(value.get("expect") or [])
    ]
    mode = value.get("mode")
    if mode is not None and mode not in MODES:
        raise _invalid(path, f"{where}.mode must be one of {', '.join(MODES)}")
    return Conversation(name, tuple(steps), tuple(expect), mode)


def _step(path: Path, where: str, value: Any) -> Step:
    if isinstance(value, dict):
        kinds = [k for k in value if k in STEPS]
        if len(kinds) == 1:
            kind = kinds[0]
            arg = value[kind]
            options = {k: v for k, v in value.items() if k != kind}
            if "within" in options:
                _seconds(path, f"{where}.within", options["within"])
            if kind == "wait":
                _seconds(path, where, arg)
            if kind == "result":
                if not (isinstance(arg, dict) and "tool" in arg):
                    raise _invalid(path, f"{where}: result needs `tool`")
                _seconds(path, f"{where}.after", arg.get("after", 0))
            if kind == "wait_for":
                if not (
                    isinstance(arg, dict) and {"said", "tool_called", "result", "quiet"} & set(arg)
                ):
                    raise _invalid(
                        path, f"{where}: wait_for needs said, tool_called, result or quiet"
                    )
                if "said" in arg:
                    _pattern(path, where, arg["said"])
                if "quiet" in arg:
                    _seconds(path, f"{where}.quiet", arg["quiet"])
            return Step(kind, arg, options)
    raise _invalid(path, f"{where} must have exactly one of {', '.join(STEPS)}")


def _expectation(path: Path, where: str, value: Any) -> Expectation:
    if isinstance(value, dict) and len(value) == 1:
        [(kind, arg)] = value.items()
        if kind in EXPECTATIONS:
            if kind in ("said", "not_said", "said_once"):
                _pattern(path, where, arg)
            if kind == "spoken_within":
                if not (isinstance(arg, dict) and {"tool", "says", "seconds"} <= set(arg)):
                    raise _invalid(path, f"{where}: spoken_within needs tool, says and seconds")
                _seconds(path, f"{where}.seconds", arg["seconds"])
            shapeless = isinstance(arg, dict) and (
                "name" not in arg or not isinstance(arg.get("arguments", {}), dict)
            )
            if kind == "tool_called" and shapeless:
                raise _invalid(path, f"{where}: tool_called needs `name` (`arguments`: a mapping)")
            if isinstance(arg, dict) and "says" in arg:
                _pattern(path, where, arg["says"])
            return Expectation(kind, arg)
    raise _invalid(path, f"{where} must be one of {', '.join(EXPECTATIONS)}")
