"""A phone call through Twilio Media Streams against the real server process.

The test plays Twilio: it posts the signed voice webhook, reads the TwiML, opens the
stream it names, and speaks Twilio's exact JSON frames (``connected``, ``start``,
``media`` every 20 ms of µ-law 8 kHz, ``mark`` echoes, ``stop``), with a synthesized
caller's voice in real time. The server runs Silero, Whisper and Piper; the model is
the rule-based stand-in on a loopback OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from backchannel import Client
from backchannel.phone import mulaw
from backchannel.voice.audio import resample
from backchannel.voice.tts import PiperTTS, spoken

from .fake_openai import serve as serve_model
from .fake_vendors import KEY, fake_vendors
from .peers import ServerProcess, order_tool, rule_model, server_process, tool_server

pytestmark = pytest.mark.anyio

TOKEN = "twilio-auth-token"
NUMBER, CALLER = "+15550001111", "+15557654321"


@dataclass
class FakeTwilio:
    """The Twilio side of one media stream."""

    ws: ClientConnection
    stream_sid: str = "MZ00000000000000000000000000000001"
    heard: list[tuple[float, bytes]] = field(default_factory=list)  # µ-law from the server
    clears: list[float] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    speech: list[tuple[np.ndarray, asyncio.Event]] = field(default_factory=list)
    speech_ended: list[float] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, call_sid: str, parameters: dict[str, str]) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
        await self.ws.send(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": self.stream_sid,
                    "start": {
                        "streamSid": self.stream_sid,
                        "accountSid": "AC0",
                        "callSid": call_sid,
                        "tracks": ["inbound"],
                        "customParameters": parameters,
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                    },
                }
            )
        )

    async def microphone(self) -> None:
        """20 ms µ-law frames in real time: the caller's speech when talking, else silence."""
        start, n, pending = time.monotonic(), 0, np.zeros(0, np.int16)
        done = asyncio.Event()
        while True:
            if pending.size == 0 and self.speech:
                pending, done = self.speech.pop(0)
            frame, pending = pending[:160], pending[160:]
            if frame.size and pending.size == 0:
                self.speech_ended.append(time.time())
                done.set()
            frame = np.concatenate([frame, np.zeros(160 - frame.size, np.int16)])
            payload = base64.b64encode(mulaw.encode(frame)).decode()
            n += 1
            message = {
                "event": "media",
                "sequenceNumber": str(n + 1),
                "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": str(n), "timestamp": str(n * 20)},
            }
            message["media"]["payload"] = payload
            try:
                await self.ws.send(json.dumps(message))
            except ConnectionClosed:
                return
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))

    async def listen(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                assert frame["streamSid"] == self.stream_sid
                if frame["event"] == "media":
                    self.heard.append((time.time(), base64.b64decode(frame["media"]["payload"])))
                elif frame["event"] == "clear":
                    self.clears.append(time.time())
                elif frame["event"] == "mark":
                    # Twilio echoes a mark once playback reaches it.
                    self.marks.append(frame["mark"]["name"])
                    await self.ws.send(json.dumps({**frame, "sequenceNumber": "0"}))
        except ConnectionClosed:
            pass
        self.closed.set()

    @asynccontextmanager
    async def on_the_line(self) -> AsyncIterator[None]:
        """Microphone and listener running for the block; the block waits for the
        stream to close (the server hangs up), then the microphone stops."""
        async with asyncio.TaskGroup() as group:
            mic = group.create_task(self.microphone())
            group.create_task(self.listen())
            try:
                yield
            finally:
                mic.cancel()

    async def say(self, audio: np.ndarray) -> None:
        done = asyncio.Event()
        self.speech.append((audio, done))
        await done.wait()


async def caller_audio(piper: PiperTTS, text: str) -> np.ndarray:
    return resample(await spoken(piper, text), piper.sample_rate, 8_000)


def signed(url: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, form)}


async def until(check: Any, within: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def phone_server(tmp: Path) -> AsyncIterator[tuple[ServerProcess, Any, str]]:
    with (
        tool_server() as (tools, tools_url),
        serve_model(rule_model) as (_model, model_url),
        server_process(tmp, model_url, env={"BACKCHANNEL_TWILIO_AUTH_TOKEN": TOKEN}) as server,
    ):
        tools.secret = server.webhook_secret
        tools.modes["check_order"] = "ack"
        assistant = {
            "model": {
                "model": "rule-model",
                "tools": [
                    order_tool(tools_url),
                    {"type": "endCall"},
                ],
            }
        }
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            auth = {"Authorization": f"Bearer {server.api_key}"}
            created = await http.post("/assistants", json=assistant, headers=auth)
            mapped = await http.post(
                "/phone-numbers",
                json={"number": NUMBER, "assistantId": created.json()["id"]},
                headers=auth,
            )
            assert mapped.status_code == 201, mapped.text
        yield server, tools, f"{server.url}/twilio/voice"


async def incoming_call(server: ServerProcess, voice_url: str) -> tuple[str, dict[str, str]]:
    form = {"CallSid": "CA0001", "From": CALLER, "To": NUMBER, "AccountSid": "AC0"}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(voice_url, data=form, headers=signed(voice_url, form))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    twiml = answer.text
    stream_url = re.search(r'<Stream url="([^"]+)"', twiml)
    assert stream_url, twiml
    params = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]+)"', twiml))
    return stream_url.group(1), params


async def test_a_phone_call_with_an_async_tool_barge_in_and_end_call(
    tmp_path: Path, piper: PiperTTS
) -> None:
    question = await caller_audio(piper, "Where is my order?")
    over = await caller_audio(piper, "Wait, I have one more question about the delivery time.")
    bye = await caller_audio(piper, "Okay, thanks. Goodbye.")
    async with phone_server(tmp_path) as (server, tools, voice_url):
        stream_url, params = await incoming_call(server, voice_url)
        call_id = params["callId"]
        async with connect(stream_url) as ws:
            twilio = FakeTwilio(ws)
            await twilio.start("CA0001", params)
            async with twilio.on_the_line():
                await asyncio.sleep(0.5)
                await twilio.say(question)
                await until(lambda: tools.calls, what="the async tool was called")
                tool_call_id = tools.calls[0]["call"].id
                # Webhooks carry the phone numbers in their call object, as records do.
                webhook_call = tools.calls[0]["payload"]["message"]["call"]
                assert {k: webhook_call[k] for k in ("id", "type", "customer", "phoneNumber")} == {
                    "id": call_id,
                    "type": "phone",
                    "customer": {"number": CALLER},
                    "phoneNumber": {"number": NUMBER},
                }
                assert webhook_call["orgId"] and webhook_call["monitor"]["controlUrl"]
                # The assistant answers ("Let me check your order. ..."); talk over it.
                await until(lambda: len(twilio.heard) > 20, what="assistant audio")
                speaking = asyncio.ensure_future(twilio.say(over))
                await until(lambda: twilio.clears, within=10, what="clear on barge-in")
                await asyncio.sleep(1.0)  # the caller is still talking when the result lands
                async with Client(server.url, api_key=server.api_key) as api:
                    await api.submit_result(call_id, tool_call_id, {"status": "shipped"})
                await speaking
                caller_done = twilio.speech_ended[-1]

                async def record() -> dict[str, Any]:
                    async with Client(server.url, api_key=server.api_key) as api:
                        return await api.get_call(call_id)

                for _ in range(300):
                    call = await record()
                    if call["toolCalls"] and call["toolCalls"][0].get("spokenAt"):
                        break
                    await asyncio.sleep(0.1)
                order = call["toolCalls"][0]
                assert order["state"] == "succeeded"
                assert order["spokenAt"] > caller_done, "announced only after the caller stopped"
                await asyncio.sleep(2.0)
                await twilio.say(bye)
                await asyncio.wait_for(twilio.closed.wait(), timeout=30)  # endCall hangs up
        call = await record()
    assert call["status"] == "ended"
    assert call["endedReason"] == "assistant-ended-call"
    assert (call["customer"], call["phoneNumber"]) == ({"number": CALLER}, {"number": NUMBER})
    spoken_lines = " ".join(m["content"] for m in call["transcript"] if m["role"] == "assistant")
    assert "Update:" in spoken_lines and "shipped" in spoken_lines
    assert twilio.marks, "playback position was tracked with marks"
    assert all(len(f) == 160 for _, f in twilio.heard), "20 ms µ-law frames at 8 kHz"
    loud = max(int(np.abs(mulaw.decode(f).astype(np.int32)).max()) for _, f in twilio.heard)
    assert loud > 1000


async def test_the_voice_webhook_refuses_unsigned_and_wrongly_signed_requests(
    tmp_path: Path,
) -> None:
    async with phone_server(tmp_path) as (_server, _tools, voice_url):
        form = {"CallSid": "CA0002", "From": CALLER, "To": NUMBER}
        async with httpx.AsyncClient(timeout=30) as http:
            unsigned = await http.post(voice_url, data=form)
            forged = await http.post(
                voice_url, data={**form, "To": "+15559999999"}, headers=signed(voice_url, form)
            )
            unknown = {**form, "To": "+15550009999"}
            not_ours = await http.post(voice_url, data=unknown, headers=signed(voice_url, unknown))
    assert unsigned.status_code == 403
    assert unsigned.json()["error"]["code"] == "bad_twilio_signature"
    assert forged.status_code == 403
    assert not_ours.status_code == 200 and "<Hangup" in not_ours.text


async def test_bad_frames_and_a_dropped_stream_end_only_that_call(
    tmp_path: Path, piper: PiperTTS
) -> None:
    question = await caller_audio(piper, "Where is my order?")
    async with phone_server(tmp_path) as (server, tools, voice_url):
        url_a, params_a = await incoming_call(server, voice_url)
        url_b, params_b = await incoming_call(server, voice_url)
        # A stream whose start names a call it may not open is closed at once.
        async with connect(url_a) as intruder:
            await FakeTwilio(intruder).start("CA9", {**params_b, "token": "cc_wrong"})
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(intruder.recv(), timeout=10)
        async with connect(url_a) as ws_a, connect(url_b) as ws_b:
            a, b = FakeTwilio(ws_a, stream_sid="MZa"), FakeTwilio(ws_b, stream_sid="MZb")
            await a.start("CA1", params_a)
            await b.start("CA2", params_b)
            async with b.on_the_line():
                # Call A: garbage of every kind; none of it may stop the server.
                for junk in (
                    "not json",
                    "[1, 2, 3]",
                    json.dumps({"event": "wobble", "streamSid": "MZa"}),
                    json.dumps({"event": "media", "streamSid": "MZa", "media": {"payload": "%%"}}),
                    json.dumps({"event": "media", "streamSid": "MZzz", "media": {"payload": ""}}),
                    json.dumps({"event": "mark", "streamSid": "MZa", "mark": {"name": "nope"}}),
                ):
                    await ws_a.send(junk)
                await ws_a.send(b"\x00\x01binary")
                await asyncio.sleep(0.5)
                # Call A's stream drops mid-call: no stop, the socket just goes.
                ws_a.transport.abort()
                # Call B goes on: its question still becomes a tool call.
                await b.say(question)
                await until(lambda: tools.calls, what="call B's tool call")
                await ws_b.send(json.dumps({"event": "stop", "streamSid": "MZb", "stop": {}}))
            async with Client(server.url, api_key=server.api_key) as api:
                for _ in range(100):
                    call_a = await api.get_call(params_a["callId"])
                    call_b = await api.get_call(params_b["callId"])
                    if call_a["status"] == call_b["status"] == "ended":
                        break
                    await asyncio.sleep(0.1)
    assert call_a["status"] == "ended"
    assert call_a["endedReason"] == "phone-call-provider-closed-websocket"
    assert call_b["endedReason"] == "customer-ended-call"
    assert tools.calls[0]["payload"]["message"]["call"]["id"] == params_b["callId"]
    log = server.log.read_text()
    for expected in ("not JSON", "not an object", "unknown media stream event", "not base64"):
        assert expected in log, expected
    assert "unknown stream 'MZzz'" in log
    assert "Traceback" not in log


async def test_an_outbound_call_dials_through_twilio_and_transfers(
    tmp_path: Path, piper: PiperTTS
) -> None:
    request = await caller_audio(piper, "Please transfer me to a person.")
    async with fake_vendors() as (vendors, vendors_url):
        env = {
            "BACKCHANNEL_TWILIO_AUTH_TOKEN": KEY,
            "BACKCHANNEL_TWILIO_ACCOUNT_SID": "AC123",
            "BACKCHANNEL_TWILIO_API_URL": vendors_url,
        }
        with (
            serve_model(rule_model) as (_model, model_url),
            server_process(tmp_path, model_url, env=env) as server,
        ):
            transfer = {
                "type": "transferCall",
                "destinations": [{"type": "number", "number": "+15550002222"}],
            }
            async with Client(server.url, api_key=server.api_key) as api:
                assistant = await api.create_assistant(
                    {
                        "firstMessage": "Hello.",
                        "model": {"model": "rule-model", "tools": [transfer]},
                    }
                )
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                auth = {"Authorization": f"Bearer {server.api_key}"}
                ours = await http.post(
                    "/phone-numbers",
                    json={"number": NUMBER, "assistantId": assistant["id"]},
                    headers=auth,
                )
                placed = await http.post(
                    "/calls",
                    json={
                        "type": "phone",
                        "assistantId": assistant["id"],
                        "customer": {"number": CALLER},
                        "phoneNumberId": ours.json()["id"],
                    },
                    headers=auth,
                )
                assert placed.status_code == 201, placed.text
                call = placed.json()
                assert call["customer"] == {"number": CALLER}
                assert call["phoneNumber"] == {"number": NUMBER}
                [dial] = vendors.twilio_requests
                assert dial["path"] == "/2010-04-01/Accounts/AC123/Calls.json"
                assert (dial["form"]["To"], dial["form"]["From"]) == (CALLER, NUMBER)
                twiml = dial["form"]["Twiml"]
                stream_url = re.search(r'<Stream url="([^"]+)"', twiml)
                assert stream_url, twiml
                params = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]+)"', twiml))
                assert params["callId"] == call["id"]
                # The customer answers: Twilio opens the stream.
                async with connect(stream_url.group(1)) as ws:
                    twilio = FakeTwilio(ws)
                    await twilio.start("CA00000000000000000000000000000000", params)
                    async with twilio.on_the_line():
                        # The greeting played through (no frame for 0.4 s): the server's
                        # audio pipeline is up, and the caller does not talk over it.
                        await until(
                            lambda: twilio.heard and time.time() - twilio.heard[-1][0] > 0.4,
                            what="the greeting",
                        )
                        await twilio.say(request)
                        try:
                            await asyncio.wait_for(twilio.closed.wait(), timeout=30)
                        except TimeoutError:
                            now = (await http.get(f"/calls/{call['id']}", headers=auth)).json()
                            log = server.log.read_text()[-4000:]
                            raise AssertionError(f"the call did not end: {now}\n{log}") from None
                ended = (await http.get(f"/calls/{call['id']}", headers=auth)).json()
    assert ended["endedReason"] == "assistant-forwarded-call"
    redirect = vendors.twilio_requests[-1]
    assert redirect["path"].endswith("/Calls/CA00000000000000000000000000000000.json")
    assert "<Dial>+15550002222</Dial>" in redirect["form"]["Twiml"]
