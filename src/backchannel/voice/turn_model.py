"""End of turn by meaning: Smart Turn v3 (ONNX) on the turn's own audio.

Silence alone cannot tell "Do you ship to Canada?" from "my order number is… uh": both
go quiet. The turn model hears the last 8 s of the turn (intonation, a trailing filler,
an unfinished clause) and says how likely it is that the speaker is done, so a finished
sentence can end the turn after a short pause while an unfinished one waits.

The weights are Smart Turn v3.2 (CPU build, 8.7 MB, BSD-2-Clause), as shipped inside the
pinned ``pipecat-ai`` wheel on PyPI. ``backchannel model fetch`` extracts that one file
once and checks its sha256; nothing is downloaded at run time, and without the file
turns end on silence alone.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError
from ..llm.local_models import download_wheel, models_dir
from .audio import RATE, Samples, to_float
from .vad import onnx_session

log = logging.getLogger("backchannel.voice")


class TurnModel(Protocol):
    def complete(self, audio: Samples) -> float:
        """Probability in [0, 1] that the speaker has finished, from the turn's audio
        (16 kHz) up to now."""
        ...


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """One file inside a pinned wheel, known by its sha256."""

    filename: str
    package: str
    member: str
    sha256: str
    size: int


SMART_TURN = PinnedFile(
    filename="smart-turn-v3.2-cpu.onnx",
    package="pipecat-ai==1.14.0",
    member="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    size=8_679_182,
)


def turn_model_path(directory: Path | None = None) -> Path:
    return (directory or models_dir()) / SMART_TURN.filename


def installed_turn_model(directory: Path | None = None) -> Path | None:
    """The extracted model, or ``None`` when ``backchannel model fetch`` has not run."""
    path = turn_model_path(directory)
    return path if path.is_file() and path.stat().st_size == SMART_TURN.size else None


def fetch_turn_model(
    directory: Path | None = None,
    *,
    download: Callable[[str, Path], Path] = download_wheel,
) -> Path:
    """Extract the model from its pinned wheel and verify it; renamed into place only
    once its sha256 matches."""
    target = turn_model_path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = download(SMART_TURN.package, Path(tmp))
        partial = Path(tmp) / SMART_TURN.filename
        with zipfile.ZipFile(wheel) as archive:
            try:
                with archive.open(SMART_TURN.member) as source, partial.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
            except KeyError:
                raise ConfigError(f"{wheel.name} holds no {SMART_TURN.member}") from None
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if digest != SMART_TURN.sha256:
            raise ConfigError(
                f"{SMART_TURN.filename} has sha256 {digest}, expected {SMART_TURN.sha256}; "
                "the file was discarded"
            )
        shutil.move(partial, target)
    return target


#: The model hears at most this much of the turn, the most recent part.
WINDOW_SECONDS = 8


class SmartTurn:
    """Smart Turn v3 through onnxruntime, one thread; about 15 ms a check on this CPU.

    The input is the Whisper log-mel spectrogram (80 bins, 10 ms hop) of the last 8 s,
    zero-padded in front, computed by faster-whisper's feature extractor on audio
    normalised to zero mean and unit variance, as the model was trained.
    """

    def __init__(self, model_path: Path | None = None, *, session: Any = None) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self.session = session or self.load(model_path)
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_SECONDS)

    @staticmethod
    def load(model_path: Path | None = None) -> Any:
        path = model_path or installed_turn_model()
        if path is None:
            raise ConfigError("the turn model is not installed; run `backchannel model fetch` once")
        return onnx_session(path)

    def features(self, audio: Samples) -> np.ndarray[Any, np.dtype[np.float32]]:
        size = WINDOW_SECONDS * RATE
        x = to_float(audio[-size:]).astype(np.float64)
        x = np.pad(x, (size - x.size, 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        mel = self._features(x.astype(np.float32), padding=0)
        return np.asarray(mel[:, : WINDOW_SECONDS * 100], dtype=np.float32)[None]

    def complete(self, audio: Samples) -> float:
        (out,) = self.session.run(None, {"input_features": self.features(audio)})
        return float(np.asarray(out).reshape(-1)[0])


def load_turn_model() -> TurnModel | None:
    """The installed turn model, or ``None`` (logged once) when it is not there."""
    path = installed_turn_model()
    if path is None:
        log.warning(
            "the turn model is not installed (`backchannel model fetch`); "
            "turns end on silence alone"
        )
        return None
    return SmartTurn(path)
