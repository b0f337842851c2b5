"""The conversation as a speech-to-speech session holds it, kept against the call's history.

A session (OpenAI Realtime, Gemini Live) keeps its own copy of the conversation. Before
each response the call's history is compared with it: :meth:`Mirror.lacks` gives what
the session does not have yet, in order. What it has already is not written again: the
caller's turns its VAD heard (the model says how to match them), the model's own words
and calls (kept in ``said`` and ``called`` as the model's output comes in), and an answer
the call cut to what was heard (the session's copy, at that place, begins with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..errors import ProviderError

#: The words of a caller's turn the model heard but no transcript gave (Live answered it
#: untranscribed; Realtime's transcription failed): the model answers the audio it has,
#: and the call's history holds this in place of the words.
UNHEARD = "…"


class Mirror:
    def __init__(self) -> None:
        #: The history as the session has it (the messages after the system prompt).
        self.messages: list[dict[str, Any]] = []
        #: The model's own output not yet seen in the history: its words, its call ids.
        self.said: list[str] = []
        self.called: set[str] = set()

    def lacks(
        self, history: list[dict[str, Any]], spoken: Callable[[str], bool]
    ) -> list[dict[str, Any]]:
        """What the session lacks of ``history``, in order; ``spoken`` tells whether a
        caller's turn is one the session heard. ``history`` is the session's after."""
        common = 0
        while (
            common < min(len(history), len(self.messages))
            and history[common] == self.messages[common]
        ):
            common += 1
        old = self.messages[common:]
        missing = []
        for i, message in enumerate(history[common:]):
            before = old[i] if i < len(old) else None  # what stood at its place
            if message == before:
                continue
            if message.get("role") == "user":
                if spoken(str(message.get("content") or "")):
                    continue
            elif self._model_said(message, before):
                continue
            missing.append(message)
        self.messages = history
        # What the model said or called that the history did not take (a response cut
        # while it was written) is not matched against anything later.
        self.said.clear()
        self.called.clear()
        return missing

    def forget(self) -> list[dict[str, Any]]:
        """A new session has nothing: the history it must be given."""
        history, self.messages = self.messages, []
        self.said.clear()
        self.called.clear()
        return history

    def _model_said(self, message: Mapping[str, Any], before: Mapping[str, Any] | None) -> bool:
        """Whether an assistant message is the model's own, in the session already."""
        if message.get("role") != "assistant":
            return False
        content, calls = str(message.get("content") or ""), call_ids(message)
        if (
            before is not None
            and before.get("role") == "assistant"
            and call_ids(before) == calls
            and str(before.get("content") or "").startswith(content)
        ):
            return True  # an answer the call cut: the session's copy is cut there too
        if calls and not calls <= self.called:
            return False
        self.called -= calls
        if not content:
            return True
        for said in self.said:
            if same(said, content) or same(said[: len(content)], content):
                self.said.remove(said)
                return True
        return False


def spoken_turn(spoken: dict[str, str | None], content: str) -> bool:
    """Whether the caller's words are the turns the session's VAD heard, in order (one,
    or several the call took as one reply), by item; those matched are taken out. A turn
    whose transcript has not come yet (``None``) ends the search."""
    heard: list[str] = []
    for item, text in spoken.items():
        if text is None:
            break
        heard.append(item)
        if same(" ".join(spoken[i] or "" for i in heard), content):
            for done in heard:
                del spoken[done]
            return True
    return False


def same(a: str | None, b: str | None) -> bool:
    return " ".join((a or "").split()) == " ".join((b or "").split())


def call_ids(message: Mapping[str, Any]) -> set[str]:
    return {c["id"] for c in message.get("tool_calls") or ()}


def history(messages: Sequence[Mapping[str, Any]], *, transient: int) -> list[dict[str, Any]]:
    """The history after the system prompt (that is the session's instructions), without
    the request's last ``transient`` messages (its guidance)."""
    start = 1 if messages and messages[0].get("role") == "system" else 0
    return [dict(m) for m in messages[start : len(messages) - transient]]


async def opened(ready: Callable[[], Awaitable[None]], seconds: float, where: str) -> None:
    """Wait for the session to be open; after ``seconds``, a ``realtime_unreachable``
    error (the response fails, the caller hears the fallback line)."""
    try:
        async with asyncio.timeout(seconds):
            await ready()
    except TimeoutError:
        raise ProviderError(
            f"the speech-to-speech model at {where} cannot be reached",
            code="realtime_unreachable",
        ) from None
