"""Two instances on PostgreSQL + Redis: routed result latency and results per second.

    .venv/bin/python benchmarks/cluster_results.py \
        [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test] \
        [--redis redis://127.0.0.1:6379/0] [--calls 20 --per-call 25 --concurrency 32]

Starts two real server processes (A and B) on a fresh PostgreSQL database and Redis, a
tool server that acknowledges async calls, and the rule-based model server. Every call
is live on A (its client socket is connected there), with ``--per-call`` async tool
calls waiting. Results are recorded ``silent`` (into the history, not announced) so
the figures are the result path itself, not the model.

1. Latency, one result in flight: POST to A (the owner: no routing) and POST to B
   (recorded on B, routed through Redis, applied on A), each timed from the start of
   the POST to A's ``tool-calls-result`` event on the call's socket.
2. Throughput: every remaining result POSTed with ``--concurrency`` in flight,
   alternating between A and B, until A has applied all of them; also all to B.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Applied:
    """A's ``tool-calls-result`` events on every call's socket, with arrival times."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def listen(self, ws: Any) -> None:
        async for raw in ws:
            event = json.loads(raw)
            if event.get("type") == "tool-calls-result":
                self.at.setdefault(event["toolCallResult"]["toolCallId"], time.perf_counter())
                self.changed.set()

    async def wait(self, tool_call_ids: list[str], within: float = 60) -> None:
        async with asyncio.timeout(within):
            while not all(i in self.at for i in tool_call_ids):
                self.changed.clear()
                await self.changed.wait()


async def run(args: argparse.Namespace, a: Any, b: Any, tools_url: str) -> None:
    from tests.peers import order_tool

    applied = Applied()
    headers = {"Authorization": f"Bearer {a.api_key}"}
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with (
        httpx.AsyncClient(timeout=60, headers=headers, limits=limits) as http,
        asyncio.TaskGroup() as tg,
    ):
        assistant = {"model": {"model": "rule-model", "tools": [order_tool(tools_url)]}}
        pending: list[tuple[str, str]] = []
        sockets = []
        for _ in range(args.calls):
            call = (await http.post(f"{a.url}/calls", json={"assistant": assistant})).json()
            ws = await connect(f"{call['clientUrl']}?token={call['clientToken']}")
            sockets.append(ws)
            await ws.send(json.dumps({"type": "user-message", "content": f"batch {args.per_call}"}))
            while True:
                event = json.loads(await ws.recv())
                if event.get("type") == "tool-calls":
                    break
            pending += [(call["id"], t["id"]) for t in event["toolCallList"]]
            tg.create_task(applied.listen(ws))
        await asyncio.sleep(1.0)  # every webhook acknowledged (or failed)
        waiting = set()
        for call_id in {c for c, _t in pending}:
            record = (await http.get(f"{a.url}/calls/{call_id}")).json()
            waiting |= {
                t["toolCallId"] for t in record["toolCalls"] if t["state"] in ("pending", "running")
            }
        pending = [(c, t) for c, t in pending if t in waiting]
        print(f"{args.calls} calls live on A, {len(pending)} async tool calls waiting")

        async def post(server_url: str, call_id: str, tcid: str) -> float:
            started = time.perf_counter()
            r = await http.post(
                f"{server_url}/calls/{call_id}/tool-calls/{tcid}/result",
                json={"result": {"ok": True}, "delivery": "silent"},
            )
            assert r.status_code == 200 and r.json()["outcome"] == "accepted", r.text
            return started

        print("\nlatency, one result in flight: POST start -> applied on A (ms)")
        for name, url in (("to A (owner)", a.url), ("to B (routed)", b.url)):
            times = []
            for _ in range(args.rounds):
                call_id, tcid = pending.pop()
                started = await post(url, call_id, tcid)
                await applied.wait([tcid])
                times.append((applied.at[tcid] - started) * 1000)
            print(
                f"  {name:14} p50 {statistics.median(times):6.1f}  p95 {pct(times, 95):6.1f}"
                f"  p99 {pct(times, 99):6.1f}  max {max(times):6.1f}  (n={len(times)})"
            )

        half = len(pending) // 2
        phases = (
            ("alternating A/B", pending[:half], itertools.cycle([a.url, b.url])),
            ("all to B", pending[half:], itertools.repeat(b.url)),
        )
        print(f"\nthroughput, {args.concurrency} in flight: results applied on A per second")
        for name, batch, targets in phases:
            queue = list(zip(batch, targets, strict=False))
            pids = {"A": a.process.pid, "B": b.process.pid}
            cpu = {n: cpu_seconds(p) for n, p in pids.items()}
            client_cpu = time.process_time()
            started = time.perf_counter()

            async def worker(queue: list[Any] = queue) -> None:
                while queue:
                    (call_id, tcid), url = queue.pop()
                    await post(url, call_id, tcid)

            async with asyncio.TaskGroup() as workers:
                for _ in range(args.concurrency):
                    workers.create_task(worker())
            await applied.wait([tcid for _c, tcid in batch])
            elapsed = time.perf_counter() - started
            used = {n: cpu_seconds(p) - cpu[n] for n, p in pids.items()}
            used["load client"] = time.process_time() - client_cpu
            print(
                f"  {name:16} {len(batch)} results in {elapsed:.2f} s: "
                f"{len(batch) / elapsed:.0f}/s; CPU ms per result: "
                + ", ".join(f"{n} {used[n] * 1000 / len(batch):.1f}" for n in used)
            )
        for ws in sockets:
            await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--per-call", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    os.environ["BACKCHANNEL_TEST_POSTGRES_URL"] = args.postgres
    os.environ["BACKCHANNEL_TEST_REDIS_URL"] = args.redis
    from tests.fake_openai import serve as serve_model
    from tests.peers import backend, rule_model, server_process, tool_server

    tmp = Path(tempfile.mkdtemp(prefix="bc-cluster-"))
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (_model, model_url),
        backend("postgres+redis") as env,
        server_process(tmp, model_url, env={**env, "BACKCHANNEL_INSTANCE_ID": "a"}, name="a") as a,
        server_process(tmp, model_url, env={**env, "BACKCHANNEL_INSTANCE_ID": "b"}, name="b") as b,
    ):
        tools.secret = a.webhook_secret
        tools.modes["check_order"] = "ack"
        asyncio.run(run(args, a, b, tools_url))


if __name__ == "__main__":
    main()
