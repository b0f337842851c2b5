"""The backchannel HTTP server (FastAPI): REST API, control URL, client WebSocket.

Every 4xx answer is ``{"error": {"code", "message"}}`` with a stable code. Management
routes need the API key; a call's routes take its token (or the API key).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import AssistantConfig, ModelConfig
from ..engine import Engine
from ..errors import BackchannelError, CallEnded, ConfigError, InvalidInput, Unauthorized
from ..ledger.ledger import Ledger
from ..ledger.sql import SqlStore
from ..lifecycle import CallState
from ..llm.base import LLM
from ..results import ResultSource
from ..telemetry import tracing
from ..telemetry.metrics import OUTBOX_BACKLOG, exposition
from ..tools.registry import ToolRegistry
from ..voice.stack import VoiceStack
from . import schema
from .auth import is_api_key, presented, require_api_key
from .calls import CallHost, event_route
from .cluster import Cluster
from .dashboard import dashboard_routes
from .db import assistants
from .errors import ErrorEnvelope, envelope, request_id
from .instances import Instances
from .outbox import Outbox
from .pages import page_routes
from .phone import phone_routes, place_call
from .providers import Providers
from .readiness import readiness
from .recovery import end_abandoned, report_unreported
from .router import RedisRouter
from .settings import Secrets, Settings, load_secrets
from .socket import client_session
from .supervisor import Supervisor
from .vapi_api import vapi_routes
from .webhooks import WebhookSender, WebhookToolServer
from .wire import (
    ERROR_RESPONSES,
    Accepted,
    AssistantOut,
    CallOut,
    ControlMessage,
    CreateCall,
    ResolutionOut,
    ResultBody,
    assistant_document,
    without_owned,
)

log = logging.getLogger("backchannel.server")

Id = Annotated[str, Path(min_length=1, max_length=256)]
#: At start-up, calls ended this recently without an end-of-call report get one.
UNREPORTED_WINDOW_SECONDS = 3600.0


def org_id(api_key: str) -> str:
    """A stable ``orgId`` for this deployment, derived from its API key (which it does
    not reveal)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(api_key.encode()).hexdigest()))


def _flat(checks: dict[str, Any]) -> list[str]:
    return [w for v in checks.values() for w in (v.values() if isinstance(v, dict) else [v])]


def create_app(
    settings: Settings | None = None,
    *,
    llm_factory: Callable[[ModelConfig], LLM] | None = None,
    tools: ToolRegistry | None = None,
    voice: VoiceStack | None = None,
    speak_chunks: bool = False,
) -> FastAPI:
    """The app. ``llm_factory``, ``tools`` and ``voice`` replace the configured providers
    (used by benchmarks and embedding applications)."""
    settings = settings or Settings()
    secrets = load_secrets(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            tracing.configure()
        except ConfigError as exc:  # a shared OTEL_* setting this install cannot serve
            log.error("tracing stays off: %s", exc.message)
        store = SqlStore(
            settings.database_url, create=False, busy_timeout=settings.sqlite_busy_timeout_seconds
        )
        await schema.ensure(store.engine, migrate=settings.migrates)
        sender = WebhookSender(
            secrets.webhook_secret, allow_private=settings.allow_private_webhooks
        )
        host_ref: list[CallHost] = []

        async def load_route(call_id: str) -> Any:
            return event_route((await host_ref[0].get(call_id)).assistant)

        instance_id = settings.instance_id or uuid.uuid4().hex

        async def load_call(call_id: str) -> dict[str, Any] | None:
            return await host_ref[0].vapi_call_by_id(call_id)

        outbox = Outbox(
            store,
            sender,
            instance_id=instance_id,
            call_loader=load_call,
            max_age=settings.outbox_max_age_seconds,
            max_backoff=settings.outbox_max_backoff_seconds,
            per_receiver=settings.outbox_per_receiver,
            route_loader=load_route,
        )
        providers = Providers(settings)
        if voice is not None:
            providers.voice.preload(voice)
        engine = Engine(
            Ledger(store),
            llm_factory=llm_factory or providers.llm,
            tools=tools,
            tool_server=WebhookToolServer(
                sender,
                reply_limit=settings.tool_reply_limit_seconds,
                call_context=lambda call_id: host_ref[0].tool_server_call(call_id),
            ),
            after_call_events=outbox,
            speak_chunks=speak_chunks,
        )
        router = await _router(settings)
        instances = Instances(
            store,
            instance_id,
            settings.base_url,
            interval=settings.heartbeat_seconds,
            timeout=settings.heartbeat_timeout_seconds,
        )
        cluster = Cluster(
            engine,
            instances,
            router,
            outbox,
            answer_timeout=settings.routed_answer_timeout_seconds,
            outbox=outbox,
        )
        engine.elsewhere = cluster
        host = CallHost(
            engine,
            store,
            outbox,
            settings,
            providers,
            instances,
            token_key=secrets.webhook_secret.encode(),
            org_id=org_id(secrets.api_key),
        )
        host_ref.append(host)
        await engine.open()
        await instances.register(alone=not settings.clustered)
        # Webhooks a previous run was sending when it died go out again now, not when
        # their lease runs out (alone on the database: every instance's).
        await outbox.release_claims(None if not settings.clustered else instances.id)
        if settings.ends_orphans:
            orphans = await engine.ledger.store.calls_in_state(CallState.IN_PROGRESS)
            await end_abandoned(
                engine, store, outbox, [c.call_id for c in orphans], "server-restarted"
            )
        # Calls this instance id owned died with its previous run.
        await cluster.end_calls_of(instances.id, "server-restarted")
        await cluster.reap_now()
        await report_unreported(
            engine, store, outbox, since=engine.clock.wall() - UNREPORTED_WINDOW_SECONDS
        )
        supervisor = Supervisor()
        app.state.host = host
        app.state.cluster = cluster
        app.state.outbox = outbox
        app.state.secrets = secrets
        app.state.supervisor = supervisor
        app.state.router = router
        log.info("instance %s serving on %s", instances.id, settings.base_url)
        async with supervisor.running():
            supervisor.start("outbox-writer", outbox.run_writer)
            supervisor.start("outbox-delivery", outbox.run_delivery)
            supervisor.start(
                "heartbeat",
                lambda: instances.run(cluster.end_calls_of, cluster.hang_up_all, cluster.sweep),
            )
            if router is not None:
                supervisor.start("inbox", lambda: router.serve(instances.id, cluster.handle))
            yield
        with contextlib.suppress(Exception):
            await outbox.flush()
        with contextlib.suppress(Exception):
            await instances.stop()
        await engine.close()
        tracing.flush()
        await sender.close()
        await providers.aclose()
        if router is not None:
            await router.aclose()

    app = FastAPI(
        title="backchannel",
        version="0.1.0",
        description="Voice-agent server where background tool results land in the live "
        "conversation, exactly once.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(ErrorEnvelope)
    _errors(app)
    _routes(app, secrets)
    return app


async def _router(settings: Settings) -> RedisRouter | None:
    if settings.redis_url is None:
        return None
    router = RedisRouter(settings.redis_url)
    try:
        await router.ping()
    except (RedisError, OSError) as exc:
        await router.aclose()
        raise ConfigError(
            f"Redis at {settings.redis_url} is not reachable: {exc}", code="redis_unreachable"
        ) from exc
    return router


def _host(request: Request) -> CallHost:
    host: CallHost = request.app.state.host
    return host


def _cluster(request: Request) -> Cluster:
    cluster: Cluster = request.app.state.cluster
    return cluster


async def _call_access(request: Request, call_id: str) -> None:
    """Pass if the request holds the call's token or the API key (401, never 404, for a
    wrong token: a token says nothing about other calls)."""
    secrets: Secrets = request.app.state.secrets
    token = presented(request, query=True)
    if token is None:
        raise Unauthorized("this route needs the call's token or the API key", code="unauthorized")
    if is_api_key(request, secrets.api_key):
        return
    if not await _host(request).authorize(call_id, token):
        raise Unauthorized("wrong token for this call", code="unauthorized")


def _routes(app: FastAPI, secrets: Secrets) -> None:
    def api_key(request: Request) -> None:
        require_api_key(request, secrets.api_key)

    management = [Depends(api_key)]
    app.include_router(phone_routes(management))
    app.include_router(vapi_routes(management))
    app.include_router(dashboard_routes(management))
    app.include_router(page_routes())

    @app.get("/health", tags=["meta"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Whether it can do its work is ``/ready``."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["meta"], response_class=Response)
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics, in its text format: live calls, turn latency by stage,
        tool calls and results, the webhook outbox, worker restarts. Open like
        ``/health``: counts only, no ids or content."""
        outbox: Outbox = request.app.state.outbox
        try:
            OUTBOX_BACKLOG.set(await outbox.backlog())
        except Exception as exc:  # the store is away: the last value stands
            log.warning("metrics: could not count the outbox backlog: %s", exc)
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    @app.get("/ready", tags=["meta"], responses={503: {"description": "not ready"}})
    async def ready(request: Request) -> Response:
        """Readiness: the store and Redis answer, and every background worker runs.
        503 ``not_ready`` with the same checks otherwise."""
        checks = await readiness(
            _host(request).db, request.app.state.router, request.app.state.supervisor
        )
        if all(v in ("ok", "off", "running") for v in _flat(checks)):
            return JSONResponse({"status": "ready", "checks": checks})
        error = {"code": "not_ready", "message": "not ready", "details": {"checks": checks}}
        return envelope(503, error, request_id())

    # -- assistants ----------------------------------------------------------------

    # Assistants are answered as stored: what was given, no defaults or nulls added.
    as_stored: dict[str, Any] = {"response_model_exclude_unset": True}

    @app.post(
        "/assistants",
        status_code=201,
        dependencies=management,
        tags=["assistants"],
        **as_stored,
    )
    async def create_assistant(request: Request, config: AssistantConfig) -> AssistantOut:
        """Store an assistant; server-owned fields in the body (``id``, ``orgId``,
        ``createdAt``, ``updatedAt``: a Vapi export) are ignored."""
        assistant_id, now, document = await _host(request).store_assistant(config)
        return AssistantOut(id=assistant_id, created_at=now, updated_at=now, **document)

    @app.get("/assistants", dependencies=management, tags=["assistants"], **as_stored)
    async def list_assistants(
        request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[AssistantOut]:
        async with _host(request).db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    assistants.select().order_by(assistants.c.created_at.desc()).limit(limit)
                )
            ).all()
        return [_assistant_out(r._mapping) for r in rows]

    @app.get(
        "/assistants/{assistant_id}", dependencies=management, tags=["assistants"], **as_stored
    )
    async def get_assistant(request: Request, assistant_id: Id) -> AssistantOut:
        return _assistant_out(await _assistant_row(request, assistant_id))

    @app.patch(
        "/assistants/{assistant_id}", dependencies=management, tags=["assistants"], **as_stored
    )
    async def update_assistant(
        request: Request, assistant_id: Id, changes: Annotated[dict[str, Any], Body()]
    ) -> AssistantOut:
        """Merge top-level fields into the stored assistant (Vapi's update semantics).
        Server-owned fields (ids, timestamps) cannot be changed and are ignored."""
        row = await _assistant_row(request, assistant_id)
        changes = without_owned(changes)
        config = AssistantConfig.from_json({**row["config"], **changes})
        host = _host(request)
        await host.check_assistant(config)
        now = time.time()
        document = assistant_document(config)
        async with host.db.transaction() as conn:
            await conn.execute(
                assistants.update()
                .where(assistants.c.id == assistant_id)
                .values(config=document, updated_at=now)
            )
        return AssistantOut(
            id=assistant_id, created_at=row["created_at"], updated_at=now, **document
        )

    @app.delete(
        "/assistants/{assistant_id}", status_code=204, dependencies=management, tags=["assistants"]
    )
    async def delete_assistant(request: Request, assistant_id: Id) -> Response:
        await _assistant_row(request, assistant_id)
        async with _host(request).db.transaction() as conn:
            await conn.execute(assistants.delete().where(assistants.c.id == assistant_id))
        return Response(status_code=204)

    # -- calls ---------------------------------------------------------------------

    @app.post("/calls", status_code=201, dependencies=management, tags=["calls"])
    async def create_call(request: Request, body: CreateCall) -> CallOut:
        host = _host(request)
        if body.type == "phone":
            hosted, token, client_token = await place_call(host, body)
        else:
            hosted, token, client_token = await host.create(body)
        out = await host.describe(hosted, token=token)
        return out.model_copy(update={"client_token": client_token})

    @app.get("/calls", dependencies=management, tags=["calls"])
    async def list_calls(
        request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[CallOut]:
        host = _host(request)
        return [await host.describe(await host.get(i)) for i in await host.ids(limit)]

    @app.get("/calls/{call_id}", tags=["calls"])
    async def get_call(request: Request, call_id: Id) -> CallOut:
        await _call_access(request, call_id)
        host = _host(request)
        return await host.describe(await host.get(call_id))

    @app.post("/calls/{call_id}/end", tags=["calls"])
    async def end_call(request: Request, call_id: Id) -> CallOut:
        await _call_access(request, call_id)
        host = _host(request)
        hosted = await host.get(call_id)
        with contextlib.suppress(CallEnded):  # ending an ended call is a no-op
            await _cluster(request).control(
                call_id, None, ResultSource.API, end_reason="ended-by-api"
            )
        return await host.describe(hosted)

    @app.post("/calls/{call_id}/tool-calls/{tool_call_id}/result", tags=["results"])
    async def post_result(
        request: Request, call_id: Id, tool_call_id: Id, body: ResultBody
    ) -> ResolutionOut:
        """Deliver a tool call's result (or a ``willContinue`` progress update), once."""
        await _call_access(request, call_id)
        if body.tool_call_id is not None and body.tool_call_id != tool_call_id:
            raise InvalidInput(
                "the body's toolCallId differs from the path's", code="tool_call_id_mismatch"
            )
        resolution = await _host(request).engine.submit_result(
            call_id, body.result_for(tool_call_id), ResultSource.API
        )
        return ResolutionOut.model_validate(resolution.to_dict())

    @app.post("/calls/{call_id}/control", tags=["calls"])
    async def control(
        request: Request,
        call_id: Id,
        message: Annotated[ControlMessage, Body(discriminator="type")],
    ) -> dict[str, Any]:
        """The control URL: ``add-message``, ``say``, ``end-call``, ``control``, and
        ``tool-call-result``."""
        await _call_access(request, call_id)
        answer = await _cluster(request).control(call_id, message, ResultSource.API)
        return answer if "toolCallId" in answer else Accepted().model_dump()

    @app.websocket("/calls/{call_id}/ws")
    async def client_socket(ws: WebSocket, call_id: str) -> None:
        await client_session(ws, ws.app.state.host, call_id)


async def _assistant_row(request: Request, assistant_id: str) -> dict[str, Any]:
    return await _host(request).assistant_row(assistant_id)


def _assistant_out(m: Any) -> AssistantOut:
    document = without_owned(m["config"])
    return AssistantOut(
        id=m["id"], created_at=m["created_at"], updated_at=m["updated_at"], **document
    )


def _errors(app: FastAPI) -> None:
    @app.exception_handler(BackchannelError)
    async def backchannel_error(request: Request, exc: BackchannelError) -> JSONResponse:
        if exc.status >= 500:  # the server's side: traceable by a request id
            rid = request_id()
            log.warning(
                "%s %s: %s (%s) [%s]", request.method, request.url.path, exc.code, exc.message, rid
            )
            return envelope(exc.status, exc.to_dict(), rid)
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        body = {
            "code": "invalid_request",
            "message": "the request is malformed",
            "details": {"errors": errors},
        }
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}
        body = {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}
        return JSONResponse({"error": body}, status_code=exc.status_code)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 ``body_too_large``, and JSON
    bodies with text that cannot be stored or sent back (a lone UTF-16 surrogate such as
    ``"\\ud800"``) with 400 ``invalid_body``: refused whole, never stored."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(
                send, 413, "body_too_large", f"bodies are limited to {self.limit} bytes"
            )
            return
        chunks: list[bytes] = []
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > self.limit:
                    raise _TooLarge
                chunks.append(chunk)
                if not message.get("more_body") and not storable_text(b"".join(chunks)):
                    raise _BadText
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(
                send, 413, "body_too_large", f"bodies are limited to {self.limit} bytes"
            )
        except _BadText:
            await self._refuse(
                send, 400, "invalid_body", "the body has text that is not valid Unicode"
            )

    async def _refuse(self, send: Send, status: int, code: str, message: str) -> None:
        response = JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
        await response({"type": "http"}, _no_receive, send)


class _BadText(Exception):
    pass


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def storable_text(body: bytes) -> bool:
    """Whether every string in a JSON body can be encoded as UTF-8 (JSON can spell a
    lone surrogate as an escape; such a string cannot be stored or sent back)."""
    if not _SURROGATE_ESCAPE.search(body):
        return True
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return True  # not JSON: the route answers that
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


class _TooLarge(Exception):
    pass


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}
