"""Concurrent phone calls over Twilio Media Streams on one server process.

    .venv/bin/python benchmarks/phone_load.py --calls 10 25 50 --seconds 40

For each N: a fresh ``bench_server.py`` (real server and Silero VAD; the shared
scenario's model stand-ins: STT 100 ms, LLM 200 ms to first chunk, tone TTS) with a
Twilio auth token, one assistant on one number, and N simulated Twilio streams started
through the signed voice webhook. Each stream sends 20 ms µ-law frames in real time: the
shared 2 s speech clip, then silence, every 6 s. Reported: turn latency (end of the
caller's speech → first audible frame back), gaps between outgoing media frames while
the assistant speaks, server CPU (cores) and RSS per call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import sys
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from backchannel.phone import mulaw
from backchannel.voice.audio import resample

HERE = Path(__file__).parent
CLIP = HERE.parent.parent / "shared" / "bench" / "speech_2s_16k.wav"
TOKEN, NUMBER, KEY = "bench-twilio-token", "+15550001111", "bench-key"
PERIOD = 6.0


def speech() -> np.ndarray:
    with wave.open(str(CLIP)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)
    return resample(pcm, w.getframerate(), 8_000)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_call(
    base: str, clip: np.ndarray, seconds: float, stats: dict[str, list[float]], k: int
) -> None:
    url = f"{base}/twilio/voice"
    form = {"CallSid": f"CA{k:032d}", "From": "+15557654321", "To": NUMBER}
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    async with httpx.AsyncClient(timeout=30) as http:
        twiml = (await http.post(url, data=form, headers={"X-Twilio-Signature": signature})).text
    stream = re.search(r'<Stream url="([^"]+)"', twiml)
    assert stream, twiml
    params = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]+)"', twiml))
    sid = f"MZ{k:032d}"
    ends: list[float] = []
    async with connect(stream.group(1)) as ws:
        start = {"streamSid": sid, "callSid": form["CallSid"], "customParameters": params}
        await ws.send(json.dumps({"event": "connected"}))
        await ws.send(json.dumps({"event": "start", "streamSid": sid, "start": start}))

        async def listen() -> None:
            last, answered = 0.0, 0  # answered: how many of our turns got audio back
            async for raw in ws:
                frame = json.loads(raw)
                if frame["event"] != "media":
                    continue
                now = time.monotonic()
                audio = mulaw.decode(base64.b64decode(frame["media"]["payload"]))
                if last and now - last < 1.0:
                    stats["gap"].append(now - last)
                last = now
                loud = int(np.abs(audio.astype(np.int32)).max()) > 200
                if loud and len(ends) > answered:
                    stats["turn"].append(now - ends[-1])
                    answered = len(ends)

        listener = asyncio.ensure_future(listen())
        t0, n = time.monotonic(), 0
        silence = np.zeros(160, np.int16)
        try:
            while time.monotonic() - t0 < seconds:
                at = (n * 0.02) % PERIOD
                i = int(at * 8000)
                frame = clip[i : i + 160] if i + 160 <= clip.size else silence
                if i < clip.size <= i + 160:
                    ends.append(time.monotonic())
                payload = base64.b64encode(mulaw.encode(frame)).decode()
                media = {"event": "media", "streamSid": sid, "media": {"payload": payload}}
                await ws.send(json.dumps(media))
                n += 1
                await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
            await ws.send(json.dumps({"event": "stop", "streamSid": sid}))
        except ConnectionClosed:
            stats["dropped"].append(1)
        listener.cancel()


async def run(n: int, seconds: float, port: int) -> dict[str, Any]:
    work = HERE / f".phone-bench-{n}"
    env = {**os.environ, "BACKCHANNEL_TWILIO_AUTH_TOKEN": TOKEN, "BENCH_API_KEY": KEY}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "bench_server.py"),
        "--port",
        str(port),
        "--dir",
        str(work),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(200):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            auth = {"Authorization": f"Bearer {KEY}"}
            assistant = (
                await http.post("/assistants", json={"model": {"model": "normal"}}, headers=auth)
            ).json()
            await http.post(
                "/phone-numbers",
                json={"number": NUMBER, "assistantId": assistant["id"]},
                headers=auth,
            )
        await asyncio.sleep(2.0)
        rss0, cpu0, t0 = rss_mb(server.pid), cpu_seconds(server.pid), time.monotonic()
        stats: dict[str, list[float]] = {"gap": [], "turn": [], "dropped": []}
        clip = speech()
        peak = rss0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mb(server.pid))
                await asyncio.sleep(0.5)

        sampler = asyncio.ensure_future(sample())
        await asyncio.gather(*(one_call(base, clip, seconds, stats, k) for k in range(n)))
        sampler.cancel()
        cores = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        server.terminate()
        await server.wait()
        shutil.rmtree(work, ignore_errors=True)
    gaps, turns = sorted(stats["gap"]), sorted(stats["turn"])

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    return {
        "calls": n,
        "turns": len(turns),
        "turn_p50": pct(turns, 0.5),
        "turn_p99": pct(turns, 0.99),
        "gap_p50": pct(gaps, 0.5),
        "gap_p99": pct(gaps, 0.99),
        "gap_max": gaps[-1] * 1000 if gaps else float("nan"),
        "cores": cores,
        "rss_per_call": (peak - rss0) / n,
        "dropped": len(stats["dropped"]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--port", type=int, default=9300)
    args = parser.parse_args()
    print(
        "| N | turns | turn latency p50/p99 ms | frame gap p50/p99/max ms | CPU cores "
        "| RSS/call MB | dropped |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in args.calls:
        r = await run(n, args.seconds, args.port)
        print(
            f"| {n} | {r['turns']} | {r['turn_p50']:.0f}/{r['turn_p99']:.0f} | "
            f"{r['gap_p50']:.1f}/{r['gap_p99']:.1f}/{r['gap_max']:.0f} | {r['cores']:.2f} | "
            f"{r['rss_per_call']:.2f} | {r['dropped']} |",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
