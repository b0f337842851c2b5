"""One response of the assistant: the turn loop, as named steps.

A response runs one :class:`~backchannel.arbiter.Plan`: it opens the turn (the user's
words into the history), says any fixed lines, then lets the model speak, running the
tools it calls, until the model stops calling tools; finally it waits for its speech
to be played. Cutting a response (barge-in, an ``interrupt`` result) cancels the task;
:meth:`Response.close` then rewrites the history to what was heard, closes any
tool-call block left open, and reports which announcements were really spoken.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .arbiter import Announcement, Plan, PlanKind
from .conversation import Message
from .llm.base import TextDelta, ToolCallRequest, ToolCallStarting
from .speech import Utterance
from .telemetry.tracing import ns
from .tracker import SpeechTracker

if TYPE_CHECKING:
    from .call import Call

MAX_MODEL_STEPS = 8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
#: A clause ends at a comma, semicolon, colon or dash followed by a space ("Sure, …").
_CLAUSE_END = re.compile(r"[,;:\u2014]\s+")


@dataclass
class Step:
    tag: int
    text: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)


class Response:
    def __init__(self, call: Call, plan: Plan, *, index: int = 0) -> None:
        self.call = call
        self.plan = plan
        #: The call's responses, counted from 1 (0: not one of them): a turn's latency
        #: counts only those begun after it.
        self.index = index
        self.tracker = SpeechTracker(call.output, plan.id, lambda: call.turns.replied(index))
        self.cut = False
        #: History index of each assistant message this response wrote, by speech tag.
        self._messages: dict[int, int] = {}
        self._tags = itertools.count(1)
        #: Announcements whose fixed line was fully played.
        self._lines_spoken: set[str] = set()
        self.end_call_after = bool(plan.say and plan.say.end_call_after)
        #: Async tool calls of this response whose placeholder is in the history, by
        #: the placeholder's index; the step generated after them; results taken in.
        self._placeholders: dict[str, int] = {}
        self._followup: int | None = None
        self._restart = False
        self.absorbed: list[Announcement] = []
        #: The model will say nothing more: its last step is done (or there is none).
        self.done_generating = False
        self.failed = False
        #: Start lines said while a call to the tool was being generated, this step.
        self.started_early: dict[str, int] = {}
        #: Whether the model's words have started to go to speech: the first clause
        #: goes alone, as soon as it is complete; the rest sentence by sentence.
        self._spoke_any = False

    # -- the turn ----------------------------------------------------------------------

    async def run(self) -> None:
        self.open_turn()
        await self.say_fixed_lines()
        steps, generating = 0, self.needs_model()
        while True:
            try:
                if generating and steps < MAX_MODEL_STEPS:
                    steps += 1
                    step = await self.generate()
                    if step.tool_calls:
                        await self.call.tools.run_step(self, step)
                        if not self.end_call_after:
                            continue
                    generating = False
                self.done_generating = True
                self.call.prepare_next()  # while this one is still being heard
                await self.tracker.drain()
                return
            except asyncio.CancelledError:
                current = asyncio.current_task()
                # Only the restart's own cancellation is taken back; any other (a cut,
                # the call ending) goes on up.
                if not self._restart or self.cut or current is None or current.cancelling() > 1:
                    raise
                current.uncancel()
                self._drop_followup()
                self.done_generating = False
                generating = True  # answer again, now with the result

    # -- results that arrive before their placeholder is heard -------------------------

    def placeholder(self, tool_call_id: str, index: int) -> None:
        """An async tool call of this response got its placeholder at ``index``."""
        self._placeholders[tool_call_id] = index

    def absorb(self, announcement: Announcement, content: str) -> bool:
        """Take a result whose placeholder this response gave and has not yet talked
        about: the result replaces the placeholder in the history and the model answers
        again from it, so the caller never hears "I'm checking" for an answer already
        in hand. False once the step after the tool call has been heard."""
        index = self._placeholders.get(announcement.tool_call_id)
        followup = self._followup
        if (
            index is None
            or self.cut
            or (followup is not None and self.tracker.started_any(followup))
            or (followup is None and (self.done_generating or self.end_call_after))
        ):
            return False  # heard already, or no step of the model's is left to tell it
        del self._placeholders[announcement.tool_call_id]
        self.call.conversation.replace(
            index, Message("tool", content, tool_call_id=announcement.tool_call_id)
        )
        self.absorbed.append(announcement)
        if followup is not None:
            self._restart = True
        return True

    @property
    def restarting(self) -> bool:
        return self._restart

    def _drop_followup(self) -> None:
        """Forget the step that followed the tool calls: its queued speech and its text."""
        self._restart = False
        tag, self._followup = self._followup, None
        if tag is None:
            return
        for utterance_id in self.tracker.drop(tag):
            self.call.output.drop(utterance_id)
        index = self._messages.pop(tag, None)
        if index is not None:
            self.call.conversation.replace(index, Message("assistant", None))

    # -- the steps ---------------------------------------------------------------------

    def open_turn(self) -> None:
        """Put the user's words into the history; the results are there already."""
        if self.plan.user_text:
            self.call.conversation.append(Message("user", self.plan.user_text))

    async def say_fixed_lines(self) -> None:
        """Speak the plan's fixed lines: a ``say``, or results that bring their own words."""
        if self.plan.say is not None:
            self.speak_line(self.plan.say.content)
        for a in self.plan.announcements:
            if a.text is not None:
                self.speak_line(a.text, functools.partial(self._lines_spoken.add, a.key))

    def needs_model(self) -> bool:
        if self.plan.kind in (PlanKind.REPLY, PlanKind.RESPOND):
            return True
        return any(a.text is None for a in self.plan.announcements)

    async def generate(self) -> Step:
        """Stream one model step; each sentence goes to speech as soon as it is complete."""
        step = Step(tag=next(self._tags))
        self.started_early.clear()
        if self._placeholders:  # the step that talks while async tools run
            self._followup = step.tag
        buffer = ""
        guidance = self._instructions()
        request = self.call.llm_request(
            self.call.conversation.to_openai(guidance), guidance=len(guidance)
        )
        first = True
        with self.call.telemetry.model_request() as span:
            async for chunk in self.call.llm.stream(request):
                if first:
                    span.add_event("first_chunk", timestamp=ns(self.call.clock.wall()))
                    first = False
                if isinstance(chunk, TextDelta):
                    step.text += chunk.text
                    buffer += chunk.text
                    if self.call.engine.speak_chunks:
                        sentences, buffer = [buffer], ""
                    elif not self._spoke_any and self.call.output.clause_first:
                        *sentences, buffer = _split_first_clause(buffer)
                    else:
                        *sentences, buffer = _split_sentences(buffer)
                    for sentence in sentences:
                        if sentence.strip():
                            self._spoke_any = True
                            self.tracker.speak(sentence, step.tag)
                elif isinstance(chunk, ToolCallStarting):
                    self.call.tools.starting(self, chunk.name)
                else:
                    if self._followup == step.tag:
                        self._followup = None  # a step that calls tools is not restarted
                    step.tool_calls.append(chunk)
            if buffer.strip():
                self.tracker.speak(buffer, step.tag)
        if step.text or step.tool_calls:
            self._messages[step.tag] = self.call.conversation.append(
                Message("assistant", step.text or None, tuple(step.tool_calls))
            )
        if step.text:
            self.call.emit("model-output", output={"role": "assistant", "content": step.text})
        return step

    # -- helpers -----------------------------------------------------------------------

    def speak_line(self, text: str, on_done: Callable[[], None] | None = None) -> Utterance:
        """Say a fixed line, kept as its own assistant message in the history."""
        tag = next(self._tags)
        self._messages[tag] = self.call.conversation.append(Message("assistant", text))
        return self.tracker.speak(text, tag, on_done)

    def speak_aside(self, text: str) -> Utterance:
        """Say a line while tools run; it joins the history after the tool-call block."""
        self.call.conversation.add_note(Message("assistant", text))
        return self.tracker.speak(text)

    def _instructions(self) -> list[dict[str, Any]]:
        """Transient guidance for this request only; never stored in the history."""
        return instructions(self.plan)

    # -- the end -----------------------------------------------------------------------

    def close(self) -> tuple[Announcement, ...]:
        """Make the history true to what was heard; return the announcements not spoken."""
        conversation = self.call.conversation
        if self.cut:
            for tag, index in self._messages.items():
                old = conversation.messages[index]
                heard = self.tracker.heard(tag)
                conversation.replace(index, Message("assistant", heard or None, old.tool_calls))
        for tool_call_id in sorted(conversation.unanswered):
            conversation.append(Message("tool", _INTERRUPTED, tool_call_id=tool_call_id))
        conversation.drop_empty()
        return tuple(a for a in self.announcements if not self.spoke(a))

    @property
    def announcements(self) -> tuple[Announcement, ...]:
        """The plan's announcements and the results taken in while it ran."""
        return (*self.plan.announcements, *self.absorbed)

    def spoke(self, a: Announcement) -> bool:
        """Whether an announcement reached the listener whole."""
        if a.text is not None:
            return a.key in self._lines_spoken
        return not self.cut and not self.failed


_INTERRUPTED = json.dumps(
    {
        "status": "interrupted",
        "note": "The user interrupted before the result came. "
        "It will be added to the conversation when it arrives.",
    }
)


def instructions(plan: Plan) -> list[dict[str, Any]]:
    """What a plan's request adds after the history: the results to tell the user."""
    generated = [a for a in plan.announcements if a.text is None]
    if not generated:
        return []
    items = "; ".join(
        f"{a.name} (toolCallId {a.tool_call_id})" + (f" returned {a.content}" if a.content else "")
        for a in generated
    )
    lead = "Also briefly tell" if plan.kind is PlanKind.REPLY else "Briefly tell"
    return [
        {
            "role": "system",
            "content": f"{lead} the user what came back from these background tool calls: "
            f"{items}. Use the results in the conversation; do not invent anything.",
        }
    ]


def _split_first_clause(text: str) -> list[str]:
    """The response's opening: its first sentence or clause as soon as it is complete
    (speech can start on it while the model goes on), then whole sentences."""
    sentences = _split_sentences(text)
    if len(sentences) > 1:
        return sentences
    m = _CLAUSE_END.search(text)
    if m is None or not text[: m.start()].strip():
        return [text]
    return [text[: m.end()], text[m.end() :]]


def _split_sentences(text: str) -> list[str]:
    """Split at sentence ends, keeping the whitespace with the sentence before it."""
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        parts.append(text[start : m.end()])
        start = m.end()
    parts.append(text[start:])
    return parts
