"""Where a tool call runs, behind one interface.

An executor starts the work and delivers whatever results it has through ``deliver``;
it never decides what happens to them (the call does). Server tools send the call to a
:class:`ToolServer` (the signed webhook, or a fake in tests); client tools go to the
connected client through the call's ``tool-calls`` event; in-process tools run a Python function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BackchannelError
from ..results import ResultSource, ToolResult
from .registry import Deliver, ToolContext, ToolRegistry
from .spec import Route, ToolSpec


@dataclass(frozen=True, slots=True)
class Invocation:
    call_id: str
    tool_call_id: str
    spec: ToolSpec
    arguments: Mapping[str, Any]
    #: The call as a webhook's ``call`` object shows it (its id, and e.g. phone numbers).
    call: Mapping[str, Any] = field(default_factory=dict)


class SourcedDeliver(Protocol):
    async def __call__(self, result: ToolResult, source: ResultSource) -> object: ...


class Executor(Protocol):
    async def execute(self, invocation: Invocation, deliver: SourcedDeliver) -> None:
        """Run (or hand off) the call; return once nothing more will come from here."""
        ...


class ToolServer(Protocol):
    async def call(self, invocation: Invocation) -> Sequence[ToolResult]:
        """Send ``tool-calls`` to the tool's server; the results its reply carried.

        An empty reply means the server will deliver the result later by another route.
        Failures raise :class:`~backchannel.errors.BackchannelError` with a code.
        """
        ...


class InProcessExecutor:
    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    async def execute(self, invocation: Invocation, deliver: SourcedDeliver) -> None:
        tool = self.registry[invocation.spec.name]

        async def sourced(result: ToolResult) -> object:
            return await deliver(result, ResultSource.IN_PROCESS)

        _: Deliver = sourced
        ctx = ToolContext(
            invocation.call_id, invocation.tool_call_id, invocation.spec.name, sourced
        )
        try:
            value = await tool.invoke(invocation.arguments, ctx)
        except BackchannelError as exc:
            await ctx.fail(f"{exc.code}: {exc.message}")
            return
        except Exception as exc:  # a user's tool failing is a result, not a crash
            await ctx.fail(f"{type(exc).__name__}: {exc}")
            return
        if not ctx.deferred:
            await ctx.resolve(value)


class ServerExecutor:
    def __init__(self, server: ToolServer) -> None:
        self.server = server

    async def execute(self, invocation: Invocation, deliver: SourcedDeliver) -> None:
        try:
            results = await self.server.call(invocation)
        except BackchannelError as exc:
            await deliver(
                ToolResult(invocation.tool_call_id, error=f"{exc.code}: {exc.message}"),
                ResultSource.ENGINE,
            )
            return
        for result in results:
            await deliver(result, ResultSource.WEBHOOK)


class ClientExecutor:
    """Client tools run in the connected app, which learns of them from the call's
    ``tool-calls`` event (it lists each call's ``route``) and answers with a
    ``tool-call-result`` message; nothing runs here."""

    async def execute(self, invocation: Invocation, deliver: SourcedDeliver) -> None:
        return None


class UnavailableToolServer:
    """The tool server when none is configured: every call fails with a clear code."""

    async def call(self, invocation: Invocation) -> Sequence[ToolResult]:
        raise BackchannelError(
            f"no tool server is configured for {invocation.spec.name!r}",
            code="tool_server_unavailable",
        )


def executors_for(registry: ToolRegistry, server: ToolServer) -> dict[Route, Executor]:
    return {
        Route.IN_PROCESS: InProcessExecutor(registry),
        Route.SERVER: ServerExecutor(server),
        Route.CLIENT: ClientExecutor(),
    }
