"""The set-up a Gemini Live session opens with (its ``LiveConnectConfig``), from the
assistant: the system prompt, the tools, and who finds the caller's turns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .link import function_tool


def live_setup(
    prompt: str,
    tools: Sequence[Mapping[str, Any]],
    *,
    server_vad: bool = True,
    voice: str | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """The session's ``LiveConnectConfig``: audio out with its transcript, the system
    prompt, every tool ``NON_BLOCKING``, the assistant's ``temperature``
    (``generationConfig``; not its ``maxTokens``: Live counts the answer's audio in its
    output tokens, so a limit sized for text would cut a spoken answer short). With
    ``server_vad`` the server hears the caller's audio (its activity detection, never
    cutting the answer itself: the call decides; its transcription); without, it has no
    activity detection and gets words."""
    detection: dict[str, Any] = (
        {"activity_handling": "NO_INTERRUPTION"}
        if server_vad
        else {"automatic_activity_detection": {"disabled": True}}
    )
    setup: dict[str, Any] = {
        "response_modalities": ["AUDIO"],
        "output_audio_transcription": {},
        "realtime_input_config": detection,
        "context_window_compression": {"sliding_window": {}},
    }
    if server_vad:
        setup["input_audio_transcription"] = {}
    if voice:
        setup["speech_config"] = speech_config(voice)
    if temperature is not None:
        setup["temperature"] = temperature
    if prompt:
        setup["system_instruction"] = {"parts": [{"text": prompt}]}
    if tools:
        declarations = []
        for schema in tools:
            tool = function_tool(schema)
            declarations.append(
                {
                    "name": tool["name"],
                    "description": tool.get("description") or "",
                    "parameters": _schema(tool["parameters"]),
                    "behavior": "NON_BLOCKING",
                }
            )
        setup["tools"] = [{"function_declarations": declarations}]
    return setup


def speech_config(voice: str) -> dict[str, Any]:
    """The ``speechConfig`` that makes the model speak in one of Live's voices."""
    return {"voice_config": {"prebuilt_voice_config": {"voice_name": voice}}}


#: JSON Schema keywords Live's ``Schema`` takes (the OpenAPI subset), as its fields.
_SCHEMA_KEYS = {
    "type": "type",
    "description": "description",
    "enum": "enum",
    "format": "format",
    "items": "items",
    "properties": "properties",
    "required": "required",
    "nullable": "nullable",
    "minimum": "minimum",
    "maximum": "maximum",
    "minItems": "min_items",
    "maxItems": "max_items",
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "anyOf": "any_of",
    "default": "default",
    "title": "title",
}


def _schema(schema: Any) -> Any:
    """A tool's JSON Schema as Live's ``Schema``: the keywords it takes, a type list
    (``["string", "null"]``) as its type and ``nullable``. (Live is reported to ignore
    ``parametersJsonSchema``, so the declaration carries ``parameters``.)"""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        name = _SCHEMA_KEYS.get(key)
        if name is None:
            continue
        if key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            if len(kinds) < len(value):
                out["nullable"] = True
            value = kinds[0] if kinds else "string"
        elif key == "properties" and isinstance(value, Mapping):
            value = {k: _schema(v) for k, v in value.items()}
        elif key == "items":
            value = _schema(value)
        elif key == "anyOf" and isinstance(value, list):
            value = [_schema(v) for v in value]
        out[name] = value
    return out
