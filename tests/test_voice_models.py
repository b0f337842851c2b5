"""The offline models on real audio: Silero VAD, Whisper tiny.en, Piper, espeak-ng."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from backchannel.voice.audio import Samples, resample, to_samples
from backchannel.voice.stt import ScriptedSTT, WhisperSTT, clip
from backchannel.voice.tts import EspeakTTS, PiperTTS, spoken
from backchannel.voice.vad import Activity, EnergyVAD, SileroVAD, TurnDetector

pytestmark = pytest.mark.anyio
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "bench" / "speech_2s_16k.wav"


def speech_clip() -> Samples:
    if SPEECH.exists():
        with wave.open(str(SPEECH)) as w:
            return to_samples(w.readframes(w.getnframes()))
    pytest.skip("shared/bench speech clip not present")


def turns(
    detector: TurnDetector, samples: Samples, *, pauses: bool = False
) -> list[tuple[str, float]]:
    """The detector's changes and when (s); pauses and resumptions only if asked."""
    out = []
    for i in range(0, samples.size, 320):
        out += [
            (a.value, round((i + 320) / 16_000, 2))
            for a in detector.feed(samples[i : i + 320])
            if pauses or a in (Activity.STARTED, Activity.STOPPED)
        ]
    return out


def test_silero_opens_and_closes_a_turn_on_speech_and_ignores_noise() -> None:
    audio = np.concatenate([np.zeros(8_000, np.int16), speech_clip(), np.zeros(16_000, np.int16)])
    got = turns(TurnDetector(SileroVAD()), audio)
    assert [a for a, _ in got] == [Activity.STARTED, Activity.STOPPED]
    started, stopped = got[0][1], got[1][1]
    assert 0.6 <= started <= 1.0, "speech starts at 0.5 s, plus 0.2 s to open the turn"
    assert 2.8 <= stopped <= 3.3, "speech ends near 2.5 s, plus 0.5 s of silence"
    noise = np.random.default_rng(0).normal(0, 300, 48_000).astype(np.int16)
    assert turns(TurnDetector(SileroVAD()), noise) == []


def test_a_pause_inside_a_turn_is_reported_and_speech_after_it_resumes_the_turn() -> None:
    clip = speech_clip()
    gap = np.zeros(int(0.35 * 16_000), np.int16)  # longer than the pause, shorter than stop
    audio = np.concatenate([np.zeros(8_000, np.int16), clip, gap, clip, np.zeros(16_000, np.int16)])
    got = [a for a, _ in turns(TurnDetector(SileroVAD()), audio, pauses=True)]
    assert got[0] == Activity.STARTED and got[-2:] == [Activity.PAUSED, Activity.STOPPED]
    assert got.count(Activity.STARTED) == 1, "the gap did not end the turn"
    i = got.index(Activity.RESUMED)  # speech after the gap's pause resumed the turn
    assert got[i - 1] == Activity.PAUSED


def test_a_turn_ended_early_listens_for_the_next_one() -> None:
    detector = TurnDetector(SileroVAD())
    audio = np.concatenate([np.zeros(8_000, np.int16), speech_clip()])
    assert [a for a, _ in turns(detector, audio)] == [Activity.STARTED]
    detector.end_turn()
    assert not detector.speaking and not detector.paused
    again = np.concatenate([np.zeros(8_000, np.int16), speech_clip()])
    assert [a for a, _ in turns(detector, again)] == [Activity.STARTED]


def test_energy_vad_sees_loud_speech() -> None:
    audio = np.concatenate([np.zeros(8_000, np.int16), speech_clip(), np.zeros(16_000, np.int16)])
    assert [a for a, _ in turns(TurnDetector(EnergyVAD()), audio)] == [
        Activity.STARTED,
        Activity.STOPPED,
    ]


async def test_piper_speech_is_transcribed_back_by_whisper(
    piper: PiperTTS, whisper: WhisperSTT
) -> None:
    audio = await spoken(piper, "What is the status of my order?")
    assert piper.sample_rate == 22_050
    assert 1.0 < audio.size / piper.sample_rate < 3.5
    text = await whisper.transcribe(clip(resample(audio, piper.sample_rate, 16_000)))
    assert "status" in text.lower() and "order" in text.lower(), text
    assert await whisper.transcribe(clip()) == ""


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian espeak-ng is not installed")
async def test_espeak_fallback_speaks() -> None:
    tts = EspeakTTS()
    audio = await spoken(tts, "Hello there, this is a test.")
    assert 0.8 < audio.size / tts.sample_rate < 4.0
    assert np.abs(audio).max() > 1000


async def test_scripted_stt_plays_back() -> None:
    stt = ScriptedSTT(["hello"])
    assert await stt.transcribe(clip(np.zeros(160, np.int16))) == "hello"
    assert await stt.transcribe(clip(np.zeros(160, np.int16))) == ""
    assert stt.heard == [160, 160]


def test_telephone_audio_gets_a_lower_speech_threshold() -> None:
    vad = EnergyVAD()
    assert TurnDetector.for_rate(vad, 8_000).confidence == 0.3
    assert TurnDetector.for_rate(vad, 16_000).confidence == 0.7


class ScoresVAD:
    """A VAD that plays back fixed scores, one per window."""

    window = 512

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)

    def score(self, window: Samples) -> float:
        return self.scores.pop(0) if self.scores else 0.0

    def reset(self) -> None:
        return None


def test_a_soft_window_inside_a_word_neither_counts_nor_breaks_the_run() -> None:
    # 7 windows of 32 ms make the 0.2 s that opens a turn; 0.6 is "maybe speech".
    def opened(scores: list[float]) -> bool:
        detector = TurnDetector(ScoresVAD(scores), confidence=0.7)
        return Activity.STARTED in detector.feed(np.zeros(512 * len(scores), np.int16))

    assert opened([0.9, 0.9, 0.9, 0.6, 0.9, 0.9, 0.9, 0.9])
    assert not opened([0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.6])
    assert not opened([0.6] * 20)


async def test_a_telephone_phrase_opens_its_turn_at_once_wherever_the_frames_fall(
    piper: PiperTTS,
) -> None:
    """Piper's phrase through µ-law at 8 kHz, as a phone caller sounds. Piper samples
    each rendition afresh, and the phrase's onset may fall anywhere in the 20 ms
    frames: every rendition, at every alignment, opens one turn early enough that the
    turn's audio, with its pre-roll, reaches back to the first sound (later, and the
    transcript loses its first words)."""
    from backchannel.phone import mulaw
    from backchannel.voice.audio import StreamResampler
    from backchannel.voice.session import PRE_ROLL_SECONDS

    for _ in range(3):
        phrase = resample(
            await spoken(piper, "Please transfer me to a person."), piper.sample_rate, 8_000
        )
        onset = int(np.argmax(np.abs(phrase) > 500))
        # Frames are 320 samples at 16 kHz, VAD windows 512: eight ways to line up.
        for frames in range(100, 108):
            audio = np.concatenate(
                [np.zeros(frames * 160, np.int16), phrase, np.zeros(8_000, np.int16)]
            )
            phone = mulaw.decode(mulaw.encode(audio))
            detector = TurnDetector.for_rate(SileroVAD(), 8_000)
            up = StreamResampler(8_000, 16_000)
            changes = []
            for i in range(0, phone.size, 160):
                changes += [
                    (c, (i + 160 - frames * 160 - onset) / 8_000)
                    for c in detector.feed(up(phone[i : i + 160]))
                    if c in (Activity.STARTED, Activity.STOPPED)
                ]
            assert [c for c, _ in changes] == [Activity.STARTED, Activity.STOPPED], frames
            assert changes[0][1] <= PRE_ROLL_SECONDS + detector.start_secs, (frames, changes)
