"""Telemetry: each turn's latency by stage, one call's span tree, the Prometheus counters
of a real server before and after a call, and spans exported over OTLP by a real server."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from backchannel import (
    Client,
    ConfigError,
    Delivery,
    ManualClock,
    ResultSource,
    ScriptedLLM,
    ToolResult,
)
from backchannel.llm.scripted import call, say
from backchannel.telemetry import STAGES, TurnLatency, TurnTimer, configure_tracing

from .e2e_calls import Session, said, tool_call_id, tool_calls_named, vapi_assistant
from .harness import assistant, running_call, tool
from .peers import stack as server_stack

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()
_PROVIDER: list[TracerProvider] = []


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process makes during the test, kept in memory."""
    if not _PROVIDER:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        _PROVIDER.append(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


# -- a turn's stages -----------------------------------------------------------------


async def test_a_voice_turn_splits_into_stages_that_add_up(clock: ManualClock) -> None:
    answered: list[TurnLatency] = []
    timer = TurnTimer(clock, answered.append)
    timer.restart()  # the caller speaks
    await clock.advance(2.0)
    timer.turn_ended(silent_for=0.3)  # their last word was 0.3 s ago
    await clock.advance(0.1)
    timer.transcribed()
    await clock.advance(0.4)
    timer.replied()
    await clock.advance(0.05)
    timer.replied()  # later words are not the first
    await clock.advance(0.15)
    timer.audible()
    timer.audible()  # a second sentence's audio answers nothing more
    [turn] = answered
    assert turn.index == 1
    assert turn.vad == pytest.approx(0.3, abs=1e-3)
    assert turn.stt == pytest.approx(0.1, abs=1e-3)
    assert turn.llm == pytest.approx(0.4, abs=1e-3)
    assert turn.tts == pytest.approx(0.2, abs=1e-3)
    assert turn.total == pytest.approx(1.0, abs=1e-3)
    assert turn.to_event()["latencyMs"] == {
        "vad": 300,
        "stt": 100,
        "llm": 400,
        "tts": 200,
        "total": 1000,
    }


async def test_a_typed_turn_has_no_voice_stages_and_a_talked_over_turn_is_dropped(
    clock: ManualClock,
) -> None:
    answered: list[TurnLatency] = []
    dropped: list[bool] = []
    timer = TurnTimer(clock, answered.append, dropped=lambda: dropped.append(True))
    timer.transcribed()  # typed: no speech came before it
    await clock.advance(0.25)
    timer.replied()
    await clock.advance(0.05)
    timer.audible()
    [typed] = answered
    assert (typed.vad, typed.stt) == (None, None)
    assert typed.stages() == pytest.approx({"llm": 0.25, "tts": 0.05}, abs=1e-3)
    # A turn the caller talks over before any audio: dropped, the next one timed alone.
    timer.turn_ended()
    timer.transcribed()
    await clock.advance(0.5)
    timer.restart()
    assert dropped == [True]
    timer.turn_ended()
    await clock.advance(0.1)
    timer.transcribed()
    timer.replied()
    timer.audible()
    assert [t.index for t in answered] == [1, 3]
    assert answered[1].total == pytest.approx(0.1, abs=1e-3)


# -- one call's spans ----------------------------------------------------------------


def _by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def _seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


async def test_one_calls_spans_form_a_tree_with_its_ids(
    clock: ManualClock, spans: InMemorySpanExporter
) -> None:
    llm = ScriptedLLM(
        [
            [*say("Let me check."), call("check_order", {"id": "42"}, id="call_1")],
            say("I'll tell you when it's back."),
            say("Your order shipped yesterday."),
        ],
        clock=clock,
        first_chunk_delay=0.4,
    )
    async with running_call(assistant(tool("check_order", is_async=True)), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        call_id = h.call.call_id
        # A spoken turn: the caller's last word 0.5 s before the turn ends, 0.2 s to
        # transcribe, then the model.
        h.call.user_started_speaking()
        await h.advance(1.5)
        h.call.user_stopped_speaking(silent_for=0.5)
        await h.advance(0.2)
        h.call.user_transcript("Where is my order?")
        await h.advance(10)
        await h.engine.submit_result(
            call_id, ToolResult("call_1", result={"status": "shipped"}), ResultSource.API
        )
        await h.advance(10)
        assert h.spoken()[-1] == "Your order shipped yesterday."
        [latency] = h.events.of_type("turn-latency")
    finished = spans.get_finished_spans()
    [root] = _by_name(finished, "call")
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["backchannel.call.id"] == call_id
    assert root.attributes["backchannel.call.ended_reason"] == "customer-ended-call"
    ids = {s.context.span_id: s for s in finished if s.context is not None}

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None
        return ids[span.parent.span_id]

    # The turn: under the call, its four stages under it, in order, adding up.
    [turn] = _by_name(finished, "turn")
    assert parent(turn) is root
    stages = sorted(
        (s for s in finished if s.name in STAGES and parent(s) is turn),
        key=lambda s: s.start_time or 0,
    )
    assert [s.name for s in stages] == ["vad", "stt", "llm", "tts"]
    assert _seconds(stages[0]) == pytest.approx(0.5, abs=1e-3)
    assert _seconds(stages[1]) == pytest.approx(0.2, abs=1e-3)
    assert _seconds(stages[2]) == pytest.approx(0.4, abs=1e-3)
    assert sum(_seconds(s) for s in stages) == pytest.approx(_seconds(turn), abs=1e-3)
    assert latency.data["latencyMs"]["total"] == round(_seconds(turn) * 1000)
    # Model requests: those made while the turn waits for its answer are inside it.
    chats = sorted(_by_name(finished, "chat scripted"), key=lambda s: s.start_time or 0)
    assert len(chats) == 3
    assert parent(chats[0]) is turn
    assert parent(chats[-1]) is root  # the announcement's: it answers no turn
    assert all(c.attributes and c.attributes["gen_ai.request.model"] == "scripted" for c in chats)
    assert [e.name for e in chats[0].events] == ["first_chunk"]
    # The tool call: from the model's call to its announcement heard, every step an event.
    [run] = _by_name(finished, "execute_tool check_order")
    assert parent(run) is root
    assert run.attributes is not None
    assert run.attributes["gen_ai.tool.call.id"] == "call_1"
    assert run.attributes["backchannel.call.id"] == call_id
    assert run.attributes["backchannel.tool_call.state"] == "succeeded"
    assert [e.name for e in run.events] == ["result", "in-conversation", "spoken"]
    assert all(s.end_time and root.end_time and s.end_time <= root.end_time for s in finished)


# -- a real server: /metrics and OTLP -------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def _a_call_with_an_async_result(server: Any, tools: Any, tools_url: str) -> str:
    """A text call: the caller asks, the async tool is called, its result comes by the
    API and is said; then the caller hangs up. The call's id."""
    tools.modes.update({"check_order": "ack"})
    async with Client(server.url, api_key=server.api_key) as admin:
        created = await admin.create_call(assistant=vapi_assistant(tools_url))
    async with (
        Client(server.url, token=created["token"]) as backend,
        connect(f"{created['clientUrl']}?token={created['clientToken']}") as ws,
    ):
        s = Session(ws)
        await s.send({"type": "user-message", "content": "Where is my order?"})
        order = tool_call_id(await s.until(tool_calls_named("check_order")), "check_order")
        await s.until(said("I will tell you when it is ready."))
        await backend.submit_result(created["id"], order, "shipped")
        await s.until(said("Update: shipped"))
        await s.send({"type": "end-call"})
        await s.until(lambda e: e.get("type") == "status-update" and e["status"] == "ended")
    return str(created["id"])


async def test_metrics_move_as_a_call_goes_through_a_real_server(tmp_path: Path) -> None:
    with server_stack(tmp_path) as (server, tools, tools_url):
        async with httpx.AsyncClient(base_url=server.url) as http:
            first = await http.get("/metrics")  # open, like /health
            assert first.status_code == 200
            assert first.headers["content-type"].startswith("text/plain")
            before = _samples(first.text)
            await _a_call_with_an_async_result(server, tools, tools_url)
            # The end-of-call report reaches the server URL through the outbox.
            for _ in range(100):
                if any(e["type"] == "end-of-call-report" for e in tools.events):
                    break
                await asyncio.sleep(0.1)
            after = _samples((await http.get("/metrics")).text)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("backchannel_calls_total") == 1
    assert moved("backchannel_calls_ended_total", reason="ended-by-control") == 1
    assert after[("backchannel_calls_live", ())] == 0
    assert moved("backchannel_tool_calls_total", route="server", mode="async") == 1
    accepted = {"source": "api", "outcome": "accepted", "delivery": "when-idle"}
    assert moved("backchannel_tool_results_total", **accepted) == 1
    # One turn answered: the question (the result's announcement answers no turn).
    assert moved("backchannel_turn_latency_seconds_count", stage="total") == 1
    assert moved("backchannel_turn_latency_seconds_count", stage="llm") == 1
    assert moved("backchannel_turn_latency_seconds_count", stage="vad") == 0  # typed
    assert moved("backchannel_webhook_deliveries_total", outcome="delivered") >= 2
    assert after[("backchannel_outbox_backlog", ())] >= 0
    assert moved("backchannel_worker_restarts_total", worker="outbox-delivery") == 0


class _Collector:
    """An OTLP/HTTP trace receiver on loopback: keeps each exported span."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.lock:
                    for resource in request.resource_spans:
                        service = {
                            a.key: a.value.string_value for a in resource.resource.attributes
                        }
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                attributes = {
                                    a.key: getattr(a.value, a.value.WhichOneof("value") or "")
                                    for a in span.attributes
                                }
                                collector.spans.append(
                                    {
                                        "name": span.name,
                                        "attributes": attributes,
                                        "service": service.get("service.name"),
                                        "path": self.path,
                                    }
                                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler


async def test_a_real_server_exports_its_spans_over_otlp_when_configured(tmp_path: Path) -> None:
    collector = _Collector()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), collector.handler())
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_SERVICE_NAME": "backchannel-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    try:
        with server_stack(tmp_path, env=env) as (server, tools, tools_url):
            call_id = await _a_call_with_an_async_result(server, tools, tools_url)

            def exported() -> set[str]:
                """The call's span, and the delivery of its end-of-call report."""
                with collector.lock:
                    return {
                        s["name"]
                        if s["name"] != "POST"
                        else s["attributes"]["backchannel.event.type"]
                        for s in collector.spans
                    }

            for _ in range(150):
                if {"call", "end-of-call-report"} <= exported():
                    break
                await asyncio.sleep(0.1)
    finally:
        receiver.shutdown()
        receiver.server_close()
    spans = list(collector.spans)
    assert {s["path"] for s in spans} == {"/v1/traces"}
    assert {s["service"] for s in spans} == {"backchannel-test"}
    [root] = [s for s in spans if s["name"] == "call"]
    assert root["attributes"]["backchannel.call.id"] == call_id
    [run] = [s for s in spans if s["name"] == "execute_tool check_order"]
    assert run["attributes"]["backchannel.call.id"] == call_id
    assert any(s["name"] == "chat rule-model" for s in spans)
    assert any(s["name"] == "turn" for s in spans)
    webhooks = [
        s
        for s in spans
        if s["name"] == "POST" and s["attributes"]["backchannel.event.type"] == "end-of-call-report"
    ]
    assert webhooks and webhooks[0]["attributes"]["http.response.status_code"] == 200
    assert webhooks[0]["attributes"]["backchannel.call.id"] == call_id


def test_tracing_is_off_unless_asked_and_refuses_what_it_cannot_export() -> None:
    assert configure_tracing({}) is False
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "none"}) is False
    assert configure_tracing({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is False
    with pytest.raises(ConfigError, match="zipkin"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="http/json"):
        configure_tracing(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )


async def test_a_turn_typed_while_an_answer_plays_is_timed_by_its_own_answer(
    clock: ManualClock,
) -> None:
    """The rest of an earlier answer is not the new turn's answer: a message typed
    while the first answer plays is answered once that answer is over."""
    llm = ScriptedLLM(
        [say("One two three four. Five six seven eight."), say("Nine ten.")], clock=clock
    )
    async with running_call(assistant(), llm, clock=clock) as h:
        h.call.send_text("First.")
        await h.advance(0.5)  # "One two three four." plays until 1.0, the rest until 2.0
        h.call.send_text("Second.")
        await h.advance(10)
        assert h.spoken() == ["One two three four.", "Five six seven eight.", "Nine ten."]
        first, second = [e.data for e in h.events.of_type("turn-latency")]
    assert first["latencyMs"]["total"] == 0
    assert second["turn"] == 2
    assert 1400 <= second["latencyMs"]["total"] <= 1600, second


async def test_a_result_that_chooses_silent_ends_its_tool_span_in_the_conversation(
    clock: ManualClock, spans: InMemorySpanExporter
) -> None:
    llm = ScriptedLLM(
        [[call("check_order", {"id": "1"}, id="call_9")], say("Checking."), say("Okay.")],
        clock=clock,
    )
    async with running_call(assistant(tool("check_order", is_async=True)), llm, clock=clock) as h:
        h.server.modes["check_order"] = "ack"
        h.call.send_text("Where is my order?")
        await h.advance(5)
        await h.engine.submit_result(
            h.call.call_id,
            ToolResult("call_9", result="shipped", delivery=Delivery.SILENT),
            ResultSource.API,
        )
        await h.advance(5)
        # The span ended as the result entered the history, long before the call ends.
        [run] = _by_name(spans.get_finished_spans(), "execute_tool check_order")
        assert [e.name for e in run.events] == ["result", "in-conversation"]
        assert run.attributes is not None
        assert run.attributes["backchannel.tool.delivery"] == "silent"


async def test_a_collector_that_is_down_costs_the_calls_nothing(tmp_path: Path) -> None:
    """Spans to an OTLP endpoint nobody listens on: the exporter gives them up in the
    background; the call runs and reports as always."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        }
        with server_stack(tmp_path, env=env) as (server, tools, tools_url):
            call_id = await _a_call_with_an_async_result(server, tools, tools_url)
            async with Client(server.url, api_key=server.api_key) as admin:
                record = await admin.get_call(call_id)
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/ready")).status_code == 200
    assert record["status"] == "ended"
    assert [t["state"] for t in record["toolCalls"]] == ["succeeded"]
