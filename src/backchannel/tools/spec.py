"""The engine's view of a tool: one frozen value, resolved from config once per call."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from ..config import AssistantConfig, Delivery, ToolConfig, ToolMessage
from ..errors import ConfigError

DEFAULT_SYNC_TIMEOUT = 20.0
DEFAULT_ASYNC_TIMEOUT = 300.0


log = logging.getLogger("backchannel.tools")


class Route(StrEnum):
    """Where a tool call runs, which also decides who may answer it."""

    SERVER = "server"
    CLIENT = "client"
    IN_PROCESS = "in-process"
    BUILTIN = "builtin"


@dataclass(frozen=True, slots=True)
class ServerTarget:
    url: str
    timeout_seconds: float
    headers: Mapping[str, str] = field(default_factory=dict)
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class Spoken:
    """The fixed lines a tool says around a call (all optional)."""

    start: str | None = None
    start_blocking: bool = False
    complete: str | None = None
    failed: str | None = None
    delayed: str | None = None
    delayed_after: float = 0.0
    #: ``request-complete`` / ``request-failed`` lines with ``role: system``: not said,
    #: but given to the model, whose answer is said instead (Vapi's ``role``).
    complete_hint: str | None = None
    failed_hint: str | None = None

    def after(self, ok: bool) -> tuple[str | None, str | None]:
        """The line to say once the result is in, and the hint for the model."""
        return (self.complete, self.complete_hint) if ok else (self.failed, self.failed_hint)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]
    route: Route
    is_async: bool
    delivery: Delivery
    timeout_seconds: float
    cancel_on_interruption: bool
    spoken: Spoken
    server: ServerTarget | None = None
    #: ``transferCall``: the numbers the caller may be transferred to.
    destinations: tuple[str, ...] = ()

    def openai_schema(self) -> dict[str, Any]:
        """The tool as the OpenAI chat-completions ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


BUILTIN_TYPES = {"endCall": "endCall", "transferCall": "transferCall"}


def _spoken(messages: list[ToolMessage]) -> Spoken:
    found: dict[str, ToolMessage] = {}
    for m in messages:
        found.setdefault(m.type, m)
    start = found.get("request-start")
    delayed = found.get("request-response-delayed")

    def line(kind: str, *, hint: bool) -> str | None:
        m = found.get(kind)
        if m is None or (m.role == "system") != hint:
            return None
        return m.content

    return Spoken(
        start=start.content if start else None,
        start_blocking=bool(start and start.blocking),
        complete=line("request-complete", hint=False),
        failed=line("request-failed", hint=False),
        delayed=delayed.content if delayed else None,
        delayed_after=(delayed.timing_milliseconds or 0) / 1000 if delayed else 0.0,
        complete_hint=line("request-complete", hint=True),
        failed_hint=line("request-failed", hint=True),
    )


def resolve_tool(
    tool: ToolConfig, assistant: AssistantConfig, in_process: frozenset[str] = frozenset()
) -> ToolSpec:
    """Decide a tool's route, timeout and delivery from its config and the assistant's.

    A tool registered in Python wins over any URL; ``backchannel.runsOn: client`` makes
    it a client tool; otherwise its own ``server.url``, then the assistant's; with no URL
    at all it is a client tool.
    """
    if tool.type in BUILTIN_TYPES:
        name = tool.function.name if tool.function else BUILTIN_TYPES[tool.type]
        numbers = tuple(str(d["number"]) for d in tool.destinations if d.get("number"))
        params = _EMPTY_PARAMS
        if numbers:
            where = {"type": "string", "enum": list(numbers), "description": "phone number"}
            params = {"type": "object", "properties": {"destination": where}}
        return ToolSpec(
            name=name,
            description=tool.function.description if tool.function else _BUILTIN_DOCS[tool.type],
            parameters=tool.function.parameters if tool.function else params,
            destinations=numbers,
            route=Route.BUILTIN,
            is_async=False,
            delivery=Delivery.SILENT,
            timeout_seconds=DEFAULT_SYNC_TIMEOUT,
            cancel_on_interruption=False,
            spoken=_spoken(tool.messages),
        )
    if tool.type != "function" or tool.function is None:
        raise ConfigError(
            f"tool of type {tool.type!r} needs a 'function' with a name",
            code="invalid_tool",
        )
    settings = tool.backchannel
    server_cfg = tool.server if tool.server and tool.server.url else assistant.server
    server = None
    if tool.function.name in in_process:
        route = Route.IN_PROCESS
    elif settings.runs_on == "client":
        route = Route.CLIENT
    elif server_cfg is not None and server_cfg.url:
        route = Route.SERVER
        server = ServerTarget(
            url=server_cfg.url,
            timeout_seconds=server_cfg.timeout_seconds,
            headers=dict(server_cfg.headers),
            secret=server_cfg.secret,
        )
    else:
        route = Route.CLIENT
    if settings.timeout_seconds is not None:
        timeout = settings.timeout_seconds
    elif tool.async_:
        timeout = DEFAULT_ASYNC_TIMEOUT
    else:
        timeout = server.timeout_seconds if server else DEFAULT_SYNC_TIMEOUT
    return ToolSpec(
        name=tool.function.name,
        description=tool.function.description,
        parameters=tool.function.parameters,
        route=route,
        is_async=tool.async_,
        delivery=settings.delivery or Delivery.WHEN_IDLE,
        timeout_seconds=timeout,
        cancel_on_interruption=settings.cancel_on_interruption,
        spoken=_spoken(tool.messages),
        server=server,
    )


_EMPTY_PARAMS: Mapping[str, Any] = {"type": "object", "properties": {}}
_BUILTIN_DOCS = {
    "endCall": "End the call once the goodbye has been said.",
    "transferCall": "Transfer the caller to another phone number.",
}


def resolve_tools(
    assistant: AssistantConfig, in_process: Mapping[str, ToolSpec] | None = None
) -> dict[str, ToolSpec]:
    """Every tool the model may call in a call, by name; duplicate names are refused."""
    registered = dict(in_process or {})
    specs: dict[str, ToolSpec] = {}
    for tool in assistant.model.tools:
        if tool.type != "function" and tool.type not in BUILTIN_TYPES:
            # A tool kind Vapi runs itself (apiRequest, dtmf, query, …): kept in the
            # assistant as given, not offered to the model, which could not use it here.
            log.info("tool of type %r is not run by backchannel; not offered", tool.type)
            continue
        spec = resolve_tool(tool, assistant, frozenset(registered))
        if spec.name in specs:
            raise ConfigError(f"two tools are named {spec.name!r}", code="duplicate_tool")
        if spec.route is Route.IN_PROCESS:
            spec = _merge(registered[spec.name], spec)
        specs[spec.name] = spec
    for name, spec in registered.items():
        specs.setdefault(name, spec)
    return specs


def _merge(registered: ToolSpec, configured: ToolSpec) -> ToolSpec:
    """A Python tool listed in the assistant JSON: its async flag and lines come from there."""
    return replace(
        registered,
        is_async=configured.is_async or registered.is_async,
        spoken=configured.spoken if configured.spoken != Spoken() else registered.spoken,
    )
