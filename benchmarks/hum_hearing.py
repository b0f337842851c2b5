"""How often speech over the assistant is heard right: hums let pass, words cut.

    .venv/bin/python benchmarks/hum_hearing.py [--hums 150] [--words 10]

Piper says each phrase afresh (its voice varies from one rendering to the next), behind
0.75 to 1.1 s of silence as the turn's pre-roll gives it and before 0.25 to 0.55 s of
silence, and the phrase is weighed as a turn over the assistant is once the caller
stops: Whisper hears it as a listener (:class:`~backchannel.voice.stt.WhisperSTT`,
``listening=True``), and words are heard a second time behind half a second more of
silence before they cut (:func:`backchannel.voice.session.heard_again`), with the default
``stopSpeakingPlan``. Printed: per phrase, how often it cut, what it was heard as when
it went the wrong way, and the time per hearing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backchannel.config import StopSpeakingPlan
from backchannel.voice.audio import resample
from backchannel.voice.interruption import Interruptions
from backchannel.voice.session import heard_again
from backchannel.voice.stt import WhisperSTT, clip
from backchannel.voice.tts import PiperTTS, spoken

HUMS = ["Mm-hmm.", "Uh-huh.", "Mm.", "Hmm."]
WORDS = ["Wait.", "No.", "What?", "Sorry?", "Hold on.", "Really?", "In a month?", "Hi."]
WORDS += ["Monday.", "Come on.", "Why?", "Nine.", "Actually, Sunday."]
RATE = 16_000


async def weigh(
    whisper: WhisperSTT, rules: Interruptions, audio: np.ndarray, took: list[float]
) -> tuple[bool, str]:
    """Whether this turn over the assistant cuts it, as the call decides once the
    caller stops, and what it was first heard as."""

    async def hear(samples: np.ndarray) -> str:
        start = time.perf_counter()
        text = await whisper.transcribe(clip(samples), listening=True)
        took.append(time.perf_counter() - start)
        return text

    text = await hear(audio)
    return rules.cuts(text, final=True) and await heard_again(hear, rules, audio, text), text


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hums", type=int, default=150, help="renderings of each hum")
    parser.add_argument("--words", type=int, default=10, help="renderings of each word")
    args = parser.parse_args()
    piper, whisper = PiperTTS(), WhisperSTT()
    rules = Interruptions(StopSpeakingPlan())
    took: list[float] = []
    print(f"{'phrase':20} {'cut':>9}  heard wrongly as")
    for phrases, n, should_cut in ((HUMS, args.hums, False), (WORDS, args.words, True)):
        wrong_total = 0
        for phrase in phrases:
            wrong: list[str] = []
            for k in range(n):
                voice = resample(await spoken(piper, phrase), piper.sample_rate, RATE)
                lead = np.zeros(12_000 + 600 * (k % 10), np.int16)
                tail = np.zeros(4_000 + 800 * (k % 7), np.int16)
                cut, text = await weigh(whisper, rules, np.concatenate([lead, voice, tail]), took)
                if cut != should_cut:
                    wrong.append(text)
            wrong_total += len(wrong)
            cuts = len(wrong) if not should_cut else n - len(wrong)
            print(f"{phrase:20} {cuts:>4}/{n:<4}  {', '.join(repr(t) for t in wrong[:6])}")
        kind = "hums that cut" if not should_cut else "words that did not cut"
        total = n * len(phrases)
        print(f"-- {kind}: {wrong_total}/{total} ({100 * wrong_total / total:.1f} %)")
    took.sort()
    median, p90 = took[len(took) // 2], took[int(len(took) * 0.9)]
    print(f"hearing: median {1000 * median:.0f} ms, p90 {1000 * p90:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
