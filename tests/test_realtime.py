"""A speech-to-speech model (OpenAI Realtime) with backchannel as its tool backend.

The call runs against a Realtime server on loopback that speaks the protocol as OpenAI's
reference documents it (:mod:`tests.fake_realtime`), through the ``openai`` SDK's
Realtime client. The caller's audio goes to the model; its VAD and transcripts drive
the call; the model's audio is what the caller hears; its tool calls are recorded in the
ledger and their results are sent back under the model's call id when the arbiter says,
never while another response is active.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from backchannel import AssistantConfig, Client, Engine, EventLog, Ledger, MemoryStore
from backchannel.call import Call
from backchannel.errors import BackchannelError
from backchannel.lifecycle import TurnState
from backchannel.phone import mulaw
from backchannel.realtime import ModelVoice, RealtimeInput, RealtimeLink, RealtimeLLM
from backchannel.realtime.mirror import UNHEARD
from backchannel.results import ResultSource, ToolResult
from backchannel.voice.audio import resample
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import CallInput, VoiceSession
from backchannel.voice.stt import WhisperSTT
from backchannel.voice.tts import PiperTTS, spoken
from backchannel.voice.vad import SileroVAD, TurnDetector

from .fake_realtime import FakeRealtime, Output, fake_realtime
from .peers import browser_call, free_port, server_process
from .test_phone import NUMBER, TOKEN, FakeTwilio, incoming_call, until
from .test_voice_pipeline import Line, eventually, final_user

pytestmark = pytest.mark.anyio

RATE = 16_000
ORDER_TOOL = {"type": "function", "async": True, "function": {"name": "check_order"}}


def assistant(tool: dict[str, Any] | None = None) -> AssistantConfig:
    return AssistantConfig.from_json(
        {
            "model": {
                "provider": "openai-realtime",
                "model": "gpt-realtime",
                "messages": [{"role": "system", "content": "You are the order desk."}],
                "tools": [tool] if tool else [],
            }
        }
    )


@asynccontextmanager
async def realtime_call(
    fake: FakeRealtime,
    config: AssistantConfig,
    input_side: Callable[[Call], CallInput] | None = None,
    *,
    silence_seconds: float = 30.0,
) -> AsyncIterator[tuple[Call, RealtimeInput, Line, EventLog]]:
    link = RealtimeLink(model="gpt-realtime", api_key="sk-test", url=fake.url)
    model = RealtimeLLM(
        link, turn_detection=config.model.turn_detection, silence_seconds=silence_seconds
    )
    engine = Engine(Ledger(MemoryStore()), llm=model)
    await engine.open()
    line, events = Line(), EventLog()
    voice = ModelVoice()
    output = AudioOutput(voice, line.send, rate=RATE, clear=voice.clearing(line.clear))
    async with engine.call(config, output=output, events=events) as live:
        model.voice = voice
        session = input_side(live) if input_side is not None else None
        listening = RealtimeInput(live, model, rate=RATE, session=session)
        yield live, listening, line, events
    await engine.close()
    assert not fake.problems, fake.problems  # the session's conversation stayed consistent


def speech(seconds: float) -> bytes:
    """A caller's turn as the fake's VAD hears it: a loud tone, then 0.8 s of silence."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = (np.sin(2 * np.pi * 300 * t) * 9000).astype("<i2")
    return np.concatenate([tone, np.zeros(int(0.8 * RATE), "<i2")]).tobytes()


def feed(listening: RealtimeInput, pcm: bytes) -> None:
    for start in range(0, len(pcm), 640):
        listening.feed(pcm[start : start + 640])


def last_user(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("role") == "user":
            content = item["content"][0]
            return str(content.get("transcript") or content.get("text") or "")
    return ""


def outputs(items: list[dict[str, Any]], call_id: str) -> list[str]:
    return [
        i["output"]
        for i in items
        if i.get("type") == "function_call_output" and i["call_id"] == call_id
    ]


def said(events: EventLog) -> list[str]:
    return [
        e.data["transcript"] for e in events.of_type("transcript") if e.data["role"] == "assistant"
    ]


async def test_a_spoken_question_is_answered_in_the_models_voice() -> None:
    def respond(items: list[dict[str, Any]]) -> Output:
        return [("say", "We open at nine.")] if "open" in last_user(items) else []

    async with fake_realtime(respond, ["When are you open?"]) as fake:
        async with realtime_call(fake, assistant()) as (_live, listening, line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: said(events) == ["We open at nine."], within=30)
        assert [e.data["transcript"] for e in final_user(events)] == ["When are you open?"]
        assert len(line.frames) > 40, "the model's audio reached the caller"
        assert fake.paths == ["/v1/realtime?model=gpt-realtime"]
        assert fake.headers[0]["authorization"] == "Bearer sk-test"
        session = fake.session
        assert session["instructions"] == "You are the order desk."
        detection = session["audio"]["input"]["turn_detection"]
        assert detection["create_response"] is False and detection["interrupt_response"] is False
        assert len(fake.responses) == 1 and not fake.errors


async def test_an_async_tool_is_recorded_and_its_later_result_is_answered_under_its_call_id() -> (
    None
):
    def respond(items: list[dict[str, Any]]) -> Output:
        last = [i for i in items if i.get("role") != "system"][-1]  # past the guidance
        if last.get("role") == "user":
            return [("say", "Let me check that."), ("call", "check_order", {"id": "4417"})]
        if last.get("type") == "function_call_output" and "shipped" in last["output"]:
            return [("say", "Your order has shipped.")]
        return [("say", "It is on its way to you soon.")]

    async with fake_realtime(respond, ["Where is order 4417?"]) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, _line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: bool(events.of_type("tool-calls")), within=30)
            call_id = events.of_type("tool-calls")[0].data["toolCallList"][0]["id"]
            record = await live.ledger.get(live.call_id, call_id)
            assert record is not None and record.name == "check_order"
            assert record.arguments == {"id": "4417"}
            await eventually(
                lambda: len(fake.responses) == 2 and live.arbiter.state is TurnState.IDLE, within=30
            )
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
        # The placeholder at once, the result later: both under the model's call id.
        outs = outputs(fake.items, call_id)
        assert len(outs) == 2 and "background" in outs[0] and outs[1] == "shipped"
        assert not [i for i in fake.items if i.get("role") == "system"], "guidance deleted"
        assert not fake.errors, fake.errors
        assert said(events).count("Your order has shipped.") == 1


LONG_ANSWER = (
    "Our store opens at nine in the morning and closes at six in the evening, "
    "every weekday, and on Saturdays we open a little later, at ten."
)


def order_desk(items: list[dict[str, Any]]) -> Output:
    """Asked about an order: a line and the lookup. Told a result: says it. Else a long
    answer, to be cut or waited for."""
    last = [i for i in items if i.get("role") != "system"][-1]
    if last.get("role") == "user" and "order" in last_user(items):
        return [("say", "Let me check that."), ("call", "check_order", {"id": "4417"})]
    if last.get("type") == "function_call_output" and "shipped" in last["output"]:
        return [("say", "Your order has shipped.")]
    return [("say", LONG_ANSWER)]


async def asked_for_order(
    fake: FakeRealtime, live: Call, listening: RealtimeInput, events: EventLog, *, idle: bool = True
) -> str:
    """The caller asks about an order; the model calls the lookup and goes on talking.
    The lookup's call id, once the model has finished (and, if ``idle``, been heard)."""
    feed(listening, speech(0.6))
    await eventually(lambda: bool(events.of_type("tool-calls")), within=30)
    await eventually(lambda: len(fake.responses) == 2, within=30)
    if idle:
        await eventually(lambda: live.arbiter.state is TurnState.IDLE, within=30)
    return str(events.of_type("tool-calls")[0].data["toolCallList"][0]["id"])


@pytest.mark.parametrize("delivery", ["when-idle", "interrupt"])
async def test_a_result_during_an_answer_waits_for_it_or_cuts_it_never_two_responses(
    delivery: str,
) -> None:
    # The model writes slowly here, so the result comes while its response is active.
    async with fake_realtime(order_desk, ["Where is order 4417?"], pace=0.08) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, line, events):
            call_id = await asked_for_order(fake, live, listening, events, idle=False)
            # "Let me check that." is 1.3 s; 2 s in, the long answer is playing and the
            # model is still writing it.
            await eventually(lambda: len(line.frames) >= 100, within=30)
            assert fake.responses and live.assistant_speaking
            result = ToolResult(call_id, result="shipped", delivery=delivery)
            await live.engine.submit_result(live.call_id, result, ResultSource.API)
            await eventually(lambda: "Your order has shipped." in said(events), within=60)
        assert not fake.errors, fake.errors  # no conversation_already_has_active_response
        lines = said(events)
        assert lines.count("Your order has shipped.") == 1
        if delivery == "when-idle":
            assert LONG_ANSWER in " ".join(lines), "the answer was heard whole first"
            assert not fake.of_type("response.cancel")
        else:
            assert LONG_ANSWER not in " ".join(lines), "the answer was cut for the result"
            assert fake.of_type("response.cancel"), "the answer being written was cancelled"
            assert fake.of_type("conversation.item.truncate"), "and cut to what was heard"


async def test_a_barge_in_cuts_the_answer_and_the_model_keeps_only_what_was_heard() -> None:
    async with fake_realtime(order_desk, ["When are you open?", "Sorry, and Sundays?"]) as fake:
        async with realtime_call(fake, assistant()) as (live, listening, line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: len(line.frames) >= 60, within=30)  # 1.2 s heard
            feed(listening, speech(0.6))
            await eventually(lambda: bool(events.of_type("user-interrupted")), within=30)
            await eventually(lambda: bool(fake.of_type("conversation.item.truncate")), within=30)
            await eventually(lambda: len(fake.responses) == 2, within=30)
        truncate = fake.of_type("conversation.item.truncate")[0]
        full_ms = len(LONG_ANSWER) / 14 * 1000
        assert 500 < truncate["audio_end_ms"] < full_ms, truncate
        history = live.conversation.to_openai()
        cut = next(m["content"] for m in history if m["role"] == "assistant")
        assert LONG_ANSWER.startswith(cut) and len(cut) < len(LONG_ANSWER)
        assert not fake.errors, fake.errors


async def test_a_dropped_session_is_opened_again_with_the_history_and_the_result_lands_once() -> (
    None
):
    async with fake_realtime(order_desk, ["Where is order 4417?"]) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, _l, events):
            call_id = await asked_for_order(fake, live, listening, events)
            await fake.drop()
            await eventually(lambda: fake.connections == 2 and len(fake.items) >= 4, within=30)
            # The new session has the conversation so far, written from the call's history.
            kinds = [(i["type"], i.get("role")) for i in fake.items]
            assert kinds[:4] == [
                ("message", "user"),
                ("message", "assistant"),
                ("function_call", None),
                ("function_call_output", None),
            ], kinds
            assert fake.items[2]["call_id"] == call_id
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
        assert said(events).count("Your order has shipped.") == 1
        assert not fake.errors, fake.errors


async def test_a_web_call_through_the_server_process_runs_on_the_realtime_model(
    tmp_path: Path,
) -> None:
    """A Realtime model end to end, named as a Vapi assistant names it (``provider:
    openai`` with a realtime model, an OpenAI voice): the browser's audio reaches the
    model, the model's voice (the one named) comes back in 20 ms frames, a text call is
    refused."""
    async with fake_realtime(order_desk, ["When are you open?"]) as fake:
        model = {
            "provider": "openai",
            "model": "gpt-realtime-2025-08-28",
            "url": fake.url.replace("ws://", "http://"),
            "messages": [{"role": "system", "content": "You are the order desk."}],
            "maxTokens": 300,
        }
        env = {"BACKCHANNEL_OPENAI_API_KEY": "sk-server"}
        with server_process(tmp_path, "http://127.0.0.1:9/v1", env=env) as server:
            async with Client(server.url, api_key=server.api_key) as admin:
                with pytest.raises(BackchannelError) as refused:
                    await admin.create_call(assistant={"model": model}, type="text")
                assert refused.value.code == "voice_call_required"
            voice = {"provider": "openai", "voiceId": "marin"}
            frames, _events = await browser_call(server, model, speech(0.6), rate=RATE, voice=voice)
        assert {len(f) for f in frames} == {640}, "20 ms PCM16 frames at the client's rate"
        assert fake.headers[0]["authorization"] == "Bearer sk-server"
        assert len(fake.responses) == 1 and not fake.errors
        assert fake.session["audio"]["output"]["voice"] == "marin"
        assert "max_output_tokens" not in fake.session, "it counts audio: 300 would cut answers"


async def test_2_a_result_while_the_caller_talks_waits_and_one_response_covers_both() -> None:
    turns = ["Where is order 4417?", "And is it insured?"]
    async with fake_realtime(order_desk, turns) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, _l, events):
            call_id = await asked_for_order(fake, live, listening, events)
            talk = speech(1.6)
            feed(listening, talk[: len(talk) // 3])  # the caller is talking
            await eventually(lambda: live.arbiter.user_speaking, within=30)
            await live.engine.submit_result(
                live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
            )
            assert len(fake.responses) == 2, "nothing said over the caller"
            feed(listening, talk[len(talk) // 3 :])
            await eventually(lambda: "Your order has shipped." in said(events), within=30)
        assert len(fake.responses) == 3, "one response for the caller's words and the result"
        assert said(events).count("Your order has shipped.") == 1 and not fake.errors


async def test_8_a_silent_result_is_given_to_the_model_without_a_response() -> None:
    seen: list[list[dict[str, Any]]] = []

    def respond(items: list[dict[str, Any]]) -> Output:
        seen.append(items)
        return order_desk(items)

    turns = ["Where is order 4417?", "Has it shipped yet?"]
    async with fake_realtime(respond, turns) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, _l, events):
            call_id = await asked_for_order(fake, live, listening, events)
            result = ToolResult(call_id, result="shipped", delivery="silent")
            await live.engine.submit_result(live.call_id, result, ResultSource.API)
            await eventually(lambda: bool(outputs(fake.items, call_id)[1:]), within=30)
            assert len(fake.responses) == 2, "nothing said"
            feed(listening, speech(0.6))
            await eventually(lambda: len(fake.responses) == 3, within=30)
        assert outputs(seen[-1], call_id)[-1] == "shipped", "the next question can use it"
        assert "Your order has shipped." not in said(events)[:3]


async def test_9_a_result_after_hang_up_is_kept_late() -> None:
    async with fake_realtime(order_desk, ["Where is order 4417?"]) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, _l, events):
            call_id = await asked_for_order(fake, live, listening, events, idle=False)
            await live.hang_up("customer-ended-call")
        late = await live.engine.submit_result(
            live.call_id, ToolResult(call_id, result="shipped"), ResultSource.API
        )
        assert late.outcome.value == "late" and late.record.late
        assert "Your order has shipped." not in said(events)


async def test_11_progress_then_the_result_are_recorded_in_order_and_said() -> None:
    async with fake_realtime(order_desk, ["Where is order 4417?"]) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, _l, events):
            call_id = await asked_for_order(fake, live, listening, events)
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
        assert [p.result for p in record.progress] == ["packed"] and record.result == "shipped"
        assert not fake.errors, fake.errors


async def test_a_model_that_cannot_be_reached_gives_the_fallback_line_not_silence() -> None:
    fake = FakeRealtime(order_desk, port=free_port())  # nothing listens there
    link = RealtimeLink(model="gpt-realtime", api_key="sk-test", url=fake.url)
    model = RealtimeLLM(link, connect_seconds=1.0)
    engine = Engine(Ledger(MemoryStore()), llm=model)
    await engine.open()
    events = EventLog()
    config = AssistantConfig.from_json(
        {
            "firstMessageMode": "assistant-speaks-first-with-model-generated-message",
            "model": {"provider": "openai-realtime", "model": "gpt-realtime"},
        }
    )
    line = Line()
    output = AudioOutput(ModelVoice(), line.send, rate=RATE, clear=line.clear)
    async with engine.call(config, output=output, events=events) as live:
        RealtimeInput(live, model, rate=RATE)
        await eventually(lambda: bool(said(events)), within=30)
        errors = [e.data["error"]["code"] for e in events.of_type("error")]
    await engine.close()
    assert errors == ["realtime_unreachable"]
    assert said(events) == [config.model.fallback_message]


async def test_garbage_from_the_realtime_server_costs_nothing() -> None:
    async with fake_realtime(order_desk, ["When are you open?"]) as fake:
        fake.preamble = [
            "not json",
            "[1, 2]",
            '{"type": 7}',
            '{"type": "response.done", "response": "odd"}',
            '{"type": "response.output_audio.delta", "item_id": 3, "delta": "%%%"}',
            '{"type": "error", "error": null}',
        ]
        async with realtime_call(fake, assistant()) as (_live, listening, _line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=30)
        assert fake.connections == 1, "the session was kept"


async def test_acknowledgements_over_the_answer_let_it_go_on() -> None:
    turns = ["When are you open?", "Mm-hmm.", "Right."]
    async with fake_realtime(order_desk, turns) as fake:
        async with realtime_call(fake, assistant()) as (live, listening, line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: len(line.frames) >= 60, within=30)
            feed(listening, speech(0.4))  # shorter than any acknowledgement can last
            feed(listening, speech(0.3))  # and another, before the first is transcribed
            await eventually(lambda: len(listening.let_pass) == 2, within=30)
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=60)
        assert listening.let_pass == ["Mm-hmm.", "Right."]
        users = [i for i in fake.items if i.get("role") == "user"]
        assert len(users) == 1, "the acknowledgements were taken out of the session"
        assert not events.of_type("user-interrupted") and len(fake.responses) == 1
        assert [m["role"] for m in live.conversation.to_openai()].count("user") == 1


async def test_a_turn_whose_transcription_fails_is_answered_from_its_audio() -> None:
    """The server could not transcribe the caller's question: the model has its audio,
    so it is asked to answer, and the session's item is neither deleted nor written
    again as text; the next question, transcribed, is answered as usual."""

    def respond(items: list[dict[str, Any]]) -> Output:
        users = [i for i in items if i.get("role") == "user"]
        return [("say", "We open at nine." if len(users) == 1 else "Yes, on Sundays too.")]

    async with fake_realtime(respond, [None, "Also on Sundays?"]) as fake:
        async with realtime_call(fake, assistant()) as (live, listening, _line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: said(events) == ["We open at nine."], within=30)
            feed(listening, speech(0.6))
            await eventually(lambda: len(said(events)) == 2, within=30)
        assert [e.data["transcript"] for e in final_user(events)] == [UNHEARD, "Also on Sundays?"]
        assert len(fake.responses) == 2 and not fake.errors and not fake.problems
        kinds = [e["type"] for e in fake.received]
        assert "conversation.item.delete" not in kinds and "conversation.item.create" not in kinds
        assert [m["role"] for m in live.conversation.to_openai()].count("user") == 2


async def test_a_barge_in_on_the_words_after_a_tool_call_writes_each_call_once() -> None:
    turns = ["Where is order 4417?", "Sorry, cancel that."]
    async with fake_realtime(order_desk, turns, pace=0.05) as fake:
        async with realtime_call(fake, assistant(ORDER_TOOL)) as (live, listening, line, events):
            call_id = await asked_for_order(fake, live, listening, events, idle=False)
            await eventually(lambda: len(line.frames) >= 120, within=30)  # into the answer
            feed(listening, speech(1.4))  # longer than an acknowledgement: cuts at once
            await eventually(lambda: bool(events.of_type("user-interrupted")), within=30)
            await eventually(lambda: len(fake.responses) == 3, within=30)
        calls = [i for i in fake.items if i.get("call_id") == call_id]
        assert [i["type"] for i in calls].count("function_call") == 1
        assert not fake.errors, fake.errors


async def test_a_session_lost_mid_answer_leaves_the_call_able_to_answer() -> None:
    async with fake_realtime(order_desk, ["When are you open?", "Hello?"], pace=0.08) as fake:
        async with realtime_call(fake, assistant()) as (_live, listening, line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: len(line.frames) >= 50, within=30)
            await fake.drop()  # while the model is still writing its answer
            await eventually(lambda: fake.connections == 2, within=30)
            await eventually(lambda: bool(events.of_type("error")), within=30)
            # The caller hears the fallback line, not silence, then asks again.
            await eventually(lambda: _live_fallback(said(events)), within=30)
            heard = len(said(events))
            feed(listening, speech(0.6))
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)[heard:]), within=60)
        assert [e.data["error"]["message"] for e in events.of_type("error")] == ["session_lost"]
        assert not fake.errors, fake.errors


def _live_fallback(lines: list[str]) -> bool:
    """The caller heard the assistant's fallback line when the answer was lost."""
    return AssistantConfig.from_json({}).model.fallback_message in lines


async def test_with_backchannel_turn_detection_the_pipeline_hears_the_caller_and_the_model_answers(
    piper: PiperTTS, whisper: WhisperSTT, turn_model: Any
) -> None:
    """``turnDetection: backchannel``: Silero, the turn model and Whisper find the turn on
    real speech; the session, with no VAD of its own, gets the turn in words."""
    config = AssistantConfig.from_json(
        {"model": {"provider": "openai-realtime", "turnDetection": "backchannel"}}
    )

    def pipeline(call: Call) -> CallInput:
        return VoiceSession(call, TurnDetector(SileroVAD()), whisper, turn_model=turn_model)

    async def voice(text: str) -> bytes:
        audio = resample(await spoken(piper, text), piper.sample_rate, RATE)
        return np.concatenate([audio, np.zeros(int(1.5 * RATE), np.int16)]).astype("<i2").tobytes()

    async with fake_realtime(order_desk) as fake:
        async with realtime_call(fake, config, pipeline) as (_live, listening, _line, events):
            for start in range(0, len(pcm := await voice("When are you open?")), 640):
                listening.feed(pcm[start : start + 640])
                await asyncio.sleep(0.02)  # in real time: the turn model waits on pauses
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=60)
        assert "open" in final_user(events)[0].data["transcript"].lower()
        assert fake.session["audio"]["input"]["turn_detection"] is None
        assert fake.session["audio"]["input"]["transcription"] is None
        # The model gets the turn as the call heard it, in words; no audio of the caller's.
        assert not fake.of_type("input_audio_buffer.append") and not fake.errors
        user = [i for i in fake.items if i.get("role") == "user"]
        assert len(user) == 1 and user[0]["content"][0]["type"] == "input_text"
        assert "open" in user[0]["content"][0]["text"].lower()


async def test_a_phone_call_runs_on_the_realtime_model(tmp_path: Path) -> None:
    """Twilio's media stream (µ-law 8 kHz) in and out, the model in between."""
    async with fake_realtime(order_desk, ["When are you open?"]) as fake:
        env = {"BACKCHANNEL_TWILIO_AUTH_TOKEN": TOKEN, "BACKCHANNEL_OPENAI_API_KEY": "sk-phone"}
        with server_process(tmp_path, "http://127.0.0.1:9/v1", env=env) as server:
            model = {"provider": "openai-realtime", "url": fake.url.replace("ws://", "http://")}
            async with Client(server.url, api_key=server.api_key) as admin:
                created = await admin.create_assistant({"model": model})
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                mapped = await http.post(
                    "/phone-numbers",
                    json={"number": NUMBER, "assistantId": created["id"]},
                    headers={"Authorization": f"Bearer {server.api_key}"},
                )
                assert mapped.status_code == 201, mapped.text
            stream_url, params = await incoming_call(server, f"{server.url}/twilio/voice")
            async with connect(stream_url) as ws:
                twilio = FakeTwilio(ws)
                await twilio.start("CA0001", params)
                async with twilio.on_the_line():
                    t = np.arange(int(0.6 * 8000)) / 8000
                    await twilio.say((np.sin(2 * np.pi * 300 * t) * 9000).astype(np.int16))
                    await until(lambda: len(twilio.heard) > 50, what="the model's voice")
                    await ws.close()
        loud = max(int(np.abs(mulaw.decode(f)).max()) for _, f in twilio.heard)
        assert loud > 1000, "the model's audio, not silence"
        assert fake.headers[0]["authorization"] == "Bearer sk-phone"
        assert len(fake.responses) == 1 and not fake.errors


async def test_a_model_that_stops_answering_is_given_up_and_the_next_turn_is_answered() -> None:
    async with fake_realtime(order_desk, ["When are you open?", "Hello?"]) as fake:
        fake.stall = 1  # the first response starts and says nothing
        async with realtime_call(fake, assistant(), silence_seconds=1.0) as (
            _l,
            listening,
            _line,
            events,
        ):
            feed(listening, speech(0.6))
            await eventually(lambda: _live_fallback(said(events)), within=30)
            feed(listening, speech(0.6))
            await eventually(lambda: LONG_ANSWER in " ".join(said(events)), within=30)
        assert [e.data["error"]["code"] for e in events.of_type("error")] == ["realtime_timeout"]
        assert fake.of_type("response.cancel"), "the stuck response was cancelled"
        assert not fake.errors, fake.errors


async def test_a_cough_over_the_answer_resumes_the_cut_sentence_in_the_models_voice() -> None:
    async with fake_realtime(order_desk, ["When are you open?", ""]) as fake:
        async with realtime_call(fake, assistant()) as (_live, listening, line, events):
            feed(listening, speech(0.6))
            await eventually(lambda: len(line.frames) >= 60, within=30)
            feed(listening, speech(1.6))  # longer than an acknowledgement, and no words
            await eventually(lambda: bool(events.of_type("user-interrupted")), within=30)
            cut_at = events.of_type("user-interrupted")[0].at
            await eventually(
                lambda: (
                    said(events)[-1:] == [LONG_ANSWER[-20:]]
                    or said(events)[-1].endswith(LONG_ANSWER[-20:])
                ),
                within=60,
            )
        lines = said(events)
        assert LONG_ANSWER.endswith(lines[-1]) and len(lines[-1]) > 20, lines
        after = [f for t, f in line.frames if t > cut_at]
        loud = sum(1 for f in after if np.abs(np.frombuffer(f, "<i2")).max() > 1000)
        assert loud > 50, "the sentence came again in the model's own voice"
        assert not fake.errors, fake.errors
