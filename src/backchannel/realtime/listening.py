"""A voice call's input side with a speech-to-speech model: microphone audio to the
model, the server's turn detection and transcripts to the call.

:class:`RealtimeInput` takes the transport's frames like a
:class:`~backchannel.voice.session.VoiceSession` does (``feed``), resamples them to the
model's 24 kHz and appends them to the session's input buffer. The server's VAD reports
the caller's turns (``speech_started`` / ``speech_stopped``) and its transcription the
caller's words; they reach the call as they would from the pipeline, so the arbiter
decides who speaks next: a barge-in cuts the model's answer, a result that arrives while
the caller talks waits for the end of their turn.

Speech over the assistant is weighed by the assistant's ``stopSpeakingPlan`` as with
the pipeline (:mod:`backchannel.voice.interruption`): it cuts once it lasts longer than an
acknowledgement, or once its transcript has words that are not one; "mm-hmm" and a
cough let the answer go on. With ``turnDetection: backchannel`` the pipeline's own input
side (Silero, the turn model, Whisper) does all of this instead, and the model gets each
turn's audio when the call takes the turn.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import TYPE_CHECKING, Any

from ..voice.audio import StreamResampler, to_samples
from ..voice.interruption import MAX_ACKNOWLEDGEMENT_SECONDS, Interruptions
from ..voice.session import CallInput
from .model import SESSION_REOPENED, RealtimeLLM
from .voice import MODEL_RATE

if TYPE_CHECKING:
    from ..call import Call

log = logging.getLogger("backchannel.realtime")


class RealtimeInput:
    def __init__(
        self, call: Call, model: RealtimeLLM, *, rate: int, session: CallInput | None = None
    ) -> None:
        self.call = call
        self.model = model
        #: With ``turnDetection: backchannel``, the pipeline's input side finds the
        #: caller's turns and words; the audio still goes to the model.
        self.session = session
        self.interruptions = Interruptions(call.assistant.stop_speaking_plan)
        self._resample = StreamResampler(rate, MODEL_RATE)
        #: The caller's turn is open and the call knows it.
        self._speaking = False
        #: Speech over the assistant that has not cut it (yet); and once it has ended,
        #: its transcript decides.
        self._tentative = False
        self._weighing = False
        self._timer: asyncio.Task[None] | None = None
        #: What was let pass over the assistant (acknowledgements, sounds).
        self.let_pass: list[str] = []
        model.listener = self._heard
        #: The session's connection lives as long as the call.
        call.spawn(model.link.run(), guard=False)

    def feed(self, pcm: bytes) -> None:
        """Take one frame of microphone audio; dropped while the customer is muted."""
        if self.call.customer_muted:
            return
        if self.session is not None:
            self.session.feed(pcm)
        samples = self._resample(to_samples(pcm))
        if samples.size:
            audio = base64.b64encode(samples.astype("<i2").tobytes()).decode()
            self.model.link.post({"type": "input_audio_buffer.append", "audio": audio})

    def _heard(self, event: dict[str, Any]) -> None:
        if self.session is not None:
            return  # the call's own VAD and recogniser speak for the caller
        kind = event["type"]
        if kind == "input_audio_buffer.speech_started":
            self._started()
        elif kind == "input_audio_buffer.speech_stopped":
            self._stopped()
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._transcript(str(event.get("transcript") or "").strip())
        elif kind == "conversation.item.input_audio_transcription.failed":
            log.warning("call %s: the model could not transcribe a turn", self.call.call_id)
            self._transcript("")
        elif kind == SESSION_REOPENED:
            self._cancel_timer()
            self._tentative = self._weighing = False
            if self._speaking:  # that turn is gone with the session
                self._stopped()
                self._transcript("")

    def _started(self) -> None:
        if self.call.assistant_speaking and self.interruptions.enabled:
            self._tentative, self._weighing = True, False
            self._cancel_timer()
            self._timer = self.call.spawn(self._too_long())
        else:
            self._commit()

    def _stopped(self) -> None:
        self._cancel_timer()
        if self._tentative:
            self._tentative, self._weighing = False, True  # its words decide
        elif self._speaking:
            self._speaking = False
            self.call.user_stopped_speaking()

    def _transcript(self, text: str) -> None:
        if self._weighing:
            self._weighing = False
            if not self.interruptions.cuts(text, final=True):
                log.debug("call %s: not an interruption: %r", self.call.call_id, text)
                self.let_pass.append(text)
                self.model.forget_turn()
                return
            self._commit()
            self._speaking = False
            self.call.user_stopped_speaking()
        self.call.user_transcript(text)

    def _commit(self) -> None:
        """The caller's turn is real: it cuts the assistant, if it is speaking."""
        self._tentative = False
        self._speaking = True
        self.call.user_started_speaking()

    async def _too_long(self) -> None:
        await self.call.clock.sleep(MAX_ACKNOWLEDGEMENT_SECONDS)
        if self._tentative:
            self._commit()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
