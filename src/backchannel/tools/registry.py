"""In-process tools: plain Python functions the model can call.

    tools = ToolRegistry()

    @tools.tool(is_async=True)
    async def check_order(order_id: str) -> dict:
        "Look up an order's delivery status."
        return await shop.status(order_id)

The JSON schema comes from the signature (via pydantic), the description from the
docstring. A function that takes a :class:`ToolContext` can report progress, or
:meth:`~ToolContext.defer` and resolve the call later from anywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, get_type_hints, overload

from pydantic import ConfigDict, create_model

from ..config import Delivery
from ..errors import ConfigError
from ..results import ToolResult
from .spec import (
    DEFAULT_ASYNC_TIMEOUT,
    DEFAULT_SYNC_TIMEOUT,
    Route,
    Spoken,
    ToolSpec,
)


class Deliver(Protocol):
    async def __call__(self, result: ToolResult) -> object: ...


@dataclass
class ToolContext:
    """What a running in-process tool knows about its call, and how it reports back."""

    call_id: str
    tool_call_id: str
    name: str
    _deliver: Deliver
    deferred: bool = field(default=False, init=False)

    async def progress(self, result: Any = None, *, message: str | None = None) -> None:
        """Record a progress update (``willContinue``); spoken if it has a ``message``."""
        await self._deliver(
            ToolResult(
                self.tool_call_id, self.name, result=result, message=message, will_continue=True
            )
        )

    async def resolve(self, result: Any = None, *, message: str | None = None) -> None:
        await self._deliver(
            ToolResult(self.tool_call_id, self.name, result=result, message=message)
        )

    async def fail(self, error: str, *, message: str | None = None) -> None:
        await self._deliver(ToolResult(self.tool_call_id, self.name, error=error, message=message))

    def defer(self) -> None:
        """Promise to call :meth:`resolve` or :meth:`fail` later; the return value is ignored."""
        self.deferred = True


ToolFunction = Callable[..., Awaitable[Any]] | Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RegisteredTool:
    spec: ToolSpec
    function: ToolFunction
    context_param: str | None

    async def invoke(self, arguments: Mapping[str, Any], ctx: ToolContext) -> Any:
        kwargs = dict(arguments)
        if self.context_param:
            kwargs[self.context_param] = ctx
        value = self.function(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, RegisteredTool] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> RegisteredTool:
        return self._tools[name]

    def specs(self) -> dict[str, ToolSpec]:
        return {name: t.spec for name, t in self._tools.items()}

    @overload
    def tool(self, fn: F, /) -> F: ...

    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        is_async: bool = False,
        delivery: Delivery = Delivery.WHEN_IDLE,
        timeout_seconds: float | None = None,
        cancel_on_interruption: bool = False,
        spoken: Spoken | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        is_async: bool = False,
        delivery: Delivery = Delivery.WHEN_IDLE,
        timeout_seconds: float | None = None,
        cancel_on_interruption: bool = False,
        spoken: Spoken | None = None,
    ) -> Any:
        """Register a function as a tool; usable bare (``@tools.tool``) or with options."""

        def register(f: F) -> F:
            tool_name = name or f.__name__
            if tool_name in self._tools:
                raise ConfigError(f"tool {tool_name!r} is registered twice", code="duplicate_tool")
            params, ctx_param = _parameters_schema(f)
            spec = ToolSpec(
                name=tool_name,
                description=description or inspect.cleandoc(f.__doc__ or ""),
                parameters=params,
                route=Route.IN_PROCESS,
                is_async=is_async,
                delivery=delivery,
                timeout_seconds=timeout_seconds
                or (DEFAULT_ASYNC_TIMEOUT if is_async else DEFAULT_SYNC_TIMEOUT),
                cancel_on_interruption=cancel_on_interruption,
                spoken=spoken or Spoken(),
            )
            self._tools[tool_name] = RegisteredTool(spec, f, ctx_param)
            return f

        return register(fn) if fn is not None else register


def _parameters_schema(fn: Callable[..., Any]) -> tuple[dict[str, Any], str | None]:
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    ctx_param = None
    for pname, param in inspect.signature(fn).parameters.items():
        hint = hints.get(pname, Any)
        if hint is ToolContext:
            ctx_param = pname
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (hint, default)
    model = create_model(f"{fn.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields)
    schema: dict[str, Any] = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema, ctx_param
