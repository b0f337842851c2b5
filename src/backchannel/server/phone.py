"""Phone calls through Twilio: numbers mapped to assistants, the voice webhook that
answers with TwiML, and the Media Streams socket that carries the call.

``POST /twilio/voice`` is what a Twilio number's "A call comes in" webhook points at.
The request must carry a valid ``X-Twilio-Signature`` (checked with the ``twilio`` SDK's
validator against the public URL and the form fields); anything else is refused. The
answer connects a bidirectional Media Stream to ``/twilio/stream``, with the new call's
id and client token as stream parameters, so the socket is tied to exactly one call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request, Response, WebSocket
from pydantic import Field
from starlette.websockets import WebSocketDisconnect

from ..call import Call
from ..config import WireModel
from ..errors import BackchannelError, Conflict, Forbidden, NotFound
from ..phone.media_stream import RATE, MediaStream, NoEvents, close, read_start
from ..voice.output import AudioOutput
from ..voice.session import CallInput
from .calls import CallHost, HostedCall
from .db import phone_calls, phone_numbers
from .wire import CreateCall

log = logging.getLogger("backchannel.phone")

Id = Annotated[str, Path(min_length=1, max_length=64)]
ENDED = {
    "stream-stopped": "customer-ended-call",
    "stream-dropped": "phone-call-provider-closed-websocket",
}


class PhoneNumberIn(WireModel):
    number: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164, e.g. +15551234567")
    assistant_id: str = Field(max_length=64)


class PhoneNumberOut(PhoneNumberIn):
    id: str
    created_at: float


def _host(request: Request) -> CallHost:
    host: CallHost = request.app.state.host
    return host


def phone_routes(management: list[Any]) -> APIRouter:
    router = APIRouter()

    @router.post("/phone-numbers", status_code=201, dependencies=management, tags=["phone"])
    async def add_number(request: Request, body: PhoneNumberIn) -> PhoneNumberOut:
        host = _host(request)
        await host.assistant_row(body.assistant_id)  # unknown_assistant if none
        row = {
            "id": str(uuid.uuid4()),
            "created_at": time.time(),
            "number": body.number,
            "assistant_id": body.assistant_id,
        }
        try:
            async with host.db.transaction() as conn:
                await conn.execute(phone_numbers.insert().values(**row))
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"{body.number} is already mapped", code="duplicate_number") from exc
        return PhoneNumberOut(**row)

    @router.get("/phone-numbers", dependencies=management, tags=["phone"])
    async def list_numbers(request: Request) -> list[PhoneNumberOut]:
        async with _host(request).db.engine.connect() as conn:
            rows = (await conn.execute(phone_numbers.select())).all()
        return [PhoneNumberOut(**r._mapping) for r in rows]

    @router.delete(
        "/phone-numbers/{number_id}", status_code=204, dependencies=management, tags=["phone"]
    )
    async def remove_number(request: Request, number_id: Id) -> Response:
        async with _host(request).db.transaction() as conn:
            gone = await conn.execute(phone_numbers.delete().where(phone_numbers.c.id == number_id))
        if gone.rowcount == 0:
            raise NotFound(f"no phone number {number_id!r}", code="unknown_phone_number")
        return Response(status_code=204)

    @router.post("/twilio/voice", tags=["phone"], response_class=Response)
    async def twilio_voice(request: Request) -> Response:
        host = _host(request)
        form = {k: str(v) for k, v in (await request.form()).items()}
        _check_signature(host, request, form)
        number = form.get("To", "")
        async with host.db.engine.connect() as conn:
            row = (
                await conn.execute(phone_numbers.select().where(phone_numbers.c.number == number))
            ).first()
        if row is None:
            log.error("a call to %s, which no assistant answers", number)
            return _twiml(_say_and_hang_up("This number is not in service."))
        hosted, _token, client_token = await host.create(
            CreateCall(assistant_id=row.assistant_id), kind="phone"
        )
        async with host.db.transaction() as conn:
            await conn.execute(
                phone_calls.insert().values(
                    call_id=hosted.id,
                    call_sid=form.get("CallSid", ""),
                    customer_number=form.get("From"),
                    our_number=number,
                )
            )
        return _twiml(_connect(host, hosted.id, client_token))

    @router.websocket("/twilio/stream")
    async def twilio_stream(ws: WebSocket) -> None:
        await media_stream_session(ws, ws.app.state.host)

    return router


async def place_call(host: CallHost, body: CreateCall) -> tuple[HostedCall, str, str]:
    """An outbound phone call: dial the customer through Twilio from one of our numbers;
    when they answer, Twilio opens the media stream the TwiML names."""
    assert body.customer is not None and body.phone_number_id is not None
    rest = host.providers.twilio()
    async with host.db.engine.connect() as conn:
        ours = (
            await conn.execute(
                phone_numbers.select().where(phone_numbers.c.id == body.phone_number_id)
            )
        ).first()
    if ours is None:
        raise NotFound(f"no phone number {body.phone_number_id!r}", code="unknown_phone_number")
    hosted, token, client_token = await host.create(body, kind="phone")
    call_sid = await rest.place_call(
        body.customer.number, ours.number, _connect(host, hosted.id, client_token)
    )
    async with host.db.transaction() as conn:
        await conn.execute(
            phone_calls.insert().values(
                call_id=hosted.id,
                call_sid=call_sid,
                customer_number=body.customer.number,
                our_number=ours.number,
            )
        )
    return hosted, token, client_token


async def _details(host: CallHost, hosted: HostedCall) -> dict[str, Any]:
    """The ``call`` object's phone fields, as the call record has them."""
    customer, ours = await host.phone_numbers(hosted)
    details: dict[str, Any] = {"type": "phone"}
    if customer is not None:
        details["customer"] = {"number": customer.number}
    if ours is not None:
        details["phoneNumber"] = {"number": ours.number}
    return details


async def _transfer(host: CallHost, stream: MediaStream, number: str) -> None:
    """Move the caller to ``number``: the call's TwiML becomes a ``<Dial>``."""
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.dial(number)
    try:
        await host.providers.twilio().redirect(stream.start.call_sid, str(response))
    except BackchannelError as exc:
        log.error("%s: transfer to %s failed: %s", stream, number, exc)


def _check_signature(host: CallHost, request: Request, form: dict[str, str]) -> None:
    from twilio.request_validator import RequestValidator

    token = host.settings.twilio_auth_token
    if not token:
        raise Forbidden("Twilio is not configured (no auth token)", code="twilio_not_configured")
    url = host.settings.base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not RequestValidator(token).validate(url, form, signature):
        raise Forbidden("missing or wrong X-Twilio-Signature", code="bad_twilio_signature")


def _connect(host: CallHost, call_id: str, client_token: str) -> str:
    from twilio.twiml.voice_response import Connect, VoiceResponse

    ws_base = host.settings.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    response, connect = VoiceResponse(), Connect()
    stream = connect.stream(url=f"{ws_base}/twilio/stream")
    stream.parameter(name="callId", value=call_id)
    stream.parameter(name="token", value=client_token)
    response.append(connect)
    return str(response)


def _say_and_hang_up(text: str) -> str:
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)


def _twiml(xml: str) -> Response:
    return Response(content=xml, media_type="application/xml")


async def media_stream_session(ws: WebSocket, host: CallHost) -> None:
    """Run one phone call for the life of its media stream."""
    await ws.accept()
    try:
        start = await read_start(ws)
    except (TimeoutError, WebSocketDisconnect):
        start = None
    if start is None:
        await close(ws)
        return
    call_id, token = start.parameters.get("callId", ""), start.parameters.get("token", "")
    if not call_id or not token or not await host.authorize(call_id, token, client=True):
        log.error("media stream %s names no call it may open; closing", start.stream_sid)
        await close(ws)
        return
    stream = MediaStream(ws, start)
    try:
        hosted = await host.get(call_id)
        async with host.db.transaction() as conn:
            await conn.execute(
                phone_calls.update()
                .where(phone_calls.c.call_id == call_id)
                .values(stream_sid=start.stream_sid)
            )
        output, session = await host.providers.audio(
            hosted.assistant, stream.send_frame, stream.clear, rate=RATE
        )
        await _run(host, hosted, stream, output, session)
    except BackchannelError as exc:
        log.error("phone call %s could not run: %s", call_id, exc)
    await close(ws)


async def _run(
    host: CallHost,
    hosted: HostedCall,
    stream: MediaStream,
    output: AudioOutput,
    session: Callable[[Call], CallInput],
) -> None:
    async with asyncio.TaskGroup() as group:
        sender = group.create_task(stream.send_out())
        try:
            async with host.run(hosted, NoEvents(), output, await _details(host, hosted)) as call:
                call.can_transfer = True
                why = await stream.receive(session(call), call.ended)
                if why in ENDED:
                    log.info("%s: %s", stream, why)
                    await call.hang_up(ENDED[why])
                elif call.transfer_to is not None:
                    await _transfer(host, stream, call.transfer_to)
        finally:
            stream.close_out()
            await sender
