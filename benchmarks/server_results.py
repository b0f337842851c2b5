"""Server benchmark: results per second at the result endpoint, and result → announcement.

    .venv/bin/python benchmarks/server_results.py [--calls 50 --per-call 20] [--concurrency 50]

Starts the real server process on loopback (SQLite ledger in a temporary directory), a
tool server that acknowledges async calls, and a rule-based OpenAI-compatible model
server. Then:

1. Throughput: ``--calls`` connected text calls, in each of which the model has started
   ``--per-call`` async tool calls; every result is POSTed to
   ``/calls/{id}/tool-calls/{tcid}/result`` (interleaved across calls) with
   ``--concurrency`` requests in flight. Each accepted result is also delivered and
   announced in its call. Reported: results per second (wall), request latency
   percentiles, and the server's CPU time for the phase; once with the default delivery
   (every result is announced: a model request and speech) and once ``silent`` (recorded
   and added to the history only), which isolates the endpoint and the ledger.
2. Latency: ``--rounds`` times, a single async call is pending and its result is POSTed;
   the time until the client WebSocket receives the announcement's ``transcript`` event
   (the model answers instantly; a real model adds its time to first token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_openai import serve as serve_model
from tests.peers import order_tool, rule_model, server_process, tool_server


def assistant(tools_url: str) -> dict[str, Any]:
    return {
        "model": {
            "model": "rule-model",
            "tools": [order_tool(tools_url)],
        }
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def _announcement(event: dict[str, Any]) -> bool:
    return event.get("type") == "transcript" and str(event.get("transcript")).startswith("Update")


async def next_event(ws: Any, predicate: Any) -> dict[str, Any]:
    while True:
        event = json.loads(await ws.recv())
        if predicate(event):
            return event


async def open_call(http: httpx.AsyncClient, server: Any, tools_url: str, n: int) -> Any:
    """A connected text call whose model has started ``n`` async tool calls."""
    key = {"authorization": f"Bearer {server.api_key}"}
    call = (await http.post("/calls", json={"assistant": assistant(tools_url)}, headers=key)).json()
    ws = await connect(f"{call['clientUrl']}?token={call['clientToken']}", max_size=None)
    await ws.send(json.dumps({"type": "user-message", "content": f"batch {n}"}))
    event = await next_event(ws, lambda e: e.get("type") == "tool-calls")
    ids = [t["id"] for t in event["toolCallList"]]
    assert len(ids) == n, len(ids)
    return call, ws, ids


async def throughput(
    server: Any,
    tools_url: str,
    calls: int,
    per_call: int,
    concurrency: int,
    model: Any,
    delivery: str | None = None,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        opened = [await open_call(http, server, tools_url, per_call) for _ in range(calls)]
        # Keep reading each socket so the server's sends never back up.
        drains = [asyncio.ensure_future(_drain(ws)) for _, ws, _ in opened]
        work = [(call, tcid) for call, _, ids in opened for tcid in ids]
        work = [
            w
            for pair in zip(*[work[i::per_call] for i in range(per_call)], strict=True)
            for w in pair
        ]
        sem = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def post(call: dict[str, Any], tcid: str) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await http.post(
                    f"/calls/{call['id']}/tool-calls/{tcid}/result",
                    json={"result": {"status": "shipped", "id": tcid}}
                    | ({"delivery": delivery} if delivery else {}),
                    headers={"authorization": f"Bearer {call['token']}"},
                )
                latencies.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200 and r.json()["outcome"] == "accepted", r.text

        requests0 = len(model.requests)
        cpu0, t0 = cpu_seconds(server.process.pid), time.perf_counter()
        await asyncio.gather(*(post(call, tcid) for call, tcid in work))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(server.process.pid) - cpu0
        generations = len(model.requests) - requests0
        n = len(work)
        for drain in drains:
            drain.cancel()
        for _, ws, _ in opened:
            await ws.close()
        print(
            f"[delivery {delivery or 'when-idle'}] "
            f"results accepted: {n} ({calls} calls x {per_call}) in {wall:.2f} s = "
            f"{n / wall:,.0f}/s, {concurrency} in flight; "
            f"request p50 {statistics.median(latencies):.1f} ms, "
            f"p95 {pct(latencies, 95):.1f} ms, p99 {pct(latencies, 99):.1f} ms; "
            f"server CPU {cpu:.2f} s ({cpu / n * 1000:.2f} ms per result, "
            f"announcements included: {generations} model requests)"
        )


async def _drain(ws: Any) -> None:
    while True:
        await ws.recv()


async def announce_latency(server: Any, tools_url: str, rounds: int) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        key = {"authorization": f"Bearer {server.api_key}"}
        call = (
            await http.post("/calls", json={"assistant": assistant(tools_url)}, headers=key)
        ).json()
        token = {"authorization": f"Bearer {call['token']}"}
        samples: list[float] = []
        async with connect(f"{call['clientUrl']}?token={call['clientToken']}") as ws:
            for _ in range(rounds):
                await ws.send(json.dumps({"type": "user-message", "content": "check my order"}))
                event = await next_event(ws, lambda e: e.get("type") == "tool-calls")
                tcid = event["toolCallList"][0]["id"]
                await next_event(
                    ws, lambda e: e.get("transcript") == "I will tell you when it is ready."
                )
                t0 = time.perf_counter()
                r = await http.post(
                    f"/calls/{call['id']}/tool-calls/{tcid}/result",
                    json={"result": "shipped"},
                    headers=token,
                )
                assert r.status_code == 200, r.text
                await next_event(
                    ws,
                    lambda e: (
                        e.get("type") == "transcript"
                        and str(e.get("transcript")).startswith("Update")
                    ),
                )
                samples.append((time.perf_counter() - t0) * 1000)
        print(
            f"result POST -> announcement transcript event ({rounds} rounds): "
            f"p50 {statistics.median(samples):.1f} ms, p95 {pct(samples, 95):.1f} ms, "
            f"max {max(samples):.1f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--per-call", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (model, model_url),
        server_process(Path(tmp), model_url) as server,
    ):
        tools.secret = server.webhook_secret
        tools.modes["check_order"] = "ack"
        for delivery in (None, "silent"):
            await throughput(
                server, tools_url, args.calls, args.per_call, args.concurrency, model, delivery
            )
        await announce_latency(server, tools_url, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
