"""Local servers that speak vendor protocols, for the vendor providers' tests.

``deepgram``: Deepgram's live transcription WebSocket (``/v1/listen``): token auth at the
handshake, binary PCM in, ``Results`` out (interim and final), ``Finalize`` answered with
a ``from_finalize`` result, ``CloseStream`` answered with ``Metadata``. It "transcribes"
by handing out the words of a given text, one final result per 250 ms of audio received.

``twilio``: the two REST calls backchannel makes (``POST …/Calls.json`` to dial out,
``POST …/Calls/{sid}.json`` to redirect a live call), with HTTP Basic auth.

``elevenlabs``: ElevenLabs' streaming text-to-speech endpoint
(``POST /v1/text-to-speech/{voice_id}/stream``): ``xi-api-key`` auth, JSON body, raw
PCM16 at the asked ``output_format`` streamed back in chunks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .peers import free_port

KEY = "test-key"


@dataclass
class FakeVendors:
    words: list[str] = field(default_factory=list)
    #: Deepgram: seconds to wait before answering Finalize (to test our timeout).
    finalize_delay: float = 0.0
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    audio_bytes: list[int] = field(default_factory=list)
    control: list[str] = field(default_factory=list)
    speech_requests: list[dict[str, Any]] = field(default_factory=list)
    twilio_requests: list[dict[str, Any]] = field(default_factory=list)

    async def twilio_calls(self, request: Request) -> Response:
        account = request.path_params["account"]
        expected = "Basic " + base64.b64encode(f"{account}:{KEY}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
        form = {k: str(v) for k, v in (await request.form()).items()}
        sid = request.path_params.get("sid") or f"CA{len(self.twilio_requests):032d}"
        self.twilio_requests.append({"path": request.url.path, "form": form})
        return JSONResponse(
            {"sid": sid, "account_sid": account, "status": "queued", "to": form.get("To")},
            status_code=201 if "sid" not in request.path_params else 200,
        )

    async def listen(self, ws: WebSocket) -> None:
        if ws.headers.get("authorization") != f"Token {KEY}":
            await ws.close(code=1008)  # refused before accepting: an HTTP 403 handshake
            return
        self.queries.append(parse_qs(urlsplit(str(ws.url)).query))
        await ws.accept()
        received, words = 0, list(self.words)
        step = 16_000 * 2 // 4  # 250 ms of 16 kHz PCM16
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                before, received = received, received + len(message["bytes"])
                for _ in range(received // step - before // step):
                    await ws.send_text(json.dumps(_result("uh", final=False)))  # interim
                    if words:
                        await ws.send_text(json.dumps(_result(words.pop(0), final=True)))
                continue
            kind = json.loads(message["text"])["type"]
            self.control.append(kind)
            if kind == "Finalize":
                await asyncio.sleep(self.finalize_delay)
                rest = " ".join(words)
                words = []
                await ws.send_text(json.dumps(_result(rest, final=True, flushed=True)))
            elif kind == "CloseStream":
                self.audio_bytes.append(received)
                with contextlib.suppress(WebSocketDisconnect):  # the client need not wait
                    await ws.send_text(json.dumps({"type": "Metadata", "request_id": "r"}))
                    await ws.close()
                break

    async def speak(self, request: Request) -> Response:
        if request.headers.get("xi-api-key") != KEY:
            return JSONResponse({"detail": {"status": "invalid_api_key"}}, status_code=401)
        body = await request.json()
        self.speech_requests.append(
            {
                "voice_id": request.path_params["voice_id"],
                "query": dict(request.query_params),
                "body": body,
            }
        )
        rate = int(request.query_params.get("output_format", "pcm_16000").split("_")[1])
        # 200 ms of tone per word, in 100 ms chunks, as a live stream would send it.
        n = int(len(body["text"].split()) * 0.2 * rate)
        tone = (np.sin(2 * np.pi * 300 * np.arange(n) / rate) * 8000).astype("<i2").tobytes()

        async def stream() -> AsyncIterator[bytes]:
            chunk = rate // 10 * 2
            for i in range(0, len(tone), chunk):
                yield tone[i : i + chunk]
                await asyncio.sleep(0.01)

        return StreamingResponse(stream(), media_type="audio/pcm")


def _result(text: str, *, final: bool, flushed: bool = False) -> dict[str, Any]:
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": 0.25,
        "start": 0.0,
        "is_final": final,
        "speech_final": flushed,
        "from_finalize": flushed,
        "channel": {
            "alternatives": [
                {"transcript": text, "confidence": 0.98, "words": []},
            ]
        },
        "metadata": {
            "request_id": str(uuid.uuid4()),
            "model_uuid": str(uuid.uuid4()),
            "model_info": {"name": "general", "version": "test", "arch": "nova-3"},
        },
    }


@asynccontextmanager
async def fake_vendors() -> AsyncIterator[tuple[FakeVendors, str]]:
    """The fake vendor APIs on one loopback port; yields (state, base URL)."""
    vendors = FakeVendors()
    app = Starlette(
        routes=[
            WebSocketRoute("/v1/listen", vendors.listen),
            Route("/v1/text-to-speech/{voice_id}/stream", vendors.speak, methods=["POST"]),
            Route(
                "/2010-04-01/Accounts/{account}/Calls.json", vendors.twilio_calls, methods=["POST"]
            ),
            Route(
                "/2010-04-01/Accounts/{account}/Calls/{sid}.json",
                vendors.twilio_calls,
                methods=["POST"],
            ),
        ]
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.01)
    try:
        yield vendors, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
