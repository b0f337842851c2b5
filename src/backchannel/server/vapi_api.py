"""Vapi's REST surface beside backchannel's own: ``/assistant``, ``/tool``, ``/call`` and
``/phone-number`` with Vapi's request and response shapes, so Vapi's server SDKs work
with only the base URL and the key changed.

Every resource answers with ``id``, ``orgId``, ``createdAt`` and ``updatedAt`` (ISO
8601), as Vapi's do. Bodies are the same JSON Vapi takes; fields backchannel does not
use are kept, server-owned fields in a body are ignored. A call created here is a text
call unless it names a ``customer`` (a phone call) or ``type``; its answer carries, beside
Vapi's fields, the ``clientUrl`` and tokens to connect to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import ValidationError

from ..clock import iso_time
from ..config import AssistantConfig, ToolConfig
from ..errors import ConfigError, NotFound
from ..reports import transcript_text
from .calls import VAPI_CALL_TYPES, CallHost, HostedCall, insert_document
from .db import assistants, phone_numbers, tools
from .phone import place_call
from .wire import CallOut, CreateCall, assistant_document, without_owned

Id = Annotated[str, Path(min_length=1, max_length=256)]
Limit = Annotated[int, Query(ge=1, le=1000)]
JsonBody = Annotated[dict[str, Any], Body()]


def _host(request: Request) -> CallHost:
    host: CallHost = request.app.state.host
    return host


def _resource(host: CallHost, row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        **m["config"],
        "id": m["id"],
        "orgId": host.org_id,
        "createdAt": iso_time(m["created_at"]),
        "updatedAt": iso_time(m["updated_at"]),
    }


def vapi_routes(management: list[Any]) -> APIRouter:
    router = APIRouter(dependencies=management, tags=["vapi"])

    _document_routes(router, "assistant", assistants, "unknown_assistant", _assistant_document)
    _document_routes(router, "tool", tools, "unknown_tool", _tool_document)

    # -- /call ---------------------------------------------------------------------

    @router.post(
        "/call",
        status_code=201,
        operation_id="createCall",
        openapi_extra=_links("201", "call_id", "getCall"),
    )
    async def create_call(request: Request, body: JsonBody) -> dict[str, Any]:
        host = _host(request)
        kind = body.get("type") or ("phone" if body.get("customer") else "text")
        try:
            create = CreateCall.model_validate({**body, "type": kind})
        except ValidationError as exc:
            raise ConfigError(
                "the call cannot be created as given",
                code="invalid_request",
                errors=exc.errors(include_url=False, include_input=False, include_context=False),
            ) from exc
        if create.type == "phone":
            hosted, token, client_token = await place_call(host, create)
        else:
            hosted, token, client_token = await host.create(create)
        out = await vapi_call_out(host, hosted)
        return {**out, "token": token, "clientToken": client_token}

    @router.get("/call")
    async def list_calls(request: Request, limit: Limit = 100) -> list[dict[str, Any]]:
        host = _host(request)
        return [await vapi_call_out(host, await host.get(i)) for i in await host.ids(limit)]

    @router.get("/call/{call_id}", operation_id="getCall")
    async def get_call(request: Request, call_id: Id) -> dict[str, Any]:
        host = _host(request)
        return await vapi_call_out(host, await host.get(call_id))

    # -- /phone-number -------------------------------------------------------------

    @router.post(
        "/phone-number",
        status_code=201,
        operation_id="createPhoneNumber",
        openapi_extra=_links("201", "number_id", "getPhoneNumber", "deletePhoneNumber"),
    )
    async def create_number(request: Request, body: JsonBody) -> dict[str, Any]:
        host = _host(request)
        number, assistant_id = body.get("number"), body.get("assistantId")
        if not isinstance(number, str) or not isinstance(assistant_id, str):
            raise ConfigError(
                "a phone number needs 'number' and 'assistantId'", code="invalid_request"
            )
        await host.assistant_row(assistant_id)
        row = {
            "id": str(uuid.uuid4()),
            "number": number,
            "assistant_id": assistant_id,
            "created_at": time.time(),
        }
        async with host.db.transaction() as conn:
            await conn.execute(phone_numbers.insert().values(**row))
        return _number_out(host, row, body.get("provider"))

    @router.get("/phone-number")
    async def list_numbers(request: Request, limit: Limit = 100) -> list[dict[str, Any]]:
        host = _host(request)
        async with host.db.engine.connect() as conn:
            rows = (await conn.execute(phone_numbers.select().limit(limit))).all()
        return [_number_out(host, dict(r._mapping)) for r in rows]

    @router.get("/phone-number/{number_id}", operation_id="getPhoneNumber")
    async def get_number(request: Request, number_id: Id) -> dict[str, Any]:
        host = _host(request)
        return _number_out(host, await _number_row(host, number_id))

    @router.delete("/phone-number/{number_id}", operation_id="deletePhoneNumber")
    async def delete_number(request: Request, number_id: Id) -> dict[str, Any]:
        host = _host(request)
        row = await _number_row(host, number_id)
        async with host.db.transaction() as conn:
            await conn.execute(phone_numbers.delete().where(phone_numbers.c.id == number_id))
        return _number_out(host, row)

    return router


def _links(status: str, parameter: str, *operations: str) -> dict[str, Any]:
    """OpenAPI links from a create to the operations on what it made (clients and
    stateful API testers follow them)."""
    return {
        "responses": {
            status: {
                "links": {
                    op: {"operationId": op, "parameters": {parameter: "$response.body#/id"}}
                    for op in operations
                }
            }
        }
    }


Prepare = Callable[[CallHost, dict[str, Any]], Awaitable[dict[str, Any]]]


def _document_routes(
    router: APIRouter, kind: str, table: sa.Table, code: str, prepare: Prepare
) -> None:
    """Create, list, get, update (top-level merge) and delete for a JSON resource kept
    as given; ``prepare`` checks a body and makes the document to store."""
    name = kind.capitalize()

    @router.post(
        f"/{kind}",
        status_code=201,
        operation_id=f"create{name}",
        openapi_extra=_links("201", "resource_id", f"get{name}", f"update{name}", f"delete{name}"),
    )
    async def create(request: Request, body: JsonBody) -> dict[str, Any]:
        host = _host(request)
        document = await prepare(host, without_owned(body))
        resource_id, _at = await insert_document(host.db, table, document)
        return await _one(host, table, resource_id, code)

    @router.get(f"/{kind}", operation_id=f"list{name}s")
    async def list_all(request: Request, limit: Limit = 100) -> list[dict[str, Any]]:
        return await _list(_host(request), table, limit)

    @router.get(f"/{kind}/{{resource_id}}", operation_id=f"get{name}")
    async def get(request: Request, resource_id: Id) -> dict[str, Any]:
        return await _one(_host(request), table, resource_id, code)

    @router.patch(f"/{kind}/{{resource_id}}", operation_id=f"update{name}")
    async def update(request: Request, resource_id: Id, body: JsonBody) -> dict[str, Any]:
        host = _host(request)
        current = await _one(host, table, resource_id, code)
        merged = {**without_owned(current), **without_owned(body)}
        await _update(host, table, resource_id, await prepare(host, merged))
        return await _one(host, table, resource_id, code)

    @router.delete(f"/{kind}/{{resource_id}}", operation_id=f"delete{name}")
    async def delete(request: Request, resource_id: Id) -> dict[str, Any]:
        return await _delete(_host(request), table, resource_id, code)


async def _assistant_document(host: CallHost, body: dict[str, Any]) -> dict[str, Any]:
    """An assistant as stored: checked like any other (tools, URLs), kept as given."""
    config = AssistantConfig.from_json(body)
    await host.check_assistant(config)
    return assistant_document(config)


async def _tool_document(_host: CallHost, body: dict[str, Any]) -> dict[str, Any]:
    """A tool as stored: checked against the tool shape, kept as given."""
    try:
        ToolConfig.model_validate(body)
    except ValidationError as exc:
        raise ConfigError(
            "tool configuration is invalid",
            code="invalid_tool",
            errors=exc.errors(include_url=False, include_input=False, include_context=False),
        ) from exc
    return body


async def _one(host: CallHost, table: sa.Table, row_id: str, code: str) -> dict[str, Any]:
    async with host.db.engine.connect() as conn:
        row = (await conn.execute(table.select().where(table.c.id == row_id))).first()
    if row is None:
        raise NotFound(f"no such resource {row_id!r}", code=code)
    return _resource(host, row)


async def _list(host: CallHost, table: sa.Table, limit: int) -> list[dict[str, Any]]:
    query = table.select().order_by(table.c.created_at.desc()).limit(limit)
    async with host.db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_resource(host, r) for r in rows]


async def _update(host: CallHost, table: sa.Table, row_id: str, document: dict[str, Any]) -> None:
    async with host.db.transaction() as conn:
        await conn.execute(
            table.update()
            .where(table.c.id == row_id)
            .values(config=document, updated_at=time.time())
        )


async def _delete(host: CallHost, table: sa.Table, row_id: str, code: str) -> dict[str, Any]:
    gone = await _one(host, table, row_id, code)
    async with host.db.transaction() as conn:
        await conn.execute(table.delete().where(table.c.id == row_id))
    return gone


async def _number_row(host: CallHost, number_id: str) -> dict[str, Any]:
    async with host.db.engine.connect() as conn:
        row = (
            await conn.execute(phone_numbers.select().where(phone_numbers.c.id == number_id))
        ).first()
    if row is None:
        raise NotFound(f"no phone number {number_id!r}", code="unknown_phone_number")
    return dict(row._mapping)


def _number_out(host: CallHost, row: dict[str, Any], provider: Any = None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "orgId": host.org_id,
        "provider": provider if isinstance(provider, str) else "twilio",
        "number": row["number"],
        "assistantId": row["assistant_id"],
        "twilioAccountSid": host.settings.twilio_account_sid or "",
        "createdAt": iso_time(row["created_at"]),
        "updatedAt": iso_time(row["created_at"]),
    }


async def vapi_call_out(host: CallHost, hosted: HostedCall) -> dict[str, Any]:
    """A call as Vapi's ``Call``, with backchannel's ``clientUrl`` and tool calls."""
    out: CallOut = await host.describe(hosted)
    call: dict[str, Any] = {
        "id": out.id,
        "orgId": host.org_id,
        "type": VAPI_CALL_TYPES.get(out.type, out.type),
        "status": out.status,
        "createdAt": iso_time(out.created_at),
        "updatedAt": iso_time(out.ended_at or out.created_at),
        "monitor": {"controlUrl": out.monitor.control_url},
        "clientUrl": out.client_url,
        "artifact": {
            "transcript": transcript_text(out.transcript),
            "messagesOpenAIFormatted": out.messages,
        },
        "toolCalls": out.tool_calls,
    }
    if out.assistant_id is not None:
        call["assistantId"] = out.assistant_id
    if out.ended_at is not None:
        call["endedAt"] = iso_time(out.ended_at)
    if out.ended_reason is not None:
        call["endedReason"] = out.ended_reason
    if out.customer is not None:
        call["customer"] = {"number": out.customer.number}
    return call
