"""A voice call's input side with a speech-to-speech model: microphone audio to the
model, the server's turn detection and transcripts to the call.

:class:`RealtimeInput` takes the transport's frames like a
:class:`~backchannel.voice.session.VoiceSession` does (``feed``), resamples them to the
model's 24 kHz and appends them to the session's input buffer. The server's VAD reports
the caller's turns (``speech_started`` / ``speech_stopped``) and its transcription the
caller's words; they reach the call as they would from the pipeline, so the arbiter
decides who speaks next: a barge-in cuts the model's answer, a result that arrives while
the caller talks waits for the end of their turn.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from ..voice.audio import StreamResampler, to_samples
from .model import RealtimeLLM
from .voice import MODEL_RATE

if TYPE_CHECKING:
    from ..call import Call

log = logging.getLogger("backchannel.realtime")


class RealtimeInput:
    def __init__(self, call: Call, model: RealtimeLLM, *, rate: int) -> None:
        self.call = call
        self.model = model
        self._resample = StreamResampler(rate, MODEL_RATE)
        self._speaking = False
        model.listener = self._heard
        #: The session's connection lives as long as the call.
        call.spawn(model.link.run(), guard=False)

    def feed(self, pcm: bytes) -> None:
        """Take one frame of microphone audio; dropped while the customer is muted."""
        if self.call.customer_muted:
            return
        samples = self._resample(to_samples(pcm))
        if samples.size:
            audio = base64.b64encode(samples.astype("<i2").tobytes()).decode()
            self.model.link.post({"type": "input_audio_buffer.append", "audio": audio})

    def _heard(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.speech_started":
            self._speaking = True
            self.call.user_started_speaking()
        elif kind == "input_audio_buffer.speech_stopped":
            if self._speaking:
                self._speaking = False
                self.call.user_stopped_speaking()
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.call.user_transcript(str(event.get("transcript") or "").strip())
        elif kind == "conversation.item.input_audio_transcription.failed":
            log.warning("call %s: the model could not transcribe a turn", self.call.call_id)
            self.call.user_transcript("")
