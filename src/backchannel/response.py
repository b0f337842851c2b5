"""One response of the assistant: the turn loop, as named steps.

A response runs one :class:`~backchannel.arbiter.Plan`: it opens the turn (the user's
words into the history), says any fixed lines, then lets the model speak, running the
tools it calls, until the model stops calling tools; finally it waits for its speech
to be played. Cutting a response (barge-in, an ``interrupt`` result) cancels the task;
:meth:`Response.close` then rewrites the history to what was heard, closes any
tool-call block left open, and reports which announcements were really spoken.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .arbiter import Announcement, Plan, PlanKind
from .conversation import Message
from .llm.base import TextDelta, ToolCallRequest
from .speech import Utterance
from .tracker import SpeechTracker

if TYPE_CHECKING:
    from .call import Call

MAX_MODEL_STEPS = 8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Step:
    tag: int
    text: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)


class Response:
    def __init__(self, call: Call, plan: Plan) -> None:
        self.call = call
        self.plan = plan
        self.tracker = SpeechTracker(call.output, plan.id)
        self.cut = False
        #: History index of each assistant message this response wrote, by speech tag.
        self._messages: dict[int, int] = {}
        self._tags = itertools.count(1)
        #: Announcements whose fixed line was fully played.
        self._lines_spoken: set[str] = set()
        self.end_call_after = bool(plan.say and plan.say.end_call_after)

    # -- the turn ----------------------------------------------------------------------

    async def run(self) -> None:
        self.open_turn()
        await self.say_fixed_lines()
        if self.needs_model():
            for _ in range(MAX_MODEL_STEPS):
                step = await self.generate()
                if not step.tool_calls:
                    break
                await self.call.tools.run_step(self, step)
                if self.end_call_after:
                    break
        await self.tracker.drain()

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
        buffer = ""
        request = self.call.llm_request(self.call.conversation.to_openai(self._instructions()))
        async for chunk in self.call.llm.stream(request):
            if isinstance(chunk, TextDelta):
                step.text += chunk.text
                buffer += chunk.text
                if self.call.engine.speak_chunks:
                    sentences, buffer = [buffer], ""
                else:
                    *sentences, buffer = _split_sentences(buffer)
                for sentence in sentences:
                    if sentence.strip():
                        self.tracker.speak(sentence, step.tag)
            else:
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
        generated = [a for a in self.plan.announcements if a.text is None]
        if not generated:
            return []
        items = "; ".join(
            f"{a.name} (toolCallId {a.tool_call_id})"
            + (f" returned {a.content}" if a.content else "")
            for a in generated
        )
        lead = "Also briefly tell" if self.plan.kind is PlanKind.REPLY else "Briefly tell"
        return [
            {
                "role": "system",
                "content": f"{lead} the user what came back from these background tool calls: "
                f"{items}. Use the results in the conversation; do not invent anything.",
            }
        ]

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
        return tuple(a for a in self.plan.announcements if not self.spoke(a))

    def spoke(self, a: Announcement) -> bool:
        """Whether an announcement reached the listener whole."""
        if a.text is not None:
            return a.key in self._lines_spoken
        return not self.cut


_INTERRUPTED = json.dumps(
    {
        "status": "interrupted",
        "note": "The user interrupted before the result came. "
        "It will be added to the conversation when it arrives.",
    }
)


def _split_sentences(text: str) -> list[str]:
    """Split at sentence ends, keeping the whitespace with the sentence before it."""
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        parts.append(text[start : m.end()])
        start = m.end()
    parts.append(text[start:])
    return parts
