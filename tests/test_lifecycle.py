from __future__ import annotations

import pytest

from backchannel import CallState, IllegalTransition, ToolCallState, TurnState, transition
from backchannel.lifecycle import can_transition

TERMINAL = [
    ToolCallState.SUCCEEDED,
    ToolCallState.FAILED,
    ToolCallState.TIMED_OUT,
    ToolCallState.CANCELLED,
]


@pytest.mark.parametrize("end", TERMINAL)
def test_pending_and_running_reach_every_terminal_state(end: ToolCallState) -> None:
    assert transition(ToolCallState.PENDING, end) is end
    assert transition(ToolCallState.RUNNING, end) is end
    assert end.terminal


@pytest.mark.parametrize("end", TERMINAL)
@pytest.mark.parametrize("target", list(ToolCallState))
def test_terminal_states_are_final(end: ToolCallState, target: ToolCallState) -> None:
    with pytest.raises(IllegalTransition) as exc:
        transition(end, target)
    assert exc.value.code == "illegal_transition"
    assert exc.value.details == {"current": end.value, "target": target.value}


def test_progress_keeps_running_and_nothing_goes_back_to_pending() -> None:
    assert transition(ToolCallState.RUNNING, ToolCallState.RUNNING) is ToolCallState.RUNNING
    assert not can_transition(ToolCallState.RUNNING, ToolCallState.PENDING)
    assert not ToolCallState.RUNNING.terminal


def test_call_and_turn_lifecycles() -> None:
    assert transition(CallState.QUEUED, CallState.IN_PROGRESS) is CallState.IN_PROGRESS
    assert transition(CallState.IN_PROGRESS, CallState.ENDED) is CallState.ENDED
    with pytest.raises(IllegalTransition):
        transition(CallState.ENDED, CallState.IN_PROGRESS)
    assert can_transition(TurnState.RESPONDING, TurnState.USER)
    assert not can_transition(TurnState.CLOSED, TurnState.IDLE)
    assert not can_transition(TurnState.USER, TurnState.USER)
