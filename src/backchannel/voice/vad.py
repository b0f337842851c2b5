"""Voice activity: a per-window speech probability, and turns built from it.

:class:`VAD` implementations score fixed windows of 16 kHz audio. :class:`TurnDetector`
turns scores into "started speaking" / "stopped speaking" with the usual hysteresis: speech
must last ``start_secs`` to open a turn and silence ``stop_secs`` to close it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .audio import RATE, Samples, rms_dbfs, to_float


class VAD(Protocol):
    #: Samples per window the model scores (at 16 kHz).
    window: int

    def score(self, window: Samples) -> float:
        """Probability in [0, 1] that this window is speech."""
        ...

    def reset(self) -> None: ...


def silero_model_path() -> Path:
    """Silero VAD v6 as shipped in faster-whisper's assets (no download at run time)."""
    import faster_whisper

    return Path(os.path.dirname(faster_whisper.__file__)) / "assets" / "silero_vad_v6.onnx"


def onnx_session(path: Path) -> Any:
    """An onnxruntime session on the CPU, one thread: the small voice models (Silero,
    Smart Turn) run beside each other and beside the LLM on a few cores."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


#: Windows louder than this (RMS, -30 dBFS) are scaled down to it before Silero scores
#: them: at -10 dBFS, or clipping at -3, a question opened its turn up to 0.6 s late (or,
#: clipped, not at all); scaled, 0.28-0.38 s in, as at conversational levels. Quieter
#: windows are left alone, and 10 s of white or brown noise up to -3 dBFS still opens
#: nothing.
LOUDEST = 10 ** (-30 / 20)


class SileroVAD:
    """Silero VAD v6 (ONNX) through onnxruntime, one thread, 512-sample windows."""

    window = 512
    _context = 64

    def __init__(self, model_path: Path | None = None, *, session: Any = None) -> None:
        self.session = session or self.load(model_path)
        self.reset()

    @staticmethod
    def load(model_path: Path | None = None) -> Any:
        """An onnxruntime session for the model. The session holds no per-stream state
        (that travels in ``h``, ``c`` and the context), so one can serve every call."""
        return onnx_session(model_path or silero_model_path())

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._last = np.zeros((1, self._context), dtype=np.float32)

    def score(self, window: Samples) -> float:
        """Score one 512-sample window, carrying the LSTM state and 64 samples of context
        from the window before (the layout of the v6 export in faster-whisper). A window
        louder than :data:`LOUDEST` is scored at that level."""
        audio = to_float(window).reshape(1, -1)
        rms = float(np.sqrt(np.mean(audio**2)))
        if rms > LOUDEST:  # a loud (or clipping) caller, brought down to where Silero
            audio = audio * (LOUDEST / rms)  # hears speech best
        x = np.concatenate([self._last, audio], axis=1)
        out, self._h, self._c = self.session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._last = audio[:, -self._context :]
        return float(np.asarray(out).reshape(-1)[0])


class EnergyVAD:
    """Loudness against a threshold: nearly free, but it calls loud noise speech."""

    window = 320

    def __init__(self, threshold_dbfs: float = -40.0) -> None:
        self.threshold = threshold_dbfs

    def reset(self) -> None:
        return None

    def score(self, window: Samples) -> float:
        return 1.0 if rms_dbfs(window) > self.threshold else 0.0


NARROWBAND_CONFIDENCE = 0.3


class Activity(StrEnum):
    STARTED = "started"
    #: Silence of ``pause_secs`` within a turn: a moment to check whether it is over.
    PAUSED = "paused"
    #: Speech again after a pause, within the same turn.
    RESUMED = "resumed"
    STOPPED = "stopped"


#: Scores this far below the confidence still count as "maybe speech" (Silero's own
#: iterator uses the same gap): they neither add to a run nor break it.
HYSTERESIS = 0.15
#: Between turns, the VAD starts afresh after this much silence. Silero's recurrent
#: state drifts over a long silence: after 30 s of it (digital, or a -60 dBFS noise
#: floor) a question opened its turn 0.6-1 s late or never, at 16 kHz and on the
#: telephone alike; with the reset, 0.28-0.36 s in, as after a short pause.
RESET_AFTER_SECONDS = 2.0


@dataclass
class TurnDetector:
    """Hysteresis over VAD scores: ``start_secs`` of speech opens, ``stop_secs`` closes.

    Within a turn, ``pause_secs`` of silence reports a pause, and so does each of the
    longer ``later_pauses`` (each once, until speech comes back): the session then asks
    the turn model whether the speaker is done and ends the turn early with
    :meth:`end_turn`; ``stop_secs`` is the fallback for a turn the model judges
    unfinished (or when there is no model).

    A window scoring at least ``confidence`` is speech; one below ``confidence -
    HYSTERESIS`` is silence; one in between changes nothing. Without that band, a
    single soft window in the middle of a word restarted the count, and telephone
    audio, which Silero scores lower, sometimes never opened a turn at all.

    Between turns the VAD's state is reset every :data:`RESET_AFTER_SECONDS` of silence,
    so the first words after any length of it are heard as after a short pause.
    """

    vad: VAD
    confidence: float = 0.7
    start_secs: float = 0.2
    stop_secs: float = 0.5
    pause_secs: float = 0.2
    later_pauses: tuple[float, ...] = ()

    @classmethod
    def for_rate(cls, vad: VAD, rate: int) -> TurnDetector:
        """A detector tuned to the caller's audio band. Silero scores telephone audio
        (8 kHz, µ-law) lower, above all a phrase's first syllables: with 0.5 (Silero's
        own default) a third of Piper's renditions of "Please transfer me to a person."
        opened the turn 0.6 to 1.6 s late or not at all, and the transcript lost its
        first words. 0.3 opened all 120 renditions tried within 0.6 s, and still opened
        nothing on 10 s of µ-law white noise up to -21 dBFS (RMS)."""
        return cls(vad, confidence=NARROWBAND_CONFIDENCE if rate <= 8_000 else 0.7)

    def __post_init__(self) -> None:
        self.speaking = False
        self.paused = False
        #: Seconds of audio since the last window heard as speech.
        self.silent_for = 0.0
        self._run = 0.0
        self._marks = 0  # pauses reported in this silence
        self._quiet = 0.0  # silence since the VAD's state was last fresh, between turns
        self._pending = np.zeros(0, dtype=np.int16)

    def end_turn(self) -> None:
        """The turn was judged over before ``stop_secs``: listen for the next one."""
        self.speaking, self.paused, self._run, self._marks = False, False, 0.0, 0

    def feed(self, samples: Samples) -> list[Activity]:
        """Score the new audio window by window; the changes it caused, in order."""
        self._pending = np.concatenate([self._pending, samples])
        changes: list[Activity] = []
        step = self.vad.window
        seconds = step / RATE
        while self._pending.size >= step:
            window, self._pending = self._pending[:step], self._pending[step:]
            score = self.vad.score(window)
            if score >= self.confidence:
                heard: bool | None = True
            elif score < self.confidence - HYSTERESIS:
                heard = False
            else:
                heard = None  # maybe speech: keep the run as it is
            if heard is None:
                self._quiet = 0.0  # maybe speech: only unbroken silence resets
                continue
            self.silent_for = 0.0 if heard else self.silent_for + seconds
            if not heard and not self.speaking:
                self._quiet += seconds
                if self._quiet >= RESET_AFTER_SECONDS:
                    self.vad.reset()
                    self._quiet = 0.0
            else:
                self._quiet = 0.0
            if heard != self.speaking:
                self._run += seconds
                marks = (self.pause_secs, *self.later_pauses)
                if self.speaking and self._marks < len(marks) and self._run >= marks[self._marks]:
                    self.paused, self._marks = True, self._marks + 1
                    changes.append(Activity.PAUSED)
                if self._run >= (self.start_secs if heard else self.stop_secs):
                    self.speaking, self.paused, self._run, self._marks = heard, False, 0.0, 0
                    changes.append(Activity.STARTED if heard else Activity.STOPPED)
            else:
                self._run = 0.0
                if heard and self.paused:
                    self.paused, self._marks = False, 0
                    changes.append(Activity.RESUMED)
        return changes
