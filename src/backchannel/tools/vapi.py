"""A tool call in Vapi's wire shapes, as its SDK models them.

Two shapes name the same call: a ``toolCallList`` item (OpenAI's tool call: ``id``,
``type``, ``function.name`` and ``function.arguments`` as a JSON string) and a
``toolWithToolCallList`` item (the tool as configured, with that call under
``toolCall``). Both the client's ``tool-calls`` event and the tool server's webhook
carry them. For convenience the list item also has ``name`` and ``arguments`` (an
object), as Vapi's webhooks do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .spec import ToolSpec


def tool_call(tool_call_id: str, spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's tool call: ``function.arguments`` is a JSON string."""
    return {
        "id": tool_call_id,
        "type": "function",
        "function": {"name": spec.name, "arguments": json.dumps(dict(arguments))},
    }


def tool_call_item(
    tool_call_id: str, spec: ToolSpec, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``toolCallList`` item."""
    return {
        **tool_call(tool_call_id, spec, arguments),
        "name": spec.name,
        "arguments": dict(arguments),
    }


def tool_with_tool_call(
    tool_call_id: str, spec: ToolSpec, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``toolWithToolCallList`` item: the tool, and the call under ``toolCall``."""
    function = {
        "name": spec.name,
        "description": spec.description,
        "parameters": dict(spec.parameters),
    }
    return {
        "type": "function",
        "function": function,
        "server": {"url": spec.server.url} if spec.server else None,
        "async": spec.is_async,
        "toolCall": tool_call(tool_call_id, spec, arguments),
    }
