"""Record the callers' questions the voice benchmarks play, as 16 kHz PCM16 WAV files.

    .venv/bin/python benchmarks/audio/record.py

The questions are spoken by Piper (en_US) and kept in this folder, so every run of a
benchmark hears exactly the same audio.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

from backchannel.voice.audio import resample
from backchannel.voice.tts import PiperTTS, spoken

HERE = Path(__file__).parent
QUESTIONS = {
    "hours": "What are your opening hours?",
    "canada": "Hi there, do you ship to Canada?",
    "card": "Can I pay by card?",
    "where": "Where is your shop?",
    "gift": "Do you sell gift cards?",
}


async def main() -> None:
    piper = PiperTTS()
    for name, text in QUESTIONS.items():
        audio = resample(await spoken(piper, text), piper.sample_rate, 16_000)
        with wave.open(str(HERE / f"{name}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes(audio.tobytes())
        print(f"{name}.wav: {audio.size / 16_000:.2f} s — {text}")


if __name__ == "__main__":
    asyncio.run(main())
