"""Which of a response's words were heard.

A response speaks in utterances (sentences). The tracker knows, for each assistant
message in the history, which utterances carry its words and how far each got, so the
message can be rewritten to exactly what the listener heard when speech is cut, and so
the response knows when its last word has been played.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from .speech import Cut, SpeechOutput, Utterance

_utterance_ids = itertools.count(1)


@dataclass
class _Spoken:
    utterance: Utterance
    tag: int | None
    heard: int = 0
    done: bool = False
    started: bool = False


class SpeechTracker:
    def __init__(
        self,
        output: SpeechOutput,
        response_id: int,
        on_speak: Callable[[], None] = lambda: None,
    ) -> None:
        self.output = output
        self.response_id = response_id
        #: Called whenever words are handed to the output.
        self.on_speak = on_speak
        self._spoken: dict[int, _Spoken] = {}
        self._all_done = asyncio.Event()
        self._all_done.set()
        #: Set whenever any utterance finishes or is cut; waiters re-check their own.
        self._changed = asyncio.Event()
        self._done_callbacks: dict[int, Callable[[], None]] = {}

    def speak(
        self,
        text: str,
        tag: int | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> Utterance:
        """Queue ``text`` on the output; ``on_done`` runs once it has been fully played."""
        utterance = Utterance(next(_utterance_ids), text, self.response_id)
        self._spoken[utterance.id] = _Spoken(utterance, tag)
        if on_done is not None:
            self._done_callbacks[utterance.id] = on_done
        self._all_done.clear()
        self.on_speak()
        self.output.speak(utterance)
        return utterance

    def owns(self, utterance_id: int) -> bool:
        return utterance_id in self._spoken

    def text(self, utterance_id: int) -> str:
        return self._spoken[utterance_id].utterance.text

    def started(self, utterance_id: int) -> None:
        self._spoken[utterance_id].started = True

    def finished(self, utterance_id: int) -> None:
        s = self._spoken[utterance_id]
        s.heard, s.done = len(s.utterance.text), True
        callback = self._done_callbacks.pop(utterance_id, None)
        if callback is not None:
            callback()
        self._check()

    def cut(self, cut: Cut | None) -> None:
        """Speech was stopped: the playing utterance got ``cut``; the queued ones nothing."""
        for s in self._spoken.values():
            if s.done:
                continue
            s.done = True
            s.heard = cut.heard_chars if cut and cut.utterance_id == s.utterance.id else 0
        self._done_callbacks.clear()
        self._check()

    def started_any(self, tag: int) -> bool:
        """Whether any utterance under ``tag`` has started to play."""
        return any(s.started for s in self._spoken.values() if s.tag == tag)

    def drop(self, tag: int) -> list[int]:
        """Forget the utterances under ``tag`` (none has started): they count as done,
        unheard. Returns their ids, for the output to drop from its queue."""
        dropped = [i for i, s in self._spoken.items() if s.tag == tag and not s.done]
        for i in dropped:
            self._spoken[i].done = True
            self._done_callbacks.pop(i, None)
        self._check()
        return dropped

    def remainder(self, cut: Cut | None) -> list[str]:
        """What a cut is about to stop: the playing sentence, whole, and the queued ones."""
        return [
            s.utterance.text
            for s in self._spoken.values()
            if not s.done
            and (not s.started or (cut is not None and cut.utterance_id == s.utterance.id))
        ]

    async def drain(self) -> None:
        """Return once every queued utterance was played (or cut)."""
        await self._all_done.wait()

    async def spoken(self, utterance: Utterance) -> None:
        """Return once one utterance was played (or cut)."""
        while not self._spoken[utterance.id].done:
            await self._wait_change()

    def heard(self, tag: int) -> str:
        """The words spoken under ``tag`` that reached the listener, in order."""
        return "".join(s.utterance.text[: s.heard] for s in self._spoken.values() if s.tag == tag)

    def _check(self) -> None:
        self._changed.set()
        if all(s.done for s in self._spoken.values()):
            self._all_done.set()

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()
