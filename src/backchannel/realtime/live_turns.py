"""The caller's turns as Gemini Live's own VAD hears them (``turnDetection: server_vad``).

Live reports little of a turn: pieces of its input transcription, a ``finished`` mark
that not every model sends (the native-audio models never do; others mark every
piece), and, at the turn's end, its own answer to it. :class:`CallerTurns` makes of
these, and of the loudness of the audio the caller sends, the events the call's input
side takes (:class:`~backchannel.realtime.listening.RealtimeInput`, named as Realtime
names them): a turn starts with the first words transcribed, the caller's quiet (0.5 s)
says they stopped, their words go to the call as they come (:data:`CALLER_WORDS`), and
the turn ends with its whole transcript when Live answers it, or when a ``finished``
transcript finds the caller quiet.

It tracks the turns only; what becomes of Live's answers is the model's
(:mod:`.live_model`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..voice.audio import Samples
from .mirror import UNHEARD

log = logging.getLogger("backchannel.realtime")

#: A frame of the caller's audio at least this loud (RMS of PCM16) is speech, not quiet.
LOUD_RMS = 300.0
#: Words transcribed after this much quiet (1.5 s at 16 kHz) belong to a turn that ended.
LATE_WORDS_SAMPLES = 24_000
#: After this much quiet (0.5 s at 16 kHz) the caller has stopped speaking: the call is
#: told so at once, though the turn ends only with the server's answer to it (or its
#: transcript's ``finished``), which may wait for the answer in progress to be written.
QUIET_SAMPLES = 8_000
#: A piece of the caller's words in a turn, told to the call's input side as it comes.
CALLER_WORDS = "backchannel.caller_words"


class CallerTurns:
    def __init__(self, tell: Callable[[dict[str, Any]], None]) -> None:
        self._tell = tell
        self._ids = itertools.count(1)
        #: The turn in progress (its item) and its words so far.
        self.turn: str | None = None
        self._hearing = ""
        #: The turns ended, by item: their words, until matched to the call's history.
        self.spoken: dict[str, str | None] = {}
        #: Samples of the caller's audio since it was last loud.
        self._since_loud = LATE_WORDS_SAMPLES + 1
        #: The call was told the caller of the turn in progress went quiet.
        self._quiet_told = False
        #: The turn's transcript was marked ``finished`` while the caller was not quiet.
        self._finished_early = False
        #: A turn answered before its words came: it ends with its answer's generation.
        self._words_late = False
        #: A turn ended whose answer the server has not started yet.
        self._ended = False

    def hear(self, samples: Samples) -> None:
        """The caller's audio, as it goes to the server: its loudness tells new speech
        from a late transcript, and a pause from the turn's end."""
        if samples.size and float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) >= LOUD_RMS:
            self._since_loud = 0
            if self.turn is not None and self._quiet_told:
                # The caller speaks again in the same turn (a pause, not its end).
                self._quiet_told = False
                self._tell({"type": "input_audio_buffer.speech_started", "item_id": self.turn})
        else:
            self._since_loud += samples.size
            self._check_quiet()

    def words(self, text: str) -> None:
        """A piece of the server's transcript of the caller: a turn starts, or goes on.
        Words that come when the caller has been quiet a while are a late transcript of
        a turn already ended, not a new one (the reference orders transcripts with
        nothing)."""
        if self.turn is None:
            if self._since_loud > LATE_WORDS_SAMPLES:
                log.debug("gemini live: late words of an ended turn: %r", text)
                return
            self._open()
        self._hearing += text
        self._tell({"type": CALLER_WORDS, "item_id": self.turn, "delta": text})
        self._check_quiet()

    def finished(self) -> None:
        """The transcript was marked ``finished``: the turn ends once the caller is
        quiet (some models mark every piece)."""
        if self.turn is None:
            return
        if self._since_loud >= QUIET_SAMPLES:
            self.end()
        else:
            self._finished_early = True

    def answered(self) -> None:
        """The server started an answer on its own: its VAD ended a turn. A turn it
        answered before its words were transcribed ends with that answer's generation
        (:meth:`generation_over`), by when its words have come."""
        ended, self._ended = self._ended, False
        if self.turn is None and not ended and self._since_loud <= LATE_WORDS_SAMPLES:
            self._open()
            self._words_late = True
        else:
            self.end()

    def generation_over(self) -> None:
        """A generation ended: a turn answered before its words ends now (with no words
        at all, as :data:`UNHEARD`)."""
        if self._words_late:
            self.end(unheard=UNHEARD)

    def end(self, *, unheard: str = "") -> None:
        """The turn in progress ended: the call is told, with its words (``unheard``
        if none came)."""
        self._words_late = self._finished_early = False
        turn, text = self.turn, " ".join(self._hearing.split()) or unheard
        self.turn, self._hearing = None, ""
        if turn is None:
            return
        self._ended = True  # its answer is the next the server starts
        self.spoken[turn] = text
        self._tell({"type": "input_audio_buffer.speech_stopped", "item_id": turn})
        self._tell(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": turn,
                "transcript": text,
            }
        )

    def reset(self, *, resumed: bool) -> None:
        """The session was lost: the turn in progress is gone with it (a new session has
        none of the caller's audio, so neither has it their ended turns)."""
        self.turn, self._hearing = None, ""
        self._ended = self._words_late = self._quiet_told = self._finished_early = False
        if not resumed:
            self.spoken.clear()

    def _open(self) -> None:
        self.turn = f"live_turn_{next(self._ids)}"
        self._quiet_told = self._finished_early = False
        self._tell({"type": "input_audio_buffer.speech_started", "item_id": self.turn})

    def _check_quiet(self) -> None:
        """Tell the call once the caller of the turn in progress has gone quiet: Live
        tells only when it answers, and with the answer in progress written first
        (``NO_INTERRUPTION``) that can be seconds later. Speech over the answer is
        weighed from here on by its words, not by how long the server takes."""
        if self.turn is None or self._quiet_told or self._since_loud < QUIET_SAMPLES:
            return
        if self._finished_early:
            self.end()
            return
        self._quiet_told = True
        self._tell({"type": "input_audio_buffer.speech_stopped", "item_id": self.turn})
