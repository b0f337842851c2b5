"""The turn arbiter as a pure state machine."""

from __future__ import annotations

import pytest

from backchannel import (
    Announcement,
    Arbiter,
    IllegalTransition,
    PlanKind,
    SayRequest,
    TurnState,
    Verdict,
)


def ann(key: str, *, text: str | None = None, interrupt: bool = False) -> Announcement:
    return Announcement(key, key, "tool", text, interrupt=interrupt)


def test_idle_result_starts_an_announcement() -> None:
    a = Arbiter()
    assert a.result(ann("r1")) is Verdict.START
    plan = a.next_plan()
    assert plan is not None and plan.kind is PlanKind.ANNOUNCE
    assert [x.key for x in plan.announcements] == ["r1"]
    assert a.state is TurnState.RESPONDING
    assert a.next_plan() is None, "never two plans at once"


def test_results_during_a_user_turn_join_the_reply() -> None:
    a = Arbiter()
    a.user_started()
    assert a.result(ann("r1")) is Verdict.NOTHING
    assert a.result(ann("r2", interrupt=True)) is Verdict.NOTHING, (
        "interrupt never talks over the user"
    )
    a.user_stopped()
    assert a.next_plan() is None, "the turn ends with the transcript"
    assert a.user_transcript("hello") is Verdict.START
    plan = a.next_plan()
    assert plan is not None and plan.kind is PlanKind.REPLY
    assert plan.user_text == "hello"
    assert [x.key for x in plan.announcements] == ["r1", "r2"]


def test_for_one_ask_models_generated_results_get_a_response_of_their_own() -> None:
    a = Arbiter(separate_announcements=True)
    a.user_started()
    a.result(ann("generated"))
    a.result(ann("fixed", text="Your order shipped."))
    a.user_stopped()
    assert a.user_transcript("what does shipping cost?") is Verdict.START
    reply = a.next_plan()
    assert reply is not None and reply.kind is PlanKind.REPLY
    assert [x.key for x in reply.announcements] == ["fixed"], "fixed lines still ride along"
    assert a.finished(reply) is Verdict.START
    announce = a.next_plan()
    assert announce is not None and announce.kind is PlanKind.ANNOUNCE
    assert [x.key for x in announce.announcements] == ["generated"]


def test_when_idle_waits_for_the_response_and_interrupt_cuts_it() -> None:
    a = Arbiter()
    a.user_transcript("hi")
    plan = a.next_plan()
    assert plan is not None
    a.audible()
    assert a.result(ann("idle")) is Verdict.NOTHING
    assert a.result(ann("now", interrupt=True)) is Verdict.CUT
    assert a.finished(plan) is Verdict.START
    nxt = a.next_plan()
    assert nxt is not None and [x.key for x in nxt.announcements] == ["idle", "now"]


def test_a_silent_announcement_is_restarted_to_take_in_a_new_result() -> None:
    a = Arbiter()
    a.result(ann("r1"))
    plan = a.next_plan()
    assert plan is not None
    assert a.result(ann("r2")) is Verdict.CUT, "nobody heard r1's announcement yet"
    a.finished(plan, unspoken=plan.announcements)
    merged = a.next_plan()
    assert merged is not None and [x.key for x in merged.announcements] == ["r1", "r2"]
    assert a.result(ann("r3")) is Verdict.NOTHING, "restarted once only"
    a.audible()
    assert a.result(ann("r4")) is Verdict.NOTHING, "once audible, the next result waits"


def test_barge_in_cuts_and_unspoken_go_back_first() -> None:
    a = Arbiter()
    a.result(ann("r1"))
    plan = a.next_plan()
    assert plan is not None
    a.audible()
    assert a.user_started() is Verdict.CUT
    assert a.state is TurnState.USER
    a.result(ann("r2"))
    assert a.finished(plan, unspoken=plan.announcements) is Verdict.NOTHING
    a.user_stopped()
    a.user_transcript("wait")
    reply = a.next_plan()
    assert reply is not None and [x.key for x in reply.announcements] == ["r1", "r2"]


def test_same_key_is_kept_once() -> None:
    a = Arbiter()
    a.user_started()
    a.result(ann("r1", text="first"))
    a.result(ann("r1", text="second"))
    assert [x.text for x in a.pending] == ["first"]


def test_typed_words_during_a_response_wait_for_it() -> None:
    a = Arbiter()
    a.user_transcript("one")
    plan = a.next_plan()
    assert plan is not None
    assert a.user_transcript("two") is Verdict.NOTHING
    assert a.finished(plan) is Verdict.START
    nxt = a.next_plan()
    assert nxt is not None and nxt.user_text == "two"


def test_says_then_announcements_then_triggers() -> None:
    a = Arbiter()
    a.user_started()
    a.trigger()
    a.result(ann("r1"))
    a.say(SayRequest("hello"))
    a.user_stopped()
    a.user_transcript("")
    kinds = []
    while (plan := a.next_plan()) is not None:
        kinds.append(plan.kind)
        a.finished(plan)
    assert kinds == [PlanKind.SAY, PlanKind.ANNOUNCE, PlanKind.RESPOND]


def test_closed_arbiter_hands_out_nothing() -> None:
    a = Arbiter()
    a.close()
    assert a.result(ann("r1")) is Verdict.NOTHING
    assert a.user_transcript("hi") is Verdict.NOTHING
    assert a.say(SayRequest("x")) is Verdict.NOTHING
    assert a.trigger() is Verdict.NOTHING
    assert a.user_started() is Verdict.NOTHING
    assert a.next_plan() is None
    with pytest.raises(IllegalTransition):
        a._move(TurnState.IDLE)
