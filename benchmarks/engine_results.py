"""Engine benchmarks: how fast results land, and how soon they are spoken.

    .venv/bin/python benchmarks/engine_results.py [--postgres postgresql+asyncpg://...]

1. Ledger throughput: distinct results resolved per second on each store, one at a time
   and with 50 in flight (the duplicate-checked, compare-and-swap path every result takes).
2. Result → first announcement word: one live call on the SQLite ledger with a scripted
   LLM that answers instantly; the time from ``Engine.submit_result`` to the output
   starting the announcement's first utterance, on the real clock. This is the engine's
   own overhead: a real model adds its time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from typing import Any

from backchannel import (
    AssistantConfig,
    Delivery,
    Engine,
    Ledger,
    MemoryStore,
    PacedSpeech,
    ResultSource,
    Route,
    ScriptedLLM,
    SqlStore,
    ToolResult,
)
from backchannel.ledger.store import LedgerStore
from backchannel.llm.base import LLMChunk, LLMRequest
from backchannel.llm.scripted import call, say
from backchannel.tools.spec import Spoken, ToolSpec

SPEC = ToolSpec(
    "job", "", {"type": "object"}, Route.SERVER, True, Delivery.WHEN_IDLE, 300, False, Spoken()
)


async def ledger_throughput(store: LedgerStore, n: int, in_flight: int) -> float:
    ledger = Ledger(store)
    await ledger.open()
    cid = f"bench-{uuid.uuid4().hex}"
    await ledger.open_call(cid)
    for i in range(n):
        await ledger.record(cid, f"t{i}", SPEC, {"i": i})
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with sem:
            await ledger.resolve(cid, ToolResult(f"t{i}", result={"i": i}), ResultSource.API)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    await ledger.close()
    return n / elapsed


class FirstWord:
    """A speech output that notes when each utterance starts, and plays instantly."""

    def __init__(self) -> None:
        self.inner = PacedSpeech()
        self.muted = False
        self.starts: list[tuple[float, str]] = []
        self._started = asyncio.Event()

    async def wait_for(self, prefix: str, since: int = 0) -> float:
        """When the first utterance starting with ``prefix`` (after ``since``) started."""
        while True:
            for ts, text in self.starts[since:]:
                if text.startswith(prefix):
                    return ts
            self._started.clear()
            await self._started.wait()

    def attach(self, listener: Any) -> None:
        outer = self

        class Tap:
            def speech_started(self, utterance_id: int) -> None:
                outer.starts.append((time.perf_counter(), outer._texts.get(utterance_id, "")))
                outer._started.set()
                listener.speech_started(utterance_id)

            def speech_finished(self, utterance_id: int) -> None:
                listener.speech_finished(utterance_id)

        self._texts: dict[int, str] = {}
        self.inner.attach(Tap())

    def speak(self, utterance: Any) -> None:
        self._texts[utterance.id] = utterance.text
        self.inner.speak(utterance)

    def stop(self, *, hold: float = 0.0) -> Any:
        return self.inner.stop(hold=hold)

    def drop(self, utterance_id: int) -> None:
        self.inner.drop(utterance_id)

    @property
    def clause_first(self) -> bool:
        return bool(self.inner.clause_first)

    async def run(self) -> None:
        await self.inner.run()


async def announce_latency(rounds: int, db_url: str) -> list[float]:
    counter = iter(range(1_000_000))

    def respond(request: LLMRequest) -> list[LLMChunk]:
        last = request.messages[-1]
        if last["role"] == "user":
            return [call("job", id=f"j{next(counter)}")]
        if last["role"] == "system" and "background tool calls" in str(last["content"]):
            return say("ANNOUNCE the job is done.")
        return say("Started.")

    engine = Engine(Ledger(SqlStore(db_url)), llm=ScriptedLLM(respond=respond))
    await engine.open()
    config = AssistantConfig.from_json(
        {"model": {"tools": [{"type": "function", "async": True, "function": {"name": "job"}}]}}
    )
    output = FirstWord()
    latencies: list[float] = []
    async with engine.call(config, output=output) as live:  # type: ignore[arg-type]
        for i in range(rounds):
            before = len(output.starts)
            live.send_text("start a job")
            await output.wait_for("Started.", before)
            await asyncio.sleep(0.005)
            before = len(output.starts)
            t0 = time.perf_counter()
            result = ToolResult(f"j{i}", result="ok")
            await engine.submit_result(live.call_id, result, ResultSource.API)
            first = await output.wait_for("ANNOUNCE", before)
            latencies.append((first - t0) * 1000)
            await asyncio.sleep(0.005)
    await engine.close()
    return latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--postgres", default=None, help="also measure this PostgreSQL URL")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    stores: dict[str, Any] = {
        "memory": lambda: MemoryStore(),
        "sqlite (file, WAL)": lambda: SqlStore(f"sqlite+aiosqlite:///{tmp}/{uuid.uuid4().hex}.db"),
    }
    if args.postgres:
        stores["postgresql"] = lambda: SqlStore(args.postgres)
    print("| store | results/s, 1 in flight | results/s, 50 in flight |")
    print("|---|---|---|")
    for name, make in stores.items():
        one = await ledger_throughput(make(), args.n, 1)
        fifty = await ledger_throughput(make(), args.n, 50)
        print(f"| {name} | {one:,.0f} | {fifty:,.0f} |")
    lat = await announce_latency(args.rounds, f"sqlite+aiosqlite:///{tmp}/latency.db")
    print()
    print(
        f"result -> first announcement word (SQLite, scripted LLM, {len(lat)} rounds): "
        f"p50 {statistics.median(lat):.2f} ms, p95 {pct(lat, 95):.2f} ms, max {max(lat):.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
