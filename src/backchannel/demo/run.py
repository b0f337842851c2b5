"""One whole voice call on the offline stack, start to finish, on loopback.

Three parties, each real: the backchannel server (Whisper, Piper or espeak-ng, Silero
VAD, and the local Qwen2.5 model through llama.cpp), the order desk's tool server
(:mod:`.tool_server`), and a caller (:mod:`.caller`) speaking synthesized audio over
the call's WebSocket. The caller asks for an order lookup, keeps talking while it runs,
and hears the result once the floor is free.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client import Client
from ..config import AssistantConfig, ModelConfig
from ..llm.base import LLM
from ..loopback import free_port, private_server, serving
from ..server.app import create_app
from .caller import Caller
from .feel import STATUS_WORDS, Feel, feel
from .scripted import scripted_order_desk
from .tool_server import order_desk

SYSTEM_PROMPT = (
    "You are the voice assistant of the Parcel and Co order desk, on a phone call. Answer "
    "in one or two short spoken sentences. Shipping is free on orders over fifty dollars "
    "and five dollars otherwise."
)


def assistant(tools_url: str, llm: str, model: str) -> dict[str, Any]:
    return {
        "name": "Order desk",
        "firstMessage": "Hi, this is the Parcel and Co order desk. How can I help?",
        "model": {
            "provider": "llama.cpp" if llm == "local" else "scripted",
            "model": model,
            "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}],
            "tools": [
                {
                    "type": "function",
                    "async": True,
                    "function": {
                        "name": "check_order",
                        "description": "Look up where a customer's order is.",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "order_id": {
                                    "type": "string",
                                    "description": "The order number, digits only.",
                                    "pattern": "^[0-9]+$",
                                }
                            },
                            "required": ["order_id"],
                        },
                    },
                    "server": {"url": f"{tools_url}/tools"},
                    # Said the moment the model starts the call, before its arguments.
                    "messages": [{"type": "request-start", "content": "Let me check that order."}],
                }
            ],
        },
        "transcriber": {"provider": "faster-whisper"},
        "voice": {"provider": "piper"},
    }


async def conversation(caller: Caller) -> None:
    """The caller's side, reacting to what the call does."""
    await caller.reply(after=0.0)  # the greeting
    await caller.say("Hello, where is my order number 4417?")
    await caller.until(lambda: caller.seen("tool-calls"))
    await caller.reply(after=caller.now())  # "I'm on it" while the lookup runs
    await caller.say("Also, what does shipping cost?")
    await caller.until(lambda: caller.seen("tool-calls-result"))
    # The result waits for the floor, then is announced (a busy machine slows the model:
    # the wait is generous).
    await caller.until(lambda: _announced(caller), within=240)
    await caller.assistant_quiet(1.2)
    await caller.say("Great, thank you. Goodbye!")
    await caller.reply(after=caller.now(), quiet=1.5, within=30)


def _announced(caller: Caller) -> bool:
    """The assistant has said the order's status."""
    return any(
        e.get("type") == "transcript"
        and e["role"] == "assistant"
        and any(w in e["transcript"].lower() for w in STATUS_WORDS)
        for e in caller.events
    )


@dataclass(frozen=True)
class DemoResult:
    events: list[dict[str, Any]]
    wav: Path
    seconds: float
    tool_calls: list[dict[str, Any]]
    heard: list[tuple[float, bytes]]
    #: Wall-clock time of the timeline's zero, to place the ledger's timestamps on it.
    wall0: float
    feel: Feel


async def run_demo(
    *,
    workdir: Path,
    wav: Path,
    llm: str = "local",
    model: str = "qwen2.5-1.5b",
    lookup_seconds: float = 7.0,
    db_url: str | None = None,
    timeline: Callable[[float, str, str], None] | None = None,
) -> DemoResult:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    say = timeline or _print_line
    settings = private_server(workdir, "demo", db_url)
    assert settings.api_key and settings.webhook_secret
    factory: Callable[[ModelConfig], LLM] | None = None
    if llm == "scripted":
        scripted = scripted_order_desk()
        factory = lambda _model: scripted  # noqa: E731
    started, wall0 = time.monotonic(), time.time()
    say(0.0, "demo", "loading the voice models and the LLM...")
    app = create_app(settings, llm_factory=factory)
    tools_port = free_port()
    tools = order_desk(
        settings.base_url,
        settings.api_key,
        settings.webhook_secret,
        lookup_seconds=lookup_seconds,
    )
    async with serving(app, settings.port), serving(tools, tools_port):
        host = app.state.host
        voice = await host.providers.voice.get()
        if llm == "local":
            local = host.providers.llm(ModelConfig(provider="llama.cpp", model=model))
            # Like a server that has served this assistant before: its opening prompt
            # is evaluated (seconds of CPU, once per assistant) before the call.
            config = AssistantConfig.from_json(
                assistant(f"http://127.0.0.1:{tools_port}", llm, model)
            )
            await host.engine.warm(config, llm=local)
        say(time.monotonic() - started, "demo", "ready; the call starts")
        async with Client(settings.base_url, api_key=settings.api_key) as admin:
            call = await admin.create_call(
                assistant=assistant(f"http://127.0.0.1:{tools_port}", llm, model), type="web"
            )
            caller = Caller(
                f"{call['clientUrl']}?token={call['clientToken']}&sampleRate=16000",
                voice=voice.tts,
                timeline=say,
                t0=started,
            )
            await caller.run(conversation)
    seconds = caller.write_wav(wav)
    report = next(e for e in caller.events if e.get("type") == "end-of-call-report")
    tool_calls = list(report.get("toolCalls", []))
    arrived = next((tc["resolvedAt"] - wall0 for tc in tool_calls if tc.get("resolvedAt")), None)
    how = feel(
        lines=caller.lines,
        heard=caller.heard,
        events=caller.events,
        event_at=caller.event_at,
        result_at=arrived,
    )
    return DemoResult(caller.events, wav, seconds, tool_calls, caller.heard, wall0, how)


def _print_line(at: float, who: str, text: str) -> None:
    print(f"[{at:6.2f}s] {who:<9} {text}", flush=True)


def print_report(result: DemoResult) -> None:
    print("\ntool calls, from the ledger (seconds on the timeline above):")
    for tc in result.tool_calls:
        print(f"  {tc['name']}{json.dumps(tc['arguments'])} [{tc['toolCallId']}]: {tc['state']}")
        for label, key in (
            ("called", "createdAt"),
            ("result arrived", "resolvedAt"),
            ("result in the conversation", "deliveredAt"),
            ("result spoken", "spokenAt"),
        ):
            if tc.get(key) is not None:
                print(f"    {tc[key] - result.wall0:6.2f}s  {label}")
        print(f"    result: {json.dumps(tc['result'])}")
    print()
    for line in result.feel.lines():
        print(line)
    print(f"\nboth sides of the call ({result.seconds:.1f} s): {result.wav}")
    print("  left channel: the caller; right channel: the assistant")
