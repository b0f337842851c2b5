"""One error root for everything a backchannel user can see.

Every error carries a stable, machine-readable ``code`` (snake_case) that the HTTP and
WebSocket edges put on the wire as ``{"error": {"code", "message"}}``. Codes are part of
the public contract: they never change meaning once released.
"""

from __future__ import annotations

from typing import Any


class BackchannelError(Exception):
    """Root of every error backchannel raises on purpose."""

    code: str = "backchannel_error"
    #: The HTTP status the edges answer with for this error.
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(BackchannelError):
    """An assistant or tool configuration cannot be used as given."""

    code = "invalid_config"
    status = 422


class InvalidInput(BackchannelError):
    """A message or result is malformed (bad JSON shape, missing fields)."""

    code = "invalid_input"
    status = 422


class NotFound(BackchannelError):
    """An id names nothing we know (unknown call, unknown tool call)."""

    code = "not_found"
    status = 404


class Conflict(BackchannelError):
    """The request contradicts what is already recorded (e.g. a second, different result)."""

    code = "conflict"
    status = 409


class Unauthorized(BackchannelError):
    """No credentials, or wrong ones, for this route."""

    code = "unauthorized"
    status = 401


class Forbidden(BackchannelError):
    """The sender may not do this (e.g. a client resolving a server tool's call)."""

    code = "forbidden"
    status = 403


class IllegalTransition(BackchannelError):
    """A lifecycle was asked to make a move its transition table does not allow."""

    code = "illegal_transition"
    status = 409


class ProviderError(BackchannelError):
    """A provider (LLM, STT, TTS, tool server) failed or answered garbage."""

    code = "provider_error"
    status = 502


class CallEnded(BackchannelError):
    """The call is no longer live, so the request cannot act on it."""

    code = "call_ended"
    status = 409


class Unavailable(BackchannelError):
    """Something the request needs is not reachable now; retrying later may work."""

    code = "unavailable"
    status = 503


def rebuilt(body: dict[str, Any], status: int) -> BackchannelError:
    """An error another instance answered with (``to_dict`` and its status), raised here
    the same way, so a routed request fails exactly as a local one would."""
    error = BackchannelError(
        str(body.get("message", "")), code=str(body.get("code")), **body.get("details", {})
    )
    error.status = status
    return error
