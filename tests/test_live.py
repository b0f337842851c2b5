"""Gemini Live as a speech-to-speech model with backchannel as its tool backend.

The call runs against a Live server on loopback that speaks ``BidiGenerateContent`` as
Google's reference documents it (:mod:`tests.fake_live`, over TLS: the ``google-genai``
SDK speaks ``wss://`` only), through the SDK. The call's own input side hears the caller
(here :class:`Caller`, which tells the call of turns as the pipeline does; one test uses
the real pipeline on real speech); the model's audio is what the caller hears; its tool
calls are recorded in the ledger and their results are sent back under the model's call
id with the ``scheduling`` the arbiter's decision asks for, never starting a generation
while another runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backchannel import AssistantConfig, Client, Engine, EventLog, Ledger, MemoryStore
from backchannel.call import Call
from backchannel.errors import BackchannelError
from backchannel.lifecycle import TurnState
from backchannel.realtime import LiveLink, LiveLLM, ModelVoice, RealtimeInput
from backchannel.results import ResultSource, ToolResult
from backchannel.voice.audio import resample
from backchannel.voice.output import AudioOutput
from backchannel.voice.tts import PiperTTS, spoken

from .fake_live import FakeLive, Output, fake_live, last_user_text
from .peers import browser_call, free_port, server_process
from .test_voice_pipeline import Line, eventually, final_user

pytestmark = pytest.mark.anyio

RATE = 16_000
ORDER_TOOL = {
    "type": "function",
    "async": True,
    "function": {
        "name": "check_order",
        "description": "Look up an order.",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    },
}
LONG_ANSWER = (
    "Our store opens at nine in the morning and closes at six in the evening, "
    "every weekday, and on Saturdays we open a little later, at ten."
)


def assistant(
    tool: dict[str, Any] | None = None, *, detection: str = "backchannel", **extra: Any
) -> AssistantConfig:
    return AssistantConfig.from_json(
        {
            "model": {
                "provider": "google-live",
                "model": "gemini-2.5-flash-native-audio-preview-12-2025",
                "turnDetection": detection,
                "messages": [{"role": "system", "content": "You are the order desk."}],
                "tools": [tool] if tool else [],
            },
            **extra,
        }
    )


class Caller:
    """The call's input side, as the pipeline drives it: a turn starts, ends, and its
    transcript comes."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.listening: RealtimeInput | None = None

    def speaks(self, seconds: float) -> None:
        """With the server's VAD: a loud tone, then 0.8 s of silence, as the caller's
        audio (16 kHz, 20 ms frames)."""
        assert self.listening is not None
        t = np.arange(int(seconds * RATE)) / RATE
        tone = (np.sin(2 * np.pi * 300 * t) * 9000).astype("<i2")
        pcm = np.concatenate([tone, np.zeros(int(0.8 * RATE), "<i2")]).tobytes()
        for start in range(0, len(pcm), 640):
            self.listening.feed(pcm[start : start + 640])

    def feed(self, pcm: bytes) -> None:
        pass

    def starts(self) -> None:
        self.call.user_started_speaking()

    def ends(self, text: str) -> None:
        self.call.user_stopped_speaking()
        self.call.user_transcript(text)

    def says(self, text: str) -> None:
        self.starts()
        self.ends(text)


@asynccontextmanager
async def live_call(
    fake: FakeLive, config: AssistantConfig, *, silence_seconds: float = 30.0
) -> AsyncIterator[tuple[Call, Caller, Line, EventLog]]:
    link = LiveLink(
        model="gemini-2.5-flash-native-audio-preview-12-2025",
        api_key="g-test",
        url=fake.url,
        ssl_context=fake.client_ssl(),
    )
    model = LiveLLM(
        link, silence_seconds=silence_seconds, turn_detection=config.model.turn_detection
    )
    engine = Engine(Ledger(MemoryStore()), llm=model)
    await engine.open()
    line, events = Line(), EventLog()
    voice = ModelVoice()
    output = AudioOutput(voice, line.send, rate=RATE, clear=voice.clearing(line.clear))
    async with engine.call(config, output=output, events=events) as live:
        model.voice = voice
        caller = Caller(live)
        words = model.ours
        listening = RealtimeInput(live, model, rate=RATE, session=caller if words else None)
        caller.listening = listening
        yield live, caller, line, events
    await engine.close()
    assert not fake.problems, fake.problems  # one generation at a time, answers in order


async def speaks_over_the_answer(live: Call, caller: Caller, line: Line) -> None:
    """With the server's VAD: the caller asks, and once a second of the answer has been
    heard, speaks over it briefly."""
    caller.speaks(0.6)
    await eventually(lambda: live.assistant_speaking, within=30)
    heard_from = len(line.frames)
    await eventually(lambda: len(line.frames) >= heard_from + 50, within=30)
    caller.speaks(0.4)


async def holds_the_latest_handle(live: Call, fake: FakeLive) -> None:
    """Until the call's session holds the newest resumption handle the server gave (it
    may still be on its way on a busy machine: a drop before it arrives resumes from the
    one before, and what was sent since is written again)."""
    model = live.llm
    assert isinstance(model, LiveLLM)
    await eventually(lambda: bool(fake.handles), within=30)
    await eventually(lambda: model.link.handle == list(fake.handles)[-1], within=30)


async def settled(live: Call, fake: FakeLive) -> None:
    """Until nobody speaks and the model writes nothing."""
    await eventually(lambda: live.arbiter.state is TurnState.IDLE and not fake._busy, within=30)


def said(events: EventLog) -> list[str]:
    return [
        e.data["transcript"] for e in events.of_type("transcript") if e.data["role"] == "assistant"
    ]


def last(contents: list[dict[str, Any]]) -> dict[str, Any]:
    return contents[-1]["parts"][-1] if contents and contents[-1].get("parts") else {}


def outputs(fake: FakeLive) -> list[Any]:
    """The results in the session's context, in order."""
    parts = [p for c in fake.state.contents for p in c["parts"]]
    return [p["functionResponse"]["response"]["output"] for p in parts if "functionResponse" in p]


def order_desk(contents: list[dict[str, Any]]) -> Output:
    """Asked about an order: a line and the lookup. Told a result: says it. Else a long
    answer, to be cut or waited for."""
    parts = contents[-1]["parts"] if contents and contents[-1].get("role") == "user" else []
    results = [p["functionResponse"] for p in parts if "functionResponse" in p]
    if any("shipped" in str(r.get("response", {}).get("output")) for r in results):
        return [("say", "Your order has shipped.")]
    if results:
        return [("say", "It is on its way to you soon.")]
    if "order " in last_user_text(contents):
        return [("say", "Let me check that."), ("call", "check_order", {"id": "4417"})]
    return [("say", LONG_ANSWER)]


async def asked_for_order(fake: FakeLive, live: Call, caller: Caller, events: EventLog) -> str:
    """The caller asks about an order; the model calls the lookup and says the
    placeholder's line. The call id, once that is heard."""
    caller.says("Where is order 4417?")
    await eventually(lambda: bool(events.of_type("tool-calls")), within=30)
    await eventually(lambda: len(fake.generations) == 2, within=30)
    await settled(live, fake)
    return str(events.of_type("tool-calls")[0].data["toolCallList"][0]["id"])


async def test_a_question_is_answered_in_the_models_voice_over_the_sdk() -> None:
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (_live, caller, line, events):
            caller.says("When are you open?")
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=30)
        assert len(line.frames) > 100, "the model's audio reached the caller"
        assert fake.paths[0].startswith(
            "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
        )
        assert fake.headers[0]["x-goog-api-key"] == "g-test"
        setup = fake.setup
        assert setup["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
        assert setup["systemInstruction"]["parts"][0]["text"] == "You are the order desk."
        assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
        assert setup["realtimeInputConfig"]["automaticActivityDetection"]["disabled"] is True
        declaration = setup["tools"][0]["functionDeclarations"][0]
        assert declaration["name"] == "check_order" and declaration["behavior"] == "NON_BLOCKING"
        assert declaration["parameters"]["properties"] == {"id": {"type": "STRING"}}
        turns = fake.of_kind("clientContent")
        assert turns[-1]["turnComplete"] is True
        assert turns[-1]["turns"][-1]["parts"][0]["text"] == "When are you open?"
        assert fake.generations == ["turn"]


async def test_1_an_async_tools_result_lands_under_the_models_call_id_and_is_said_once() -> None:
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            record = await live.ledger.get(live.call_id, call_id)
            assert record is not None and record.arguments == {"id": "4417"}
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
        # The placeholder at once (more to come), the result when the floor was free.
        placeholder, result = fake.responses(call_id)
        assert (
            placeholder["willContinue"] is True
            and "background" in placeholder["response"]["output"]
        )
        assert result["response"] == {"output": "shipped"} and "willContinue" not in result
        assert result["scheduling"] == "WHEN_IDLE" and fake.generations[-1] == "WHEN_IDLE"
        assert said(events).count("Your order has shipped.") == 1


@pytest.mark.parametrize("delivery", ["when-idle", "interrupt"])
async def test_3_a_result_during_an_answer_waits_for_it_or_cuts_it(delivery: str) -> None:
    async with fake_live(order_desk, pace=0.08) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            caller.says("When are you open?")
            # 2 s of the long answer heard; the model is still writing it.
            await eventually(lambda: len(line.frames) >= 100 + 70, within=30)
            assert fake._busy and live.assistant_speaking
            result = ToolResult(call_id, result="shipped", delivery=delivery)
            await live.engine.submit_result(live.call_id, result, ResultSource.API)
            await eventually(lambda: "Your order has shipped." in said(events), within=60)
        lines = said(events)
        assert lines.count("Your order has shipped.") == 1
        scheduling = fake.responses(call_id)[-1]["scheduling"]
        if delivery == "when-idle":
            assert LONG_ANSWER in " ".join(lines), "the answer was heard whole first"
            assert scheduling == "WHEN_IDLE" and fake.interrupted == 0
        else:
            assert LONG_ANSWER not in " ".join(lines), "the answer was cut for the result"
            assert scheduling == "INTERRUPT" and fake.interrupted == 1


async def test_2_a_result_while_the_caller_talks_waits_and_one_response_covers_both() -> None:
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            caller.starts()
            await eventually(lambda: live.arbiter.user_speaking, within=30)
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await asyncio.sleep(0.5)
            assert len(fake.generations) == 2, "nothing said over the caller"
            caller.ends("And is it insured?")
            await eventually(lambda: len(fake.generations) == 3, within=30)
            await eventually(lambda: live.arbiter.state is TurnState.IDLE, within=30)
        assert fake.generations[-1] == "turn", (
            "one generation for the caller's words and the result"
        )
        result = fake.responses(call_id)[-1]
        assert result["response"] == {"output": "shipped"} and result["scheduling"] == "SILENT"
        turn = fake.of_kind("clientContent")[-1]["turns"][0]["parts"]
        assert turn[0]["text"] == "And is it insured?" and len(turn) == 2, "with the guidance"


async def test_4_three_results_in_one_second_make_one_announcement() -> None:
    calls = iter(["A1", "B2", "C3"])

    def respond(contents: list[dict[str, Any]]) -> Output:
        part = last(contents)
        if "functionResponse" in part:
            outputs = [
                p["functionResponse"]["response"]["output"]
                for c in contents
                for p in c["parts"]
                if "functionResponse" in p
            ]
            done = [o for o in outputs if o.startswith("done")]
            return (
                [("say", f"Results: {', '.join(done)}.")] if done else [("say", "Working on it.")]
            )
        if "orders" in last_user_text(contents):
            return [("say", "Checking all three.")] + [
                ("call", "check_order", {"id": next(calls)}) for _ in range(3)
            ]
        return [("say", "Hello.")]

    async with fake_live(respond) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            caller.says("Check my three orders.")
            await eventually(lambda: len(fake.generations) == 2, within=30)
            await settled(live, fake)
            ids = [c["id"] for c in events.of_type("tool-calls")[0].data["toolCallList"]]
            for n, call_id in enumerate(ids):
                await live.engine.submit_result(
                    live.call_id, ToolResult(call_id, result=f"done {n}"), ResultSource.API
                )
            await eventually(lambda: any("Results" in s for s in said(events)), within=30)
            await settled(live, fake)
        lines = " ".join(said(events))
        assert lines.count("Results:") == 1 and "Results: done 0, done 1, done 2." in lines
        assert len(fake.generations) == 3


async def test_8_a_silent_result_reaches_the_model_without_a_generation() -> None:
    seen: list[list[dict[str, Any]]] = []

    def respond(contents: list[dict[str, Any]]) -> Output:
        seen.append([dict(c) for c in contents])
        return order_desk(contents)

    async with fake_live(respond) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            result = ToolResult(call_id, result="shipped", delivery="silent")
            await live.engine.submit_result(live.call_id, result, ResultSource.API)
            await eventually(lambda: len(fake.responses(call_id)) == 2, within=30)
            assert fake.responses(call_id)[-1]["scheduling"] == "SILENT"
            await asyncio.sleep(0.5)
            assert len(fake.generations) == 2, "nothing said"
            caller.says("Has it shipped yet?")
            await eventually(lambda: len(fake.generations) == 3, within=30)
        # The next question's generation had the result in its context, before the turn.
        context = [p for c in seen[-1] for p in c["parts"]]
        outputs = [
            p["functionResponse"]["response"]["output"] for p in context if "functionResponse" in p
        ]
        assert outputs[-1] == "shipped" and context[-1] == {"text": "Has it shipped yet?"}


async def test_9_a_result_after_hang_up_is_kept_late() -> None:
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            await live.hang_up("customer-ended-call")
        late = await live.engine.submit_result(
            live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
        )
        assert late.outcome.value == "late" and late.record.late
        assert "Your order has shipped." not in said(events)


async def test_11_progress_then_the_result_are_recorded_in_order_and_said() -> None:
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            progress = ToolResult(
                call_id, result="packed", message="It is packed.", will_continue=True
            )
            await live.engine.submit_result(live.call_id, progress, ResultSource.API)
            await eventually(lambda: "It is packed." in said(events), within=30)
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
            record = await live.ledger.get(live.call_id, call_id)
        assert record is not None
        assert [p.result for p in record.progress] == ["packed"] and record.result == "shipped"


async def test_12_a_barge_in_cuts_the_answer_and_the_next_turn_cuts_what_is_still_written() -> None:
    async with fake_live(order_desk, pace=0.03) as fake:
        async with live_call(fake, assistant()) as (live, caller, line, events):
            caller.says("When are you open?")
            await eventually(lambda: live.assistant_speaking, within=30)
            heard_from = len(line.frames)
            await eventually(lambda: len(line.frames) >= heard_from + 150, within=30)  # 3 s
            caller.says("Sorry, and Sundays?")
            await eventually(lambda: bool(events.of_type("user-interrupted")), within=30)
            await eventually(lambda: len(fake.generations) == 2, within=30)
            await settled(live, fake)
        assert " ".join(said(events)).count(LONG_ANSWER) == 1, "the second answer, whole"
        history = live.conversation.to_openai()
        cut = next(m["content"] for m in history if m["role"] == "assistant")
        assert LONG_ANSWER.startswith(cut) and len(cut) < len(LONG_ANSWER)
        # The cut answer is not written back into the session as a line of its own.
        assert not [
            t for m in fake.of_kind("clientContent") for t in m["turns"] if t["role"] == "model"
        ]


async def test_a_dropped_session_resumes_and_the_pending_calls_result_lands_once() -> None:
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            await holds_the_latest_handle(live, fake)
            await fake.drop()
            await eventually(lambda: fake.connections == 2, within=30)
            assert fake.setup["sessionResumption"]["handle"] in fake.handles
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
        # The resumed session knew the call: its result went in as its answer, once.
        assert [r["response"]["output"] for r in fake.responses(call_id)][-1] == "shipped"
        assert said(events).count("Your order has shipped.") == 1
        # Nothing was written again; the call of the lost connection got its result as
        # content (a resumed session does not take a tool response to it).
        turns = [t for m in fake.of_kind("clientContent") for t in m["turns"]]
        assert [t["role"] for t in turns] == ["user", "user"]
        assert "functionResponse" in turns[1]["parts"][0]


async def test_what_was_sent_after_the_last_handle_is_written_into_the_resumed_session() -> None:
    """The server resumes the conversation as it was at its handle: a silent result sent
    after it would be lost with the connection."""
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            await holds_the_latest_handle(live, fake)
            handles = len(fake.handles)
            result = ToolResult(call_id, result="shipped", delivery="silent")
            await live.engine.submit_result(live.call_id, result, ResultSource.API)
            await eventually(lambda: len(fake.responses(call_id)) == 2, within=30)
            assert len(fake.handles) == handles, "no handle since the result"
            await fake.drop()
            await eventually(lambda: fake.connections == 2, within=30)
            assert fake.setup["sessionResumption"]["handle"] in fake.handles

            await eventually(lambda: "shipped" in outputs(fake), within=30)
            caller.says("Has it shipped yet?")
            await eventually(lambda: len(fake.generations) == 3, within=30)
            await settled(live, fake)
        # Written again as context: no generation of its own, once in the session.
        assert fake.generations == ["turn", "WHEN_IDLE", "turn"]
        assert outputs(fake).count("shipped") == 1
        again = [m for m in fake.of_kind("clientContent") if "functionResponse" in str(m)]
        assert again and not again[-1].get("turnComplete")


async def test_a_resumed_session_that_refuses_what_is_written_again_is_started_afresh() -> None:
    """What is written again into a resumed session is written once: a session lost
    again before a new handle starts afresh, with the whole history."""
    async with fake_live(order_desk, refuse_resumed_turns=True) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            await holds_the_latest_handle(live, fake)
            result = ToolResult(call_id, result="shipped", delivery="silent")
            await live.engine.submit_result(live.call_id, result, ResultSource.API)
            await eventually(lambda: len(fake.responses(call_id)) == 2, within=30)
            await fake.drop()
            await eventually(lambda: fake.connections == 3, within=30)

            await eventually(lambda: "shipped" in outputs(fake), within=30)
            assert fake.setups[1]["sessionResumption"].get("handle")
            assert not fake.setups[2]["sessionResumption"].get("handle")
            caller.says("Has it shipped yet?")
            await eventually(lambda: len(fake.generations) == 3, within=30)
            await settled(live, fake)
        assert fake.connections == 3, "started afresh once, not again and again"
        assert outputs(fake).count("shipped") == 1


async def test_a_session_that_cannot_be_resumed_starts_afresh_with_the_history() -> None:
    async with fake_live(order_desk) as fake:
        async with live_call(fake, assistant(ORDER_TOOL)) as (live, caller, _line, events):
            call_id = await asked_for_order(fake, live, caller, events)
            fake.forget = True
            await fake.drop()
            await eventually(lambda: fake.connections >= 3, within=30)
            await eventually(lambda: len(fake.state.contents) >= 4, within=30)
            kinds = [(c["role"], next(iter(p))) for c in fake.state.contents for p in c["parts"]]
            assert kinds[:4] == [
                ("user", "text"),
                ("model", "text"),
                ("model", "functionCall"),
                ("user", "functionResponse"),
            ], kinds
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
        assert said(events).count("Your order has shipped.") == 1
        assert "sessionResumption" not in fake.setup or not fake.setup["sessionResumption"].get(
            "handle"
        )


async def test_a_go_away_moves_the_call_to_a_resumed_session_between_answers() -> None:
    async with fake_live(order_desk, pace=0.05) as fake:
        async with live_call(fake, assistant()) as (live, caller, _line, events):
            caller.says("When are you open?")
            await eventually(lambda: fake._busy, within=30)
            leaving = asyncio.create_task(fake.go_away(20.0))  # while the model answers
            await eventually(lambda: fake.connections == 2, within=30)
            # The answer in progress was finished on the old session, and heard whole.
            await eventually(lambda: live.arbiter.state is TurnState.IDLE, within=30)
            assert LONG_ANSWER in " ".join(said(events)) and not events.of_type("error")
            caller.says("And Sundays?")
            await eventually(lambda: " ".join(said(events)).count(LONG_ANSWER) == 2, within=60)
            leaving.cancel()
        assert fake.setup["sessionResumption"]["handle"] in fake.handles
        assert not [e for e in events.of_type("error")]


async def test_a_model_that_cannot_be_reached_gives_the_fallback_line_not_silence() -> None:
    fake = FakeLive(order_desk, port=free_port())  # nothing listens there
    link = LiveLink(
        model="gemini-live", api_key="g-test", url=fake.url, ssl_context=fake.client_ssl()
    )
    model = LiveLLM(link, connect_seconds=1.0, turn_detection="backchannel")
    engine = Engine(Ledger(MemoryStore()), llm=model)
    await engine.open()
    events = EventLog()
    config = assistant(firstMessageMode="assistant-speaks-first-with-model-generated-message")
    line = Line()
    output = AudioOutput(ModelVoice(), line.send, rate=RATE, clear=line.clear)
    async with engine.call(config, output=output, events=events) as live:
        RealtimeInput(live, model, rate=RATE, session=Caller(live))  # turns in words
        await eventually(lambda: bool(said(events)), within=30)
        errors = [e.data["error"]["code"] for e in events.of_type("error")]
    await engine.close()
    assert errors == ["realtime_unreachable"]
    assert said(events) == [config.model.fallback_message]


async def test_garbage_from_the_live_server_costs_nothing() -> None:
    async with fake_live(order_desk) as fake:
        fake.preamble = [
            "not json",
            "[1, 2]",
            '{"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "%%%"}}]}}}',
            '{"toolCall": {"functionCalls": "odd"}}',
            '{"serverContent": 7}',
        ]
        async with live_call(fake, assistant()) as (_live, caller, _line, events):
            caller.says("When are you open?")
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=30)
        assert fake.connections == 1, "the session was kept"


async def test_a_stuck_generation_is_given_up_and_the_next_turn_is_answered() -> None:
    async with (
        fake_live(order_desk, stall=1) as fake,
        live_call(fake, assistant(), silence_seconds=1.0) as (live, caller, _l, events),
    ):
        caller.says("When are you open?")
        await eventually(lambda: bool(events.of_type("error")), within=30)
        assert events.of_type("error")[0].data["error"]["code"] == "realtime_timeout"
        await eventually(lambda: live.arbiter.state is TurnState.IDLE, within=30)
        caller.says("Hello?")
        await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=30)


async def test_a_web_call_through_the_server_process_runs_on_gemini_live(
    tmp_path: Path, piper: PiperTTS
) -> None:
    """A Live model end to end, named as a Google model (``provider: google`` with a
    Live model, a Live voice): the browser's speech is heard by the server's own
    pipeline (Silero, the turn model, Whisper), the model answers in the voice named in
    20 ms frames; a text call is refused."""
    async with fake_live(order_desk) as fake:
        ca = tmp_path / "ca.pem"
        fake.ca.cert_pem.write_to_path(str(ca))
        model = {
            "provider": "google",
            "model": "gemini-2.5-flash-native-audio-preview-12-2025",
            "turnDetection": "backchannel",
            "url": fake.url,
            "messages": [{"role": "system", "content": "You are the order desk."}],
            "temperature": 0.4,
            "maxTokens": 300,
        }
        env = {"BACKCHANNEL_GOOGLE_API_KEY": "g-server", "SSL_CERT_FILE": str(ca)}
        with server_process(tmp_path, "http://127.0.0.1:9/v1", env=env) as server:
            async with Client(server.url, api_key=server.api_key) as admin:
                with pytest.raises(BackchannelError) as refused:
                    await admin.create_call(assistant={"model": model}, type="text")
                assert refused.value.code == "voice_call_required"
            question = resample(await spoken(piper, "When are you open?"), piper.sample_rate, RATE)
            pcm = np.concatenate([question, np.zeros(int(2.0 * RATE), np.int16)]).astype("<i2")
            voice = {"provider": "google", "voiceId": "Kore"}
            frames, _events = await browser_call(
                server, model, pcm.tobytes(), rate=RATE, voice=voice
            )
        assert {len(f) for f in frames} == {640}, "20 ms PCM16 frames at the client's rate"
        assert fake.headers[0]["x-goog-api-key"] == "g-server"
        generation = fake.setup["generationConfig"]
        assert generation["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"] == {
            "voiceName": "Kore"
        }
        assert generation["temperature"] == 0.4
        assert "maxOutputTokens" not in generation, "it counts audio: 300 would cut answers"
        heard = fake.of_kind("clientContent")[0]["turns"][0]["parts"][0]["text"]
        assert "open" in heard.lower(), heard
        assert fake.generations == ["turn"] and not fake.problems


# -- the server's own VAD (``turnDetection: server_vad``, the default) ---------------------


async def test_with_the_servers_vad_the_callers_audio_goes_to_the_model_and_drives_the_call() -> (
    None
):
    async with fake_live(order_desk, transcripts=["When are you open?"]) as fake:
        config = assistant(ORDER_TOOL, detection="server_vad")
        async with live_call(fake, config) as (_live, caller, line, events):
            caller.speaks(0.6)
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=30)
        assert [e.data["transcript"] for e in final_user(events)] == ["When are you open?"]
        audio = [m["audio"] for m in fake.of_kind("realtimeInput") if "audio" in m]
        assert audio and {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
        setup = fake.setup
        assert setup["realtimeInputConfig"] == {"activityHandling": "NO_INTERRUPTION"}
        assert "inputAudioTranscription" in setup
        # The server answered the turn on its own; nothing else was asked of it.
        assert fake.generations == ["vad"] and not fake.of_kind("clientContent")
        assert len(line.frames) > 100


@pytest.mark.parametrize(
    ("transcripts", "late", "heard"),
    [(["When are you open?"], True, "When are you open?"), ([], False, "…")],
    ids=["words-after-the-answer", "no-words"],
)
async def test_with_the_servers_vad_a_turn_is_answered_however_late_its_words_come(
    transcripts: list[str], late: bool, heard: str
) -> None:
    """Words transcribed only after Live's answer began still make the turn; a turn Live
    answered with none of its words transcribed is still answered (the caller is not
    left in silence), its transcript "…"."""
    async with fake_live(order_desk, transcripts=transcripts, late_words=late) as fake:
        config = assistant(detection="server_vad")
        async with live_call(fake, config) as (live, caller, _line, events):
            caller.speaks(0.6)
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=30)
            await settled(live, fake)
        assert [e.data["transcript"] for e in final_user(events)] == [heard]
        assert fake.generations == ["vad"] and not fake.of_kind("clientContent")


async def test_with_the_servers_vad_an_async_result_is_said_once_when_the_floor_is_free() -> None:
    async with fake_live(order_desk, transcripts=["Where is order 4417?"]) as fake:
        config = assistant(ORDER_TOOL, detection="server_vad")
        async with live_call(fake, config) as (live, caller, _line, events):
            caller.speaks(0.6)
            await eventually(lambda: bool(events.of_type("tool-calls")), within=30)
            await eventually(lambda: len(fake.generations) == 2, within=30)
            await settled(live, fake)
            call_id = str(events.of_type("tool-calls")[0].data["toolCallList"][0]["id"])
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
        assert fake.generations == ["vad", "WHEN_IDLE", "WHEN_IDLE"]
        assert said(events).count("Your order has shipped.") == 1


async def test_with_the_servers_vad_a_result_while_the_caller_talks_is_told_after_their_turn() -> (
    None
):
    turns = ["Where is order 4417?", "And is it insured?"]
    async with fake_live(order_desk, transcripts=turns) as fake:
        config = assistant(ORDER_TOOL, detection="server_vad")
        async with live_call(fake, config) as (live, caller, _line, events):
            caller.speaks(0.6)
            await eventually(lambda: len(fake.generations) == 2, within=30)
            await settled(live, fake)
            call_id = str(events.of_type("tool-calls")[0].data["toolCallList"][0]["id"])
            assert caller.listening is not None
            t = np.arange(int(1.2 * RATE)) / RATE
            tone = (np.sin(2 * np.pi * 300 * t) * 9000).astype("<i2").tobytes()
            for start in range(0, len(tone) // 2, 640):
                caller.listening.feed(tone[start : start + 640])
            await eventually(lambda: live.arbiter.user_speaking, within=30)
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await asyncio.sleep(0.3)
            assert "Your order has shipped." not in said(events), "nothing over the caller"
            rest = tone[len(tone) // 2 :] + np.zeros(int(0.8 * RATE), "<i2").tobytes()
            for start in range(0, len(rest), 640):
                caller.listening.feed(rest[start : start + 640])
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
            await settled(live, fake)
        assert said(events).count("Your order has shipped.") == 1
        # The result started the answer to the turn; the server's own answer, which knew
        # nothing of it, was not played (cut, if it was still being written).
        assert LONG_ANSWER not in " ".join(said(events))
        scheduling = fake.responses(call_id)[-1]["scheduling"]
        assert scheduling in ("INTERRUPT", "WHEN_IDLE") and fake.generations[-1] == scheduling


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "never-finished"])
async def test_with_the_servers_vad_an_acknowledgement_over_the_answer_lets_it_go_on(
    finished: bool,
) -> None:
    """Whether or not the server marks the transcript ``finished``: without it, the
    "mm-hmm" ends only when the server answers it, once its answer in progress is
    written, seconds later; the caller's quiet tells it was short."""
    turns = ["When are you open?", "Mm-hmm."]
    # Written in real time: the answer is still being written well after the "mm-hmm"
    # would have lasted an acknowledgement's longest.
    async with fake_live(order_desk, transcripts=turns, pace=0.1, finished=finished) as fake:
        config = assistant(detection="server_vad")
        async with live_call(fake, config) as (live, caller, line, events):
            await speaks_over_the_answer(live, caller, line)
            await eventually(lambda: " ".join(said(events)).count(LONG_ANSWER) == 1, within=60)
            await settled(live, fake)
        assert not events.of_type("user-interrupted")
        assert [e.data["transcript"] for e in final_user(events)] == ["When are you open?"]
        assert fake.generations == ["vad", "vad"], "the server answered the 'mm-hmm' too"
        assert " ".join(said(events)).count(LONG_ANSWER) == 1, "that answer was not played"


@pytest.mark.parametrize(
    "words",
    ["Wait, where is order 4417?", "Actually, where is order 4417?"],
    ids=["urgent", "settled"],
)
async def test_with_the_servers_vad_words_over_the_answer_cut_it_before_the_server_answers(
    words: str,
) -> None:
    """A short real interruption, from a model that never marks its transcript
    ``finished``: its words cut the answer as they come (an interruption phrase at once,
    other words once they stand), not when the server gets round to answering it (after
    the answer in progress is written)."""
    turns = ["When are you open?", words]
    # Written in real time: the answer is still being written when the caller cuts in.
    async with fake_live(order_desk, transcripts=list(turns), pace=0.1, finished=False) as fake:
        config = assistant(ORDER_TOOL, detection="server_vad")
        async with live_call(fake, config) as (live, caller, line, events):
            await speaks_over_the_answer(live, caller, line)
            await eventually(lambda: bool(events.of_type("user-interrupted")), within=30)
            # Cut before the server answered the new turn (it does so only once the
            # answer it is writing is whole): the words did it, not its answer.
            assert fake.generations == ["vad"]
            await eventually(lambda: "Let me check that." in said(events), within=30)
            await settled(live, fake)
        assert [e.data["transcript"] for e in final_user(events)] == turns
        assert LONG_ANSWER not in " ".join(said(events))


async def test_a_web_call_through_the_server_process_sends_the_callers_audio_to_gemini_live(
    tmp_path: Path,
) -> None:
    """The default ``turnDetection``: the browser's audio reaches the model at 16 kHz and
    the server's VAD and transcription drive the call."""
    async with fake_live(order_desk, transcripts=["When are you open?"]) as fake:
        ca = tmp_path / "ca.pem"
        fake.ca.cert_pem.write_to_path(str(ca))
        model = {"provider": "google-live", "url": fake.url}
        env = {"BACKCHANNEL_GOOGLE_API_KEY": "g-server", "SSL_CERT_FILE": str(ca)}
        with server_process(tmp_path, "http://127.0.0.1:9/v1", env=env) as server:
            t = np.arange(int(0.6 * 24_000)) / 24_000
            tone = (np.sin(2 * np.pi * 300 * t) * 9000).astype("<i2")
            pcm = np.concatenate([tone, np.zeros(24_000, "<i2")]).tobytes()
            await browser_call(server, model, pcm, rate=24_000)
        assert fake.setup["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
        audio = [m["audio"] for m in fake.of_kind("realtimeInput") if "audio" in m]
        assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
        assert fake.generations == ["vad"] and not fake.problems
