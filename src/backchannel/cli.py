"""``backchannel`` command line.

``backchannel demo`` plays one conversation through the real engine and the SQLite
ledger, in real time: the caller asks for an order lookup (an async in-process tool
that takes a few seconds), keeps talking while it runs, and the assistant announces the
result once the floor is free. It prints the timeline and the ledger's record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

from .config import AssistantConfig
from .engine import Engine
from .events import Event
from .ledger.ledger import Ledger
from .ledger.sql import SqlStore
from .llm.base import LLM, LLMChunk, LLMRequest
from .llm.openai_compat import OpenAICompatibleLLM
from .llm.scripted import Reply, ScriptedLLM, call, say
from .speech import PacedSpeech, words_duration
from .tools.registry import ToolRegistry

DEMO_ASSISTANT = {
    "name": "Order desk",
    "firstMessage": "Hi, this is the order desk. How can I help?",
    "model": {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "messages": [
            {
                "role": "system",
                "content": "You help customers with orders. check_order runs in the background; "
                "tell the user you started it, and announce its result when it comes.",
            }
        ],
    },
}


def _demo_tools(lookup_seconds: float) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool(is_async=True)
    async def check_order(order_id: str) -> dict[str, str]:
        """Look up an order's delivery status (slow: it asks the warehouse)."""
        await asyncio.sleep(lookup_seconds)
        return {"orderId": order_id, "status": "out for delivery", "eta": "this afternoon"}

    return tools


def _scripted_demo_llm() -> LLM:
    """A rule-based stand-in model, so the demo runs with no LLM at all."""

    def respond(request: LLMRequest) -> Reply:
        messages = list(request.messages)
        last = messages[-1]
        if last["role"] == "tool":
            return say("I'll tell you as soon as the warehouse answers.")
        user = next((str(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")
        reply: list[LLMChunk] = []
        if last["role"] == "user" and "order" in user and "shipping" not in user:
            return [
                *say("One moment, I'm checking order 4417."),
                call("check_order", {"order_id": "4417"}),
            ]
        if "shipping" in user:
            reply += say("Standard shipping is free on orders over fifty dollars. ")
        if last["role"] == "system" and "background tool calls" in str(last["content"]):
            reply += say("And good news: order 4417 is out for delivery, arriving this afternoon.")
        return reply or say("Is there anything else I can do?")

    return ScriptedLLM(respond=respond)


class _Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def line(self, who: str, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] {who:<10} {text}", flush=True)

    def emit(self, event: Event) -> None:
        d = event.data
        if event.type == "model-output":
            self.line("assistant", f"(model) {d['output']}")
        elif event.type == "tool-calls":
            for tc in d["toolCallList"]:
                args = json.dumps(tc["function"]["arguments"])
                self.line("tool", f"{tc['function']['name']} called {args}")
        elif event.type == "tool-calls-result":
            r = d["toolCallResult"]
            self.line("tool", f"{r['name']} -> {r['state']}: {json.dumps(r['result'])}")


async def _demo(
    db_url: str, llm_url: str | None, model: str, lookup_seconds: float, time_scale: float = 1.0
) -> int:
    timeline = _Timeline()
    llm: LLM = (
        OpenAICompatibleLLM(model=model, base_url=llm_url) if llm_url else _scripted_demo_llm()
    )
    engine = Engine(
        Ledger(SqlStore(db_url)), llm=llm, tools=_demo_tools(lookup_seconds * time_scale)
    )
    await engine.open()
    output = PacedSpeech(duration=words_duration(0.35 * time_scale))
    assistant = AssistantConfig.from_json(DEMO_ASSISTANT)
    try:
        async with engine.call(assistant, output=output, events=timeline) as live:
            for pause, text in (
                (4.0, "Can you check on my order 4417?"),
                (2.0, "Also, what does shipping cost?"),
            ):
                await asyncio.sleep(pause * time_scale)
                timeline.line("user", text)
                live.send_text(text)
            await _until_spoken(engine, live.call_id, limit=60.0)
            await asyncio.sleep(1.0 * time_scale)
        print("\nspoken:")
        for utterance, start, end, heard in output.played:
            cut = "" if heard == len(utterance.text) else f" (cut at {heard} chars)"
            span = f"{start - timeline.t0:6.2f}-{end - timeline.t0:6.2f}s"
            print(f"  {span} {utterance.text.strip()}{cut}")
        records = await engine.ledger.list_for_call(live.call_id)
        print("\nledger:")
        for r in records:
            print(json.dumps(r.to_dict(), indent=2))
    finally:
        await engine.close()
    return 0


async def _until_spoken(engine: Engine, call_id: str, *, limit: float) -> None:
    """Wait until every tool call's result has been announced (or ``limit`` seconds pass)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        records = await engine.ledger.list_for_call(call_id)
        if records and all(r.spoken_at is not None for r in records):
            return
        await asyncio.sleep(0.05)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.app import create_app
    from .server.settings import Settings, load_secrets

    overrides = {
        "host": args.host,
        "port": args.port,
        "database_url": args.db,
        "llm_base_url": args.llm_url,
        "allow_private_webhooks": args.allow_private_webhooks,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    secrets = load_secrets(settings)
    if secrets.created:
        print(f"backchannel: created an API key and webhook secret in {settings.secrets_file}")
        print(f"  API key:        {secrets.api_key}")
        print(f"  webhook secret: {secrets.webhook_secret}")
    print(f"backchannel: serving on {settings.base_url} (docs at {settings.base_url}/docs)")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        ws_per_message_deflate=False,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backchannel")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="play one text conversation with an async tool")
    demo.add_argument(
        "--db", default="sqlite+aiosqlite:///backchannel.db", help="ledger database URL"
    )
    demo.add_argument(
        "--llm-url", default=None, help="OpenAI-compatible base URL (default: scripted)"
    )
    demo.add_argument("--model", default="gpt-4o-mini")
    demo.add_argument("--lookup-seconds", type=float, default=3.0)
    demo.add_argument(
        "--time-scale", type=float, default=1.0, help="speed up (<1) or slow down every pause"
    )
    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--db", default=None, help="database URL (default SQLite ./backchannel.db)")
    serve.add_argument("--llm-url", default=None, help="OpenAI-compatible base URL")
    serve.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        default=None,
        help="allow webhook URLs on private/loopback addresses (local development)",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        return asyncio.run(
            _demo(args.db, args.llm_url, args.model, args.lookup_seconds, args.time_scale)
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
