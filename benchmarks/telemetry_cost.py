"""What telemetry costs a call: the same text calls with tracing off (the default: the
OpenTelemetry API's no-op tracer; Prometheus counters always on) and on (the SDK with
a batch processor, spans exported to a collector that drops them).

    .venv/bin/python benchmarks/telemetry_cost.py [--calls 300]

Each call: a typed question, an async in-process tool, its result, the announcement,
the hang-up, on the memory ledger with a scripted model that answers at once, so what
is timed is the engine and its telemetry. Each mode runs in a process of its own (a
process installs one tracer provider); the figure is the median of five rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from backchannel import (
    AssistantConfig,
    Engine,
    EventLog,
    Ledger,
    MemoryStore,
    PacedSpeech,
    ResultSource,
    ScriptedLLM,
    ToolResult,
)
from backchannel.events import Event
from backchannel.llm.scripted import call, say

ASSISTANT = AssistantConfig.from_json(
    {
        "name": "bench",
        "model": {
            "model": "scripted",
            "tools": [
                {
                    "type": "function",
                    "async": True,
                    "function": {"name": "lookup", "parameters": {"type": "object"}},
                    "backchannel": {"runsOn": "client"},
                }
            ],
        },
    }
)


def model() -> ScriptedLLM:
    def respond(request: object) -> list[object]:
        messages = request.messages  # type: ignore[attr-defined]
        last = messages[-1]
        if last["role"] == "user":
            return [call("lookup", {})]
        if last["role"] == "tool" and "background" in str(last["content"]):
            return say("One moment.")  # the placeholder
        return say("Here it is.")  # the result: announced, or taken into the reply

    return ScriptedLLM(respond=respond)  # type: ignore[arg-type]


class Marks(EventLog):
    """The events, and the two moments a round waits for."""

    def __init__(self) -> None:
        super().__init__()
        self.called, self.announced = asyncio.Event(), asyncio.Event()

    def emit(self, event: Event) -> None:
        super().emit(event)
        if event.type == "tool-calls":
            self.called.set()
        elif event.type == "transcript" and event.data.get("transcript") == "Here it is.":
            self.announced.set()


async def one_round(calls: int) -> float:
    engine = Engine(Ledger(MemoryStore()), llm=model())
    await engine.open()
    started = time.perf_counter()
    for _ in range(calls):
        events = Marks()
        async with engine.call(ASSISTANT, output=PacedSpeech(engine.clock), events=events) as c:
            c.send_text("Look it up.")
            await events.called.wait()
            [item] = events.of_type("tool-calls")[0].data["toolCallList"]
            await engine.submit_result(
                c.call_id, ToolResult(item["id"], result="ok"), ResultSource.API
            )
            await events.announced.wait()
    seconds = time.perf_counter() - started
    await engine.close()
    return seconds / calls


def run_mode(mode: str, calls: int) -> float:
    if mode == "on":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: object) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
    asyncio.run(one_round(20))  # warm up
    return statistics.median(asyncio.run(one_round(calls)) for _ in range(5))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--mode", choices=["off", "on"], default=None)
    args = parser.parse_args()
    if args.mode is not None:
        print(run_mode(args.mode, args.calls))
        return
    results = {}
    for mode in ("off", "on"):
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--calls", str(args.calls)],
            check=True,
            capture_output=True,
            text=True,
        )
        results[mode] = float(out.stdout.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    print(f"{args.calls} calls a round, median of 5 rounds, per call:")
    print(f"  tracing off (default): {off * 1000:.2f} ms")
    print(f"  tracing on (batch export): {on * 1000:.2f} ms ({(on / off - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
