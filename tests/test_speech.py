from __future__ import annotations

import pytest

from backchannel import ManualClock, PacedSpeech, Utterance
from backchannel.speech import words_duration

pytestmark = pytest.mark.anyio


class Listener:
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def speech_started(self, utterance_id: int) -> None:
        self.log.append(("started", utterance_id))

    def speech_finished(self, utterance_id: int) -> None:
        self.log.append(("finished", utterance_id))


async def test_plays_in_order_for_its_duration_and_stop_reports_what_was_heard() -> None:
    import asyncio

    clock = ManualClock()
    out = PacedSpeech(clock, words_duration(0.5))
    listener = Listener()
    out.attach(listener)
    player = asyncio.ensure_future(out.run())
    out.speak(Utterance(1, "one two", 1))
    out.speak(Utterance(2, "three four five six", 1))
    out.speak(Utterance(3, "never heard", 1))
    await clock.advance(1.0)
    assert listener.log == [("started", 1), ("finished", 1), ("started", 2)]
    await clock.advance(1.0)  # half of utterance 2
    cut = out.stop()
    assert cut is not None and cut.utterance_id == 2
    assert cut.heard_chars == len("three four five six") // 2
    await clock.advance(5)
    assert ("started", 3) not in listener.log, "the queue was dropped"
    assert out.stop() is None
    out.speak(Utterance(4, "again", 2))
    await clock.advance(1)
    assert listener.log[-1] == ("finished", 4)
    player.cancel()
    with pytest.raises(asyncio.CancelledError):
        await player
