"""The assistant a call runs: the stored or inline one, with its ``model.toolIds``
resolved to stored tools, ``assistantOverrides`` applied, and ``{{variables}}`` filled.

Vapi's ``assistantOverrides`` replace the assistant's top-level fields for one call (a
block such as ``model`` or ``voice`` is merged key by key); ``variableValues`` fill
``{{name}}`` (Liquid's spacing allowed) in the first message, the system prompt and
the other lines the assistant says. A name with no value is left as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ..config import AssistantConfig
from ..errors import NotFound
from ..ledger.sql import SqlStore
from .db import tools

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
#: Top-level fields whose text is said or read by the model.
_SAID = ("firstMessage", "voicemailMessage", "endCallMessage")


async def call_assistant(
    db: SqlStore, assistant: AssistantConfig, overrides: Mapping[str, Any] | None
) -> AssistantConfig:
    """The assistant for one call (see the module's docstring)."""
    data = assistant.to_json()
    overrides = dict(overrides or {})
    values = overrides.pop("variableValues", None) or {}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    model = data.get("model")
    if isinstance(model, dict) and model.get("toolIds"):
        model["tools"] = [*model.get("tools", []), *await stored_tools(db, model["toolIds"])]
    if values:
        data = fill_variables(data, values)
    return AssistantConfig.from_json(data)


async def stored_tools(db: SqlStore, ids: list[str]) -> list[dict[str, Any]]:
    """The stored tools ``ids`` name, in that order; ``unknown_tool`` if one is missing."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(tools).where(tools.c.id.in_(ids)))).all()
    found = {r.id: dict(r.config) for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no tool {missing[0]!r} (model.toolIds)", code="unknown_tool")
    return [found[i] for i in ids]


def fill_variables(data: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with ``{{name}}`` filled in the lines the assistant says or reads."""

    def fill(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        return _VARIABLE.sub(
            lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text
        )

    out = {k: fill(v) if k in _SAID else v for k, v in data.items()}
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("messages"), list):
        out["model"] = {
            **model,
            "messages": [
                {**m, "content": fill(m.get("content"))} if isinstance(m, dict) else m
                for m in model["messages"]
            ],
        }
    return out
