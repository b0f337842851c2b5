"""A voice call's input side with a speech-to-speech model: microphone audio to the
model, the server's turn detection and transcripts to the call.

:class:`RealtimeInput` takes the transport's frames like a
:class:`~backchannel.voice.session.VoiceSession` does (``feed``), resamples them to the
model's input rate and hands them to the model (``hear``). The server's VAD reports
the caller's turns (``speech_started`` / ``speech_stopped``, each under the item the turn
becomes) and its transcription the caller's words; they reach the call as they would
from the pipeline, so the arbiter decides who speaks next: a barge-in cuts the model's
answer, a result that arrives while the caller talks waits for the end of their turn.

Speech over the assistant is weighed by the assistant's ``stopSpeakingPlan`` as with
the pipeline (:mod:`backchannel.voice.interruption`): it cuts once it lasts longer than an
acknowledgement, or once its transcript has words that are not one; "mm-hmm" and a
cough let the answer go on, and their item is taken out of the session.

With ``turnDetection: backchannel`` the pipeline's own input side (Silero, the turn model,
Whisper) does all of this instead; the model gets the caller's turns as the call heard
them, in words.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..voice.audio import StreamResampler, to_samples
from ..voice.interruption import MAX_ACKNOWLEDGEMENT_SECONDS, Interruptions
from ..voice.session import CallInput
from .live_model import LiveLLM
from .live_turns import CALLER_WORDS
from .mirror import UNHEARD
from .model import SESSION_REOPENED, RealtimeLLM

if TYPE_CHECKING:
    from ..call import Call

log = logging.getLogger("backchannel.realtime")

#: How long the words of speech over the answer must stand unchanged, once the caller is
#: quiet, to be taken as all they said (a transcript comes in pieces).
SETTLE_SECONDS = 0.3


class _Turn(StrEnum):
    TENTATIVE = "tentative"  # over the assistant, not (yet) cutting it
    WEIGHING = "weighing"  # over the assistant and ended: its words decide
    OPEN = "open"  # a turn the call knows of, still going
    ENDED = "ended"  # the call knows it ended; its transcript is awaited


class RealtimeInput:
    def __init__(
        self,
        call: Call,
        model: RealtimeLLM | LiveLLM,
        *,
        rate: int,
        session: CallInput | None = None,
    ) -> None:
        if model.ours and session is None:
            raise ConfigError("turnDetection backchannel needs the call's own input side")
        self.call = call
        self.model = model
        #: With ``turnDetection: backchannel``: the pipeline's input side.
        self.session = session
        self.interruptions = Interruptions(call.assistant.stop_speaking_plan)
        self._resample = StreamResampler(rate, model.input_rate)
        #: The caller's turns the server reported, by item id, until transcribed.
        self._turns: dict[str, _Turn] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._settling: dict[str, asyncio.Task[None]] = {}
        #: Where each turn's audio began in the session's input (ms), by item.
        self._began: dict[str, int | None] = {}
        #: Each turn's words so far, while it is not transcribed whole.
        self._words: dict[str, str] = {}
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
            self.session.feed(pcm)  # the call hears the caller; the model gets words
            return
        samples = self._resample(to_samples(pcm))
        if samples.size:
            self.model.hear(samples)

    def _heard(self, event: dict[str, Any]) -> None:
        if self.session is not None:
            return  # the pipeline's input side speaks for the caller
        kind, item = event["type"], str(event.get("item_id"))
        if kind == "input_audio_buffer.speech_started":
            self._began[item] = _ms(event.get("audio_start_ms"))
            self._started(item)
        elif kind == "input_audio_buffer.speech_stopped":
            began = self._began.pop(item, None)
            ended = _ms(event.get("audio_end_ms"))
            lasted = (ended - began) / 1000 if began is not None and ended is not None else 0.0
            self._stopped(item, lasted)
        elif kind == CALLER_WORDS:
            self._heard_words(item, str(event.get("delta") or ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._transcript(item, str(event.get("transcript") or "").strip())
        elif kind == "conversation.item.input_audio_transcription.failed":
            # The model has the turn's audio: a turn of the caller's is answered from it,
            # with no words in the call's history; speech over the answer has none that
            # cut, and is let pass.
            log.warning("call %s: the model could not transcribe a turn", self.call.call_id)
            self._transcript(item, UNHEARD)
        elif kind == SESSION_REOPENED:
            self._reopened()

    def _started(self, item: str) -> None:
        self._cancel_timer(item)  # the same turn again, after a pause
        if self._turns.get(item) in (_Turn.OPEN, _Turn.ENDED):
            self._open(item)  # a turn the call knows of goes on
        elif self.call.assistant_speaking and self.interruptions.enabled:
            self._turns[item] = _Turn.TENTATIVE
            self._timers[item] = self.call.spawn(self._too_long(item))
        else:
            self._open(item)

    def _stopped(self, item: str, lasted: float) -> None:
        """The server's VAD says the turn ended, after ``lasted`` seconds of its audio."""
        self._cancel_timer(item)
        state = self._turns.get(item)
        if state is _Turn.TENTATIVE and self.interruptions.too_long(lasted):
            # Longer than an acknowledgement, by the audio (which may come faster than
            # real time): a turn of its own, whatever its words.
            self._open(item)
            state = _Turn.OPEN
        if state is _Turn.TENTATIVE:
            self._turns[item] = _Turn.WEIGHING
            if self._words.get(item):
                self._settle(item)
        elif state is _Turn.OPEN:
            self._turns[item] = _Turn.ENDED
            self.call.user_stopped_speaking()

    def _heard_words(self, item: str, delta: str) -> None:
        """Words of speech over the answer so far (Live tells a turn's whole transcript
        only when it answers it, which may wait for the answer it is writing): they cut
        the answer without waiting for it, as the pipeline's partial transcripts do, when
        they hold an interruption phrase or two pieces in a row are more than an
        acknowledgement ("I" alone is, "I see" may not be); once the caller is quiet,
        when they stand unchanged a moment."""
        before = self._words.get(item, "")
        words = self._words[item] = before + delta
        state = self._turns.get(item)
        if state not in (_Turn.TENTATIVE, _Turn.WEIGHING):
            return
        cuts = self.interruptions.cuts
        if self.interruptions.urgent(words) or (cuts(before) and cuts(words)):
            self._cut_in(item)
        elif state is _Turn.WEIGHING:
            self._settle(item)

    def _settle(self, item: str) -> None:
        if (timer := self._settling.pop(item, None)) is not None:
            timer.cancel()
        self._settling[item] = self.call.spawn(self._settled(item))

    async def _settled(self, item: str) -> None:
        await self.call.clock.sleep(SETTLE_SECONDS)
        self._settling.pop(item, None)
        words = self._words.get(item, "")
        if self._turns.get(item) is _Turn.WEIGHING and self.interruptions.cuts(words, final=True):
            self._cut_in(item)

    def _cut_in(self, item: str) -> None:
        """Speech over the answer is a turn of its own, by its words."""
        state = self._turns.get(item)
        self._cancel_timer(item)
        self._open(item)
        if state is _Turn.WEIGHING:  # the caller had already gone quiet
            self._turns[item] = _Turn.ENDED
            self.call.user_stopped_speaking()

    def _transcript(self, item: str, text: str) -> None:
        self._cancel_timer(item)
        self._words.pop(item, None)
        state = self._turns.pop(item, None)
        if state in (_Turn.TENTATIVE, _Turn.WEIGHING):
            if not self.interruptions.cuts(text, final=True):
                # Not a turn: the answer goes on, and the session forgets it was said.
                log.debug("call %s: not an interruption: %r", self.call.call_id, text)
                self.let_pass.append(text)
                self.model.not_a_turn(item)
                return
            self.call.user_started_speaking()
            self.call.user_stopped_speaking()
        elif state is _Turn.OPEN:
            self.call.user_stopped_speaking()
        if not text:
            self.model.not_a_turn(item)
        self.call.user_transcript(text)

    def _open(self, item: str) -> None:
        """The caller's turn is real: it cuts the assistant, if it is speaking."""
        self._turns[item] = _Turn.OPEN
        self.call.user_started_speaking()

    def _reopened(self) -> None:
        """The session was lost: turns it had not transcribed end with no words."""
        self._began.clear()
        self._words.clear()
        for item in list(self._turns):
            if self._turns[item] in (_Turn.OPEN, _Turn.ENDED):
                self._transcript(item, "")
            else:
                self._cancel_timer(item)
                self._turns.pop(item, None)

    async def _too_long(self, item: str) -> None:
        await self.call.clock.sleep(MAX_ACKNOWLEDGEMENT_SECONDS)
        self._timers.pop(item, None)
        if self._turns.get(item) is _Turn.TENTATIVE:
            self._open(item)

    def _cancel_timer(self, item: str) -> None:
        for timers in (self._timers, self._settling):
            if (timer := timers.pop(item, None)) is not None:
                timer.cancel()


def _ms(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
