"""Play an eval file's conversations against its assistant, offline, and check them.

Three real parties on loopback, as in the demo: the backchannel server (in this
process), the eval's tool server (:mod:`.tool_server`), and a caller over the call's
WebSocket: one that types (text calls) or one that speaks synthesized audio through the
real VAD, turn model and Whisper (``voice``). Each conversation is a call of its own.

The model is the eval file's scripted rules (``scripted``), the local model
(``local``), or the assistant's own ``model`` block (``assistant``).
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client import Client
from ..config import AssistantConfig, ModelConfig
from ..demo.caller import Caller
from ..errors import BackchannelError
from ..llm.base import LLM
from ..loopback import free_port, private_server, serving
from ..server.app import create_app
from ..server.settings import Settings
from .checks import Happened, Verdict, check
from .rules import rules_model
from .spec import Conversation, EvalFile, Expectation, Step
from .text_caller import TextCaller
from .tool_server import eval_tools

#: How long a step waits for the call to get where it says, unless it says otherwise.
STEP_WITHIN_SECONDS = 120.0
#: The assistant counts as done talking after this long without a word.
QUIET_SECONDS = 1.0
#: A conversation that takes longer than this is stopped and fails.
CONVERSATION_LIMIT_SECONDS = 900.0

Line = Callable[[float, str, str], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    conversation: Conversation
    mode: str
    seconds: float
    verdicts: list[Verdict]
    #: Why the conversation could not be played to its end (a step that timed out).
    error: str | None
    timeline: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and all(v.passed for v in self.verdicts)


async def run_eval(
    spec: EvalFile,
    *,
    llm: str = "scripted",
    mode: str | None = None,
    model: str = "qwen2.5-1.5b",
    workdir: Path,
    narrate: Line | None = None,
) -> list[Outcome]:
    """Every conversation of ``spec``, in order, each a call on one server."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    settings = private_server(workdir, "eval")
    assert settings.api_key and settings.webhook_secret
    factory: Callable[[ModelConfig], LLM] | None = None
    if llm == "scripted":
        factory = lambda _model: rules_model(spec.rules)  # noqa: E731
    app = create_app(settings, llm_factory=factory)
    tools_port = free_port()
    async_tools = {
        str((t.get("function") or {}).get("name"))
        for t in spec.assistant.get("model", {}).get("tools", [])
        if t.get("async")
    }
    tools = eval_tools(
        spec.tools,
        async_tools,
        backchannel_url=settings.base_url,
        api_key=settings.api_key,
        webhook_secret=settings.webhook_secret,
    )
    outcomes = []
    warmed: list[dict[str, Any]] = []  # the opening prompts the local model has read
    async with serving(app, settings.port), serving(tools, tools_port):
        host = app.state.host
        for conversation in spec.conversations:
            how = mode or conversation.mode or spec.mode
            assistant = prepared(spec, f"http://127.0.0.1:{tools_port}/tools", llm, model, how)
            if llm == "local" and assistant not in warmed:
                local = host.providers.llm(ModelConfig(provider="llama.cpp", model=model))
                await host.engine.warm(AssistantConfig.from_json(assistant), llm=local)
                warmed.append(assistant)
            tts = (await host.providers.voice.get()).tts if how == "voice" else None
            outcomes.append(await _converse(settings, assistant, conversation, how, tts, narrate))
    return outcomes


def prepared(spec: EvalFile, tools_url: str, llm: str, model: str, mode: str) -> dict[str, Any]:
    """The assistant for one call: the planned tools answered by the eval's tool
    server, the model chosen, and the offline voice stack for voice calls."""
    assistant = copy.deepcopy(spec.assistant)
    block = assistant.setdefault("model", {})
    for tool in block.get("tools", []):
        if (tool.get("function") or {}).get("name") in spec.tools:
            tool["server"] = {**(tool.get("server") or {}), "url": tools_url}
    if llm == "scripted":
        block |= {"provider": "scripted", "model": "rules"}
    elif llm == "local":
        block |= {"provider": "llama.cpp", "model": model}
    if mode == "voice":
        assistant["transcriber"] = {"provider": "faster-whisper"}
        assistant["voice"] = {"provider": "piper"}
    return assistant


async def _converse(
    settings: Settings,
    assistant: dict[str, Any],
    conversation: Conversation,
    mode: str,
    tts: Any,
    narrate: Line | None,
) -> Outcome:
    timeline: list[str] = []

    def line(at: float, who: str, text: str) -> None:
        timeline.append(f"[{at:6.2f}s] {who:<9} {text}")
        if narrate is not None:
            narrate(at, who, text)

    async with Client(settings.base_url, api_key=settings.api_key) as admin:
        created = await admin.create_call(
            assistant=assistant, type="web" if mode == "voice" else "text"
        )
    url = f"{created['clientUrl']}?token={created['clientToken']}"
    started, wall0 = time.monotonic(), time.time()
    caller: Caller | TextCaller
    if mode == "voice":
        caller = Caller(f"{url}&sampleRate=16000", voice=tts, timeline=line, t0=started)
    else:
        caller = TextCaller(url, timeline=line, t0=started)
    errors: list[str] = []
    greets = (
        bool(assistant.get("firstMessage"))
        and assistant.get("firstMessageMode", "assistant-speaks-first") == "assistant-speaks-first"
    )

    done: list[int] = []  # steps played to their end

    async def script(c: Any) -> None:
        try:
            async with Client(settings.base_url, token=created["token"]) as backend:
                if greets:
                    await c.until(lambda: _said_since(c, 0.0), within=STEP_WITHIN_SECONDS)
                for step in conversation.steps:
                    await _step(c, step, backend, created["id"])
                    done.append(1)
                await _settle(c)
        except BackchannelError as exc:  # the server refused a step's request
            errors.append(f"step {len(done) + 1}: {exc.code}: {exc.message}")
        except Exception as exc:  # a step that timed out, or a connection lost
            errors.append(f"step {len(done) + 1}: {type(exc).__name__}: {exc}")
        if errors:
            line(c.now(), "eval", f"stopped: {errors[-1]}")

    try:
        async with asyncio.timeout(CONVERSATION_LIMIT_SECONDS):
            await caller.run(script)
    except TimeoutError:
        errors.append(f"the conversation took over {CONVERSATION_LIMIT_SECONDS:g} s")
        async with Client(settings.base_url, api_key=settings.api_key) as admin:
            await admin.end_call(created["id"])
    if not errors and len(done) < len(conversation.steps):
        step = conversation.steps[len(done)]
        errors.append(f"the call ended before step {len(done) + 1} ({step.kind}) was done")
    report = next((e for e in caller.events if e.get("type") == "end-of-call-report"), {})
    happened = Happened(
        events=caller.events,
        event_at=caller.event_at,
        lines=caller.lines,
        frames=[at for at, _frame in caller.heard],
        tool_calls=list(report.get("toolCalls", [])),
        wall0=wall0,
    )
    verdicts = [_checked(e, happened) for e in conversation.expect]
    error = "; ".join(errors) or None
    return Outcome(conversation, mode, time.monotonic() - started, verdicts, error, timeline)


def _checked(expectation: Expectation, happened: Happened) -> Verdict:
    try:
        return check(expectation, happened)
    except Exception as exc:  # what happened has a shape the check did not expect
        return Verdict(expectation, False, f"could not be checked: {type(exc).__name__}: {exc}")


def _said_since(caller: Any, since: float) -> bool:
    return any(
        at > since and e.get("type") == "transcript" and e.get("role") == "assistant"
        for e, at in zip(caller.events, caller.event_at, strict=False)
    )


async def _settle(caller: Any, quiet: float = QUIET_SECONDS) -> None:
    """Until the assistant has answered the caller's last line and its own last tool
    calls (the model's words after them), then said nothing for ``quiet`` seconds."""
    await caller.until(lambda: _settled(caller, quiet), within=STEP_WITHIN_SECONDS)


def _settled(caller: Any, quiet: float) -> bool:
    owed = [end for _start, end, _text in caller.lines[-1:]]
    owed += [
        at
        for e, at in zip(caller.events, caller.event_at, strict=False)
        if e.get("type") == "tool-calls"
    ][-1:]
    answered = not owed or _said_since(caller, max(owed))
    return answered and caller.quiet_for() > quiet


async def _step(caller: Any, step: Step, backend: Client, call_id: str) -> None:
    within = float(step.options.get("within", STEP_WITHIN_SECONDS))
    if step.kind == "say":
        if not step.options.get("interrupt"):
            await _settle(caller)
        await caller.say(str(step.value))
    elif step.kind == "wait":
        await asyncio.sleep(float(step.value))
    elif step.kind == "wait_for" and "quiet" in step.value:
        await caller.until(lambda: _settled(caller, float(step.value["quiet"])), within=within)
    elif step.kind == "wait_for":
        target = dict(step.value)
        await caller.until(lambda: _reached(caller, target), within=within)
    elif step.kind == "result":
        plan = dict(step.value)
        tool = str(plan["tool"])
        await caller.until(lambda: _called(caller, tool) is not None, within=within)
        await asyncio.sleep(float(plan.get("after", 0)))
        tool_call_id = _called(caller, tool)
        assert tool_call_id is not None
        await backend.submit_result(
            call_id,
            tool_call_id,
            plan.get("result"),
            error=plan.get("error"),
            message=plan.get("message"),
            delivery=plan.get("delivery"),
            will_continue=bool(plan.get("willContinue", False)),
        )


def _called(caller: Any, tool: str) -> str | None:
    """The newest call of ``tool``'s id."""
    ids = [
        str(item["id"])
        for e in caller.events
        if e.get("type") == "tool-calls"
        for item in e.get("toolCallList", ())
        if item.get("name") == tool
    ]
    return ids[-1] if ids else None


def _reached(caller: Any, target: dict[str, Any]) -> bool:
    if "said" in target:
        regex = re.compile(str(target["said"]), re.IGNORECASE)
        return any(
            e.get("type") == "transcript"
            and e.get("role") == "assistant"
            and regex.search(str(e.get("transcript")))
            for e in caller.events
        )
    if "tool_called" in target:
        return _called(caller, str(target["tool_called"])) is not None
    return any(
        e.get("type") == "tool-calls-result"
        and (e.get("toolCallResult") or {}).get("name") == target["result"]
        for e in caller.events
    )
