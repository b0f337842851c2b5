"""Prometheus metrics: what a running server has done, for the ``/metrics`` scrape.

Every metric lives in ``prometheus_client``'s process-wide registry, so a process that
embeds several engines reports their sum. Labels are bounded sets (stages, sources,
outcomes, policies, worker names), never ids: a call id belongs in a trace, not in a
label. Counters only go up; a test reads them before and after and compares.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: Seconds: a voice turn's stages run from tens of milliseconds to a few seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CALLS_LIVE = Gauge("backchannel_calls_live", "Calls in progress in this process.")
CALLS = Counter("backchannel_calls", "Calls started in this process.")
CALLS_ENDED = Counter(
    "backchannel_calls_ended", "Calls ended in this process, by endedReason.", ["reason"]
)
TURN_SECONDS = Histogram(
    "backchannel_turn_latency_seconds",
    "From the end of the caller's speech to the assistant's first audio, by stage: vad "
    "(to the end of the turn), stt (to the final transcript), llm (to the first words "
    "handed to speech), tts (to the first audio), total.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
TOOL_CALLS = Counter(
    "backchannel_tool_calls",
    "Tool calls the model made, by where the tool runs and whether it is async.",
    ["route", "mode"],
)
TOOL_RESULTS = Counter(
    "backchannel_tool_results",
    "Results and progress updates recorded, by source (webhook, client, api, in-process, "
    "engine), outcome (accepted, progress, duplicate, late) and the tool's delivery "
    "policy (silent, when-idle, interrupt).",
    ["source", "outcome", "delivery"],
)
OUTBOX_BACKLOG = Gauge(
    "backchannel_outbox_backlog",
    "Events waiting to be sent to server URLs: stored and not yet delivered (every "
    "instance's, read from the shared store at scrape time), plus those not yet stored.",
)
WEBHOOK_DELIVERIES = Counter(
    "backchannel_webhook_deliveries",
    "Attempts to deliver a stored event to its server URL, by outcome: delivered, "
    "failed (to be retried), dead (given up after the outbox's max age).",
    ["outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "backchannel_webhook_delivery_seconds",
    "How long one delivery attempt took, whatever its outcome.",
    buckets=LATENCY_BUCKETS,
)
WORKER_RESTARTS = Counter(
    "backchannel_worker_restarts",
    "Background workers restarted by the supervisor after a failure, by worker.",
    ["worker"],
)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
