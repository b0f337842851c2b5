"""Handshake hook for the shared load client: one backchannel ``web`` call per session.

--handshake bench_handshake:handshake   (run from benchmarks/, BENCH_API_KEY set)
"""

from __future__ import annotations

import os

import httpx


def handshake(base_url: str, call_id: str, scenario: str) -> tuple[str, None]:
    http_base = base_url.replace("ws://", "http://").split("/ws")[0]
    assistant = {"name": call_id, "model": {"model": scenario, "tools": []}}
    if scenario == "async_tool":
        assistant["model"]["tools"] = [
            {"type": "function", "async": True, "function": {"name": "check_order"}}
        ]
    response = httpx.post(
        f"{http_base}/calls",
        json={"type": "web", "assistant": assistant},
        headers={"authorization": f"Bearer {os.environ.get('BENCH_API_KEY', 'bench-key')}"},
        timeout=30,
    )
    response.raise_for_status()
    call = response.json()
    return f"{call['clientUrl']}?token={call['clientToken']}&sampleRate=16000", None
