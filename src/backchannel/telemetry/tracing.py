"""OpenTelemetry tracing: a span for each call, turn and stage, model request, tool
call and webhook delivery.

Off by default, at no cost: until :func:`configure` installs the SDK, ``TRACER`` is the
API's no-op tracer. :func:`configure` reads the standard variables:

* ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or ``none`` (a comma-separated list).
  Unset, it is ``otlp`` when an OTLP endpoint is set, else tracing stays off.
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``..._HEADERS``,
  ``..._TIMEOUT``: read by the OTLP exporter itself. The protocol is ``http/protobuf``
  (``OTEL_EXPORTER_OTLP_PROTOCOL``; ``grpc`` needs ``opentelemetry-exporter-otlp-proto-grpc``).
* ``OTEL_SERVICE_NAME`` (default ``backchannel``), ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_SDK_DISABLED``, ``OTEL_BSP_*``.

Every span takes its times from the caller's clock (:func:`span`), so a test's fake
clock gives a consistent tree. Ids are attributes (:data:`CALL_ID`, ``gen_ai.tool.call.id``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ..clock import Clock
from ..errors import ConfigError

TRACER = trace.get_tracer("backchannel")

CALL_ID = "backchannel.call.id"
CANCELLED = "backchannel.cancelled"

_installed: Any = None  # the SDK's TracerProvider, once configure() has installed it


def ns(wall: float) -> int:
    """A wall-clock time in seconds as OpenTelemetry's nanoseconds."""
    return int(wall * 1e9)


def start(
    name: str,
    clock: Clock,
    *,
    parent: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    at: float | None = None,
) -> Span:
    """Start a span at ``at`` (wall seconds; now by ``clock`` if not given)."""
    when = clock.wall() if at is None else at
    return TRACER.start_span(
        name, context=parent, kind=kind, attributes=attributes, start_time=ns(when)
    )


def end(span: Span, clock: Clock, *, at: float | None = None) -> None:
    span.end(end_time=ns(clock.wall() if at is None else at))


@contextmanager
def span(
    name: str,
    clock: Clock,
    *,
    parent: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span around a block: an exception marks it failed; a cancellation (a barge-in,
    the call ending) marks it :data:`CANCELLED`, not failed."""
    current = start(name, clock, parent=parent, attributes=attributes, kind=kind)
    try:
        yield current
    except asyncio.CancelledError:
        current.set_attribute(CANCELLED, True)
        raise
    except Exception as exc:
        current.record_exception(exc)
        current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        end(current, clock)


def under(span: Span | None) -> Context | None:
    """The context that makes ``span`` the parent of the next one."""
    return trace.set_span_in_context(span) if span is not None else None


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Install the SDK with the exporters the ``OTEL_*`` variables ask for, once per
    process; whether tracing is on. ``ConfigError`` (``invalid_config``) for an
    exporter or protocol this install cannot provide."""
    global _installed
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = _exporter_names(env)
    if not names:
        return False
    if _installed is not None:
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "backchannel"})
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    trace.set_tracer_provider(provider)
    _installed = provider
    return True


def flush() -> None:
    """Send what the exporters still hold (at shutdown)."""
    if _installed is not None:
        _installed.force_flush()


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    chosen = env.get("OTEL_TRACES_EXPORTER")
    if chosen is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [n for n in (part.strip().lower() for part in chosen.split(",")) if n and n != "none"]


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={name!r} is not available: use otlp, console or none",
            code="invalid_config",
        )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise ConfigError(
                "OTLP over gRPC needs opentelemetry-exporter-otlp-proto-grpc installed; "
                "or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
                code="invalid_config",
            ) from exc
        return GrpcExporter()
    raise ConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not available: use http/protobuf or grpc",
        code="invalid_config",
    )
