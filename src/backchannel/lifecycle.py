"""Lifecycles: tool calls, calls and turns, each an enum with one guarded transition.

A lifecycle's legal moves live in one table next to its enum, and :func:`transition` is
the only way to move. An illegal move raises :class:`~backchannel.errors.IllegalTransition`
with a stable code, so a bug or a hostile request can never put a record in a state
the product does not define.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from .errors import IllegalTransition


class ToolCallState(StrEnum):
    """Where one tool call stands. ``progress`` is a repeatable step, not a state."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        ToolCallState.SUCCEEDED,
        ToolCallState.FAILED,
        ToolCallState.TIMED_OUT,
        ToolCallState.CANCELLED,
    }
)


class CallState(StrEnum):
    """One live conversation, from creation to the end-of-call report."""

    QUEUED = "queued"
    IN_PROGRESS = "in-progress"
    ENDED = "ended"


class TurnState(StrEnum):
    """Who holds the floor in a call right now."""

    IDLE = "idle"
    #: The user is speaking (or has stopped and their final transcript is not in yet).
    USER = "user"
    #: The assistant is generating and/or speaking one response.
    RESPONDING = "responding"
    #: The call is over; nobody speaks again.
    CLOSED = "closed"


_TOOL_MOVES: dict[ToolCallState, frozenset[ToolCallState]] = {
    ToolCallState.PENDING: frozenset(
        {ToolCallState.RUNNING, *_TERMINAL},
    ),
    ToolCallState.RUNNING: frozenset({ToolCallState.RUNNING, *_TERMINAL}),
    ToolCallState.SUCCEEDED: frozenset(),
    ToolCallState.FAILED: frozenset(),
    ToolCallState.TIMED_OUT: frozenset(),
    ToolCallState.CANCELLED: frozenset(),
}

_CALL_MOVES: dict[CallState, frozenset[CallState]] = {
    CallState.QUEUED: frozenset({CallState.IN_PROGRESS, CallState.ENDED}),
    CallState.IN_PROGRESS: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}

_TURN_MOVES: dict[TurnState, frozenset[TurnState]] = {
    TurnState.IDLE: frozenset({TurnState.USER, TurnState.RESPONDING, TurnState.CLOSED}),
    TurnState.USER: frozenset({TurnState.IDLE, TurnState.RESPONDING, TurnState.CLOSED}),
    TurnState.RESPONDING: frozenset(
        {TurnState.IDLE, TurnState.USER, TurnState.RESPONDING, TurnState.CLOSED}
    ),
    TurnState.CLOSED: frozenset(),
}

_TABLES: dict[type[StrEnum], dict[object, frozenset[object]]] = {
    ToolCallState: _TOOL_MOVES,  # type: ignore[dict-item]
    CallState: _CALL_MOVES,  # type: ignore[dict-item]
    TurnState: _TURN_MOVES,  # type: ignore[dict-item]
}

S = TypeVar("S", ToolCallState, CallState, TurnState)


def can_transition(current: S, target: S) -> bool:
    """Whether ``current → target`` is a move the lifecycle allows."""
    return target in _TABLES[type(current)][current]


def transition(current: S, target: S) -> S:
    """Return ``target`` if the move is legal; otherwise raise ``IllegalTransition``.

    ``running → running`` is legal for tool calls: it is how a progress update is
    recorded without leaving the running state.
    """
    if not can_transition(current, target):
        raise IllegalTransition(
            f"{type(current).__name__} cannot move from {current.value!r} to {target.value!r}",
            code="illegal_transition",
            current=current.value,
            target=target.value,
        )
    return target
