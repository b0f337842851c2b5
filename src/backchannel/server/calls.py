"""Calls as the server hosts them: creation, tokens, running, and their public record.

A call is created by the API and runs while its client is connected to its WebSocket;
the session owns the call (and so the call's task group), and the instance running it
is recorded as its owner. Each call has two bearer
tokens: ``token`` opens every route of that call (for backends), ``clientToken`` opens
only its WebSocket (for the browser or phone app), so everything the client resolves is
known to come from the client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..call import Call
from ..clock import iso_time
from ..config import AssistantConfig
from ..engine import Engine
from ..errors import Conflict, InvalidInput, NotFound
from ..events import Event, EventSink, FanOut
from ..ledger.retry import is_store_error, persistently, store_unavailable
from ..ledger.sql import SqlStore
from ..lifecycle import CallState
from ..speech import PacedSpeech, SpeechOutput
from ..tools.spec import Route as ToolRoute
from ..tools.spec import resolve_tools
from .call_assistant import call_assistant
from .db import assistants, phone_calls, server_calls
from .episode import Episode
from .instances import Instances
from .outbox import DEFAULT_SERVER_MESSAGES, Outbox, Route
from .providers import LOCAL_LLM, Providers, speech_to_speech
from .settings import Settings
from .urls import check_webhook_url
from .wire import CallOut, CreateCall, Customer, Monitor, assistant_document

log = logging.getLogger("backchannel.calls")

#: Vapi's names for call types, where it has one.
VAPI_CALL_TYPES = {"web": "webCall"}

#: The live transcript is stored at most this often.
TRANSCRIPT_INTERVAL_SECONDS = 0.5


def tool_server_token(key: bytes, call_id: str) -> str:
    """The token a call's tool server gets in its ``tool-calls`` webhooks: derived from
    the server's secret and the call id, so it needs no storage and opens one call."""
    mac = hmac.new(key, f"tool-server-token:{call_id}".encode(), hashlib.sha256).digest()
    return "rt_" + base64.urlsafe_b64encode(mac[:24]).decode()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class HostedCall:
    id: str
    type: str
    assistant_id: str | None
    assistant: AssistantConfig
    token_hash: str
    client_token_hash: str
    created_at: float
    transcript: list[dict[str, Any]] | None = None
    messages: list[dict[str, Any]] | None = None
    turns: list[dict[str, Any]] | None = None

    def accepts(self, token: str | None, *, client: bool = False) -> bool:
        """Whether ``token`` opens this call (the client token only where ``client``)."""
        if not token:
            return False
        digest = _hash(token)
        if hmac.compare_digest(digest, self.token_hash):
            return True
        return client and hmac.compare_digest(digest, self.client_token_hash)


class CallHost:
    def __init__(
        self,
        engine: Engine,
        db: SqlStore,
        outbox: Outbox,
        settings: Settings,
        providers: Providers,
        instances: Instances,
        token_key: bytes | None = None,
        org_id: str = "",
    ):
        """``token_key`` derives the per-call tokens handed to tool servers; ``org_id``
        is the ``orgId`` of every call object."""
        self.engine = engine
        self.token_key = token_key
        self.org_id = org_id
        self.db = db
        self.outbox = outbox
        self.settings = settings
        self.providers = providers
        self.instances = instances
        self._running: dict[str, Call] = {}
        #: The client links of calls running here, for a client that reconnects.
        self.clients: dict[str, Any] = {}
        self._tokens: dict[str, tuple[str, str]] = {}

    async def create(
        self, body: CreateCall, *, kind: str | None = None
    ) -> tuple[HostedCall, str, str]:
        """A new call, its token and its client token. The assistant is checked first.
        ``kind`` overrides the body's type for calls the server creates itself (phone)."""
        assistant_id = body.assistant_id
        if assistant_id is not None:
            assistant = await self.load_assistant(assistant_id)
        else:
            assert body.assistant is not None
            assistant = body.assistant
        assistant = await call_assistant(self.db, assistant, body.assistant_overrides)
        await self.check_assistant(assistant)
        call_type = kind or body.type
        if (kind := speech_to_speech(assistant.model)) is not None and call_type == "text":
            raise InvalidInput(
                f"a speech-to-speech model ({kind}) takes voice calls: web or phone",
                code="voice_call_required",
            )
        token, client_token = f"ct_{secrets.token_urlsafe(24)}", f"cc_{secrets.token_urlsafe(24)}"
        hosted = HostedCall(
            id=str(uuid.uuid4()),
            type=call_type,
            assistant_id=assistant_id,
            assistant=assistant,
            token_hash=_hash(token),
            client_token_hash=_hash(client_token),
            created_at=time.time(),
        )
        async with self.db.transaction() as conn:
            await conn.execute(
                server_calls.insert().values(
                    id=hosted.id,
                    type=hosted.type,
                    assistant_id=assistant_id,
                    assistant=assistant.to_json(),
                    token_hash=hosted.token_hash,
                    client_token_hash=hosted.client_token_hash,
                    created_at=hosted.created_at,
                )
            )
        self.outbox.route(hosted.id, event_route(assistant))
        return hosted, token, client_token

    async def check_assistant(self, assistant: AssistantConfig) -> None:
        """Refuse an assistant whose tools do not resolve or whose webhooks may not be sent."""
        if assistant.model.provider in LOCAL_LLM:
            self.providers.llm(assistant.model)  # the model must be installed
        specs = resolve_tools(assistant, self.engine.tools.specs())
        urls = {s.server.url for s in specs.values() if s.route is ToolRoute.SERVER and s.server}
        if assistant.server and assistant.server.url:
            urls.add(assistant.server.url)
        if assistant.model.url and assistant.model.provider not in LOCAL_LLM:
            # One URL policy for everything the server calls (a Realtime server's
            # WebSocket URL as the HTTP URL it upgrades from).
            urls.add(re.sub(r"^ws(s?)://", r"http\1://", assistant.model.url))
        for url in sorted(urls):
            await check_webhook_url(url, allow_private=self.settings.allow_private_webhooks)

    async def store_assistant(self, config: AssistantConfig) -> tuple[str, float, dict[str, Any]]:
        """Check and store a new assistant: its id, creation time and stored document."""
        await self.check_assistant(config)
        document = assistant_document(config)
        assistant_id, created_at = await insert_document(self.db, assistants, document)
        return assistant_id, created_at, document

    async def assistant_row(self, assistant_id: str) -> dict[str, Any]:
        """A stored assistant's row (id, config, times); ``unknown_assistant`` if none."""
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(assistants.select().where(assistants.c.id == assistant_id))
            ).first()
        if row is None:
            raise NotFound(f"no assistant {assistant_id!r}", code="unknown_assistant")
        return dict(row._mapping)

    async def load_assistant(self, assistant_id: str) -> AssistantConfig:
        return AssistantConfig.from_json((await self.assistant_row(assistant_id))["config"])

    async def get(self, call_id: str) -> HostedCall:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(server_calls.select().where(server_calls.c.id == call_id))
            ).first()
        if row is None:
            raise NotFound(f"no call {call_id!r}", code="unknown_call")
        m = row._mapping
        return HostedCall(
            id=m["id"],
            type=m["type"],
            assistant_id=m["assistant_id"],
            assistant=AssistantConfig.from_json(m["assistant"]),
            token_hash=m["token_hash"],
            client_token_hash=m["client_token_hash"],
            created_at=m["created_at"],
            transcript=m["transcript"],
            messages=m["messages"],
            turns=m["turns"],
        )

    async def authorize(self, call_id: str, token: str, *, client: bool = False) -> bool:
        """Whether ``token`` opens this call. Token hashes never change, so they are read
        once per call and kept; no assistant is parsed to answer."""
        hashes = self._tokens.get(call_id)
        if hashes is None:
            stmt = sa.select(server_calls.c.token_hash, server_calls.c.client_token_hash).where(
                server_calls.c.id == call_id
            )
            async with self.db.engine.connect() as conn:
                row = (await conn.execute(stmt)).first()
            if row is None:
                return False
            hashes = self._tokens[call_id] = (row[0], row[1])
        digest = _hash(token)
        if hmac.compare_digest(digest, hashes[0]):
            return True
        if client:
            return hmac.compare_digest(digest, hashes[1])
        return self.token_key is not None and hmac.compare_digest(
            token, tool_server_token(self.token_key, call_id)
        )

    def vapi_call(self, hosted: HostedCall) -> dict[str, Any]:
        """Vapi's ``call`` object for this call's events and webhooks (status and
        ``updatedAt`` are added per event)."""
        created = iso_time(hosted.created_at)
        call: dict[str, Any] = {
            "id": hosted.id,
            "orgId": self.org_id,
            "type": VAPI_CALL_TYPES.get(hosted.type, hosted.type),
            "createdAt": created,
            "updatedAt": created,
            "monitor": {"controlUrl": f"{self.settings.base_url}/calls/{hosted.id}/control"},
        }
        if hosted.assistant_id is not None:
            call["assistantId"] = hosted.assistant_id
        return call

    async def vapi_call_by_id(self, call_id: str) -> dict[str, Any] | None:
        try:
            return self.vapi_call(await self.get(call_id))
        except NotFound:
            return None

    def tool_server_call(self, call_id: str) -> dict[str, Any]:
        """What the ``tool-calls`` webhook adds to its ``call`` object so a tool server
        can answer later with nothing else: the control URL, carrying a token that opens
        this call's routes (results and control) and no other call's."""
        control = f"{self.settings.base_url}/calls/{call_id}/control"
        if self.token_key is not None:
            control += f"?token={tool_server_token(self.token_key, call_id)}"
        return {"monitor": {"controlUrl": control}}

    async def ids(self, limit: int) -> list[str]:
        stmt = sa.select(server_calls.c.id).order_by(server_calls.c.created_at.desc()).limit(limit)
        async with self.db.engine.connect() as conn:
            return [r[0] for r in (await conn.execute(stmt)).all()]

    @asynccontextmanager
    async def run(
        self,
        hosted: HostedCall,
        client: EventSink,
        output: SpeechOutput | None = None,
        details: dict[str, Any] | None = None,
    ) -> AsyncIterator[Call]:
        """Run the call while the block runs; keep its transcript once it has ended."""
        if hosted.id in self.engine.live or await self._has_run(hosted.id):
            raise Conflict(
                f"call {hosted.id!r} has already been connected", code="call_already_connected"
            )
        self.outbox.route(hosted.id, event_route(hosted.assistant))
        try:
            await self.instances.own(hosted.id)
        except Exception as exc:
            if is_store_error(exc):
                raise store_unavailable(exc) from exc
            raise
        said = TranscriptChanged()
        call = self.engine.call(
            hosted.assistant,
            call_id=hosted.id,
            output=output or PacedSpeech(self.engine.clock),
            # The outbox first: the client's sink asks it whether an event must be stored
            # before the client may see it.
            events=FanOut(self.outbox, client, said),
        )
        call.details = {**self.vapi_call(hosted), **(details or {})}
        # Readable until its transcript is stored, so a read right after the end sees it.
        self._running[hosted.id] = call
        try:
            async with call:
                call.spawn(self._keep_transcript(call, said))
                yield call
            try:
                await persistently(
                    lambda: self._store_transcript(call),
                    f"call {call.call_id}: store its transcript",
                    clock=self.engine.clock,
                    limit=30.0,
                )
            except Exception:
                log.exception("call %s: its final transcript could not be stored", call.call_id)
        finally:
            self._running.pop(hosted.id, None)

    async def _keep_transcript(self, call: Call, said: TranscriptChanged) -> None:
        """Store the live transcript as it grows (at most twice a second), so a crash
        keeps what was said and a read on another instance sees it while the call runs
        here. A failed write is tried again at the next change."""
        outage = Episode(log, f"call {call.call_id}: storing the live transcript")
        while True:
            await said.changed.wait()
            said.changed.clear()
            try:
                await self._store_transcript(call)
            except Exception as exc:
                if not is_store_error(exc):
                    raise
                outage.failed(exc)
                said.changed.set()
            else:
                outage.succeeded()
            await self.engine.clock.sleep(TRANSCRIPT_INTERVAL_SECONDS)

    async def _store_transcript(self, call: Call) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                server_calls.update()
                .where(server_calls.c.id == call.call_id)
                .values(
                    transcript=call.conversation.transcript(),
                    messages=call.conversation.to_openai(),
                    turns=[t.to_event() for t in call.latencies],
                )
            )

    async def _has_run(self, call_id: str) -> bool:
        return await self.engine.ledger.store.get_call(call_id) is not None

    async def phone_numbers(self, hosted: HostedCall) -> tuple[Customer | None, Customer | None]:
        """A phone call's customer number and ours; ``None`` for other calls."""
        if hosted.type != "phone":
            return None, None
        async with self.db.engine.connect() as conn:
            side = (
                await conn.execute(phone_calls.select().where(phone_calls.c.call_id == hosted.id))
            ).first()
        if side is None:
            return None, None
        customer = Customer(number=side.customer_number) if side.customer_number else None
        return customer, Customer(number=side.our_number) if side.our_number else None

    async def describe(self, hosted: HostedCall, *, token: str | None = None) -> CallOut:
        """The call's public record: status, transcript, every tool call with its states."""
        live = self._running.get(hosted.id)
        if live is None:
            # Re-read: the transcript is stored before the call leaves ``_running``.
            hosted = await self.get(hosted.id)
        record = await self.engine.ledger.store.get_call(hosted.id)
        status = "queued"
        ended_at = ended_reason = None
        if record is not None:
            status = record.state.value
            ended_at, ended_reason = record.ended_at, record.ended_reason
        if live is not None:
            transcript, messages = live.conversation.transcript(), live.conversation.to_openai()
            turns = [t.to_event() for t in live.latencies]
            status = CallState.IN_PROGRESS.value if not live.ended.is_set() else status
        else:
            transcript, messages = hosted.transcript or [], hosted.messages or []
            turns = hosted.turns or []
        tool_calls = await self.engine.ledger.list_for_call(hosted.id)
        customer, number = await self.phone_numbers(hosted)
        base = self.settings.base_url
        ws_base = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return CallOut(
            id=hosted.id,
            type=hosted.type,
            status=status,
            assistant_id=hosted.assistant_id,
            created_at=hosted.created_at,
            ended_at=ended_at,
            ended_reason=ended_reason,
            monitor=Monitor(control_url=f"{base}/calls/{hosted.id}/control"),
            client_url=f"{ws_base}/calls/{hosted.id}/ws",
            token=token,
            transcript=transcript,
            messages=messages,
            tool_calls=[r.to_dict() for r in tool_calls],
            turns=turns,
            customer=customer,
            phone_number=number,
        )


class TranscriptChanged:
    """An event sink that notes when the call's transcript grew."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def emit(self, event: Event) -> None:
        if event.type in ("transcript", "turn-latency"):
            self.changed.set()


def event_route(assistant: AssistantConfig) -> Route | None:
    server = assistant.server
    if server is None or not server.url:
        return None
    headers = dict(server.headers)
    if server.secret:
        headers.setdefault("X-Vapi-Secret", server.secret)
    types = (
        frozenset(assistant.server_messages)
        if assistant.server_messages is not None
        else DEFAULT_SERVER_MESSAGES
    )
    # ``tool-calls`` goes to one URL only, as Vapi routes it: the tool webhook (the
    # tool's server URL, else this one). Sending it here as well would run tools twice.
    return Route(server.url, headers, types - {"tool-calls"})


async def insert_document(
    db: SqlStore, table: sa.Table, document: dict[str, Any]
) -> tuple[str, float]:
    """Store a new JSON resource (an assistant, a tool); its new id and creation time."""
    now = time.time()
    row_id = str(uuid.uuid4())
    async with db.transaction() as conn:
        await conn.execute(
            table.insert().values(id=row_id, config=document, created_at=now, updated_at=now)
        )
    return row_id, now
