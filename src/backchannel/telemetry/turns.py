"""A turn's latency: from the end of the caller's speech to the assistant's first
audio, split into the stages that follow one another.

* **vad**: end of speech → end of the turn (the pause, and the turn model's verdict);
* **stt**: → the final transcript;
* **llm**: → the first words handed to speech (the model's first clause, a tool's
  start line or a fixed line);
* **tts**: → the first audio frame sent.

The stages add up to the total. A typed turn (a text call) has no vad or stt. A turn
is *answered* by the first audio after it; one the caller talks over before that is
dropped, and the next turn is timed from its own end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Clock

STAGES = ("vad", "stt", "llm", "tts")


@dataclass(frozen=True, slots=True)
class TurnLatency:
    #: The caller's turns in this call, counted from 1.
    index: int
    #: Wall-clock seconds: the end of the caller's speech (of the typed message).
    speech_ended: float
    vad: float | None
    stt: float | None
    llm: float
    tts: float

    @property
    def total(self) -> float:
        return (self.vad or 0.0) + (self.stt or 0.0) + self.llm + self.tts

    def stages(self) -> dict[str, float]:
        """Each stage that applies, in order, in seconds."""
        values = {"vad": self.vad, "stt": self.stt, "llm": self.llm, "tts": self.tts}
        return {name: v for name, v in values.items() if v is not None}

    def to_event(self) -> dict[str, object]:
        """The ``turn-latency`` event's fields: milliseconds, camelCase."""
        return {
            "turn": self.index,
            "speechEndedAt": int(self.speech_ended * 1000),
            "latencyMs": {k: round(v * 1000) for k, v in self.stages().items()}
            | {"total": round(self.total * 1000)},
        }


class TurnTimer:
    """Marks a call's turns as they pass; ``answered`` gets each one that is answered.

    ``opened`` hears a turn the moment its transcript is final, with the time its
    speech ended, so whatever answers it (a model request's span) can be placed
    inside it. Responses are numbered as they start (:meth:`response_started`): only
    one begun after the turn answers it, not the rest of an earlier one."""

    def __init__(
        self,
        clock: Clock,
        answered: Callable[[TurnLatency], None],
        *,
        opened: Callable[[float], None] = lambda _at: None,
        dropped: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock
        self._answered = answered
        self._opened = opened
        self._dropped = dropped
        self._count = 0
        self._speech_ended: float | None = None
        self._turn_ended: float | None = None
        self._heard: float | None = None
        self._replied: float | None = None
        self._responses = 0  # responses started so far
        self._answer_from = 0  # the last one started before the open turn

    def response_started(self) -> int:
        """A response starts: its number, for :meth:`replied` and :meth:`audible`."""
        self._responses += 1
        return self._responses

    def restart(self) -> None:
        """The caller speaks again, or their turn brought no words: a turn still
        unanswered is dropped, and the next is timed from its own end."""
        if self._heard is not None:
            self._dropped()
        self._speech_ended = self._turn_ended = self._heard = self._replied = None

    def turn_ended(self, silent_for: float = 0.0, *, ago: float = 0.0) -> None:
        """The caller's turn ended ``ago`` seconds ago, ``silent_for`` seconds after
        their last word (a turn heard over the assistant is known to be one only once
        it is transcribed)."""
        ended = self.clock.wall() - max(0.0, ago)
        self._speech_ended, self._turn_ended = ended - max(0.0, silent_for), ended

    def transcribed(self) -> None:
        """The turn's final transcript (with words) is in: the turn is open."""
        if self._heard is not None:
            return  # the same turn heard twice (a cut response's words): keep the first
        self._heard = self.clock.wall()
        self._answer_from = self._responses
        self._count += 1
        self._opened(self._speech_ended if self._speech_ended is not None else self._heard)

    def _answers(self, response: int | None) -> bool:
        """Whether the response numbered so (``None``: any) answers the open turn."""
        return self._heard is not None and (response is None or response > self._answer_from)

    def replied(self, response: int | None = None) -> None:
        """A response handed words to speech: the first after the turn is its reply."""
        if self._answers(response) and self._replied is None:
            self._replied = self.clock.wall()

    def audible(self, response: int | None = None) -> None:
        """A response's audio started: the open turn is answered."""
        heard, spoken = self._heard, self._speech_ended
        if heard is None or not self._answers(response):
            return
        now = self.clock.wall()
        replied = min(max(self._replied or now, heard), now)
        if spoken is None or self._turn_ended is None:  # typed
            latency = TurnLatency(self._count, heard, None, None, replied - heard, now - replied)
        else:
            ended = max(self._turn_ended, spoken)
            latency = TurnLatency(
                self._count,
                spoken,
                ended - spoken,
                max(0.0, heard - ended),
                replied - heard,
                now - replied,
            )
        self._speech_ended = self._turn_ended = self._heard = self._replied = None
        self._answered(latency)
