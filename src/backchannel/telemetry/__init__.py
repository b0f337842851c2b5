"""What backchannel reports about itself: Prometheus metrics, OpenTelemetry spans, and
each turn's latency by stage."""

from .call_trace import CallTelemetry
from .tracing import configure as configure_tracing
from .turns import STAGES, TurnLatency, TurnTimer

__all__ = ["STAGES", "CallTelemetry", "TurnLatency", "TurnTimer", "configure_tracing"]
