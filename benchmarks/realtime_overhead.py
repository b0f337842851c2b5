"""What backchannel adds to a speech-to-speech model's latency, per turn.

    .venv/bin/python benchmarks/realtime_overhead.py [--turns 20] [--provider google-live]

A call on OpenAI Realtime's protocol (or Gemini Live's) against the loopback server of
the tests (``tests/fake_realtime.py``, ``tests/fake_live.py``), which answers at once:
what is timed is backchannel's own share of each turn, in two places.

* **decide**: the caller's turn is known (Realtime: the server's transcript arrives;
  Live: the call's input side hands the call the transcript) → what starts the answer
  reaches the server (``response.create``; ``clientContent`` with ``turnComplete``): the
  call takes the turn, the arbiter plans the reply, the history is written.
* **play**: the model's first audio leaves the server → its first 20 ms frame goes to
  the caller (the response reads it, the output plays it).

Run from the checkout (it uses the tests' server). Medians and p90 over the turns.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_live import fake_live
from tests.fake_realtime import fake_realtime
from tests.test_voice_pipeline import eventually

from backchannel import AssistantConfig, Engine, EventLog, Ledger, MemoryStore, TurnState
from backchannel.call import Call
from backchannel.realtime import (
    LiveLink,
    LiveLLM,
    ModelVoice,
    RealtimeInput,
    RealtimeLink,
    RealtimeLLM,
)
from backchannel.voice.output import AudioOutput
from backchannel.voice.session import CallInput

RATE = 16_000
ANSWER = "We open at nine."


def speech(seconds: float) -> bytes:
    import numpy as np

    t = np.arange(int(seconds * RATE)) / RATE
    tone = (np.sin(2 * np.pi * 300 * t) * 9000).astype("<i2")
    return np.concatenate([tone, np.zeros(int(0.8 * RATE), "<i2")]).tobytes()


def answered(events: EventLog) -> int:
    return sum(1 for e in events.of_type("transcript") if e.data["role"] == "assistant")


def after(log: list[tuple[float, str]], kind: str, since: float) -> float:
    return next(t for t, k in log if k == kind and t >= since)


def respond(_history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [("say", ANSWER)]


class Words:
    """The call's input side when the turns come in words (nothing to hear)."""

    def feed(self, pcm: bytes) -> None:
        pass


@asynccontextmanager
async def timed_call(
    model: RealtimeLLM | LiveLLM, provider: str, session: CallInput | None = None
) -> AsyncIterator[tuple[Call, RealtimeInput, list[float], EventLog]]:
    """A call on ``model``: its input side, and when each frame went to the caller."""
    frames: list[float] = []

    async def send(_frame: bytes) -> None:
        frames.append(time.time())

    async def clear() -> None:
        return None

    engine = Engine(Ledger(MemoryStore()), llm=model)
    await engine.open()
    voice = ModelVoice()
    output = AudioOutput(voice, send, rate=RATE, clear=voice.clearing(clear))
    config = AssistantConfig.from_json({"model": {"provider": provider}})
    events = EventLog()
    async with engine.call(config, output=output, events=events) as live:
        model.voice = voice
        yield live, RealtimeInput(live, model, rate=RATE, session=session), frames, events
    await engine.close()


async def answered_turn(live: Call, events: EventLog, turn: int) -> None:
    """Until the answer to turn ``turn`` (from 0) has been heard and the floor is free."""
    await eventually(lambda: answered(events) > turn and not live.assistant_speaking)
    await eventually(lambda: live.arbiter.state is TurnState.IDLE)


async def run(turns: int) -> tuple[list[float], list[float]]:
    decide: list[float] = []
    play: list[float] = []
    async with fake_realtime(respond, ["When are you open?"] * turns, pace=0.0) as fake:
        link = RealtimeLink(model="gpt-realtime", api_key="bench", url=fake.url)
        model = RealtimeLLM(link)
        async with timed_call(model, "openai-realtime") as (live, listening, frames, events):
            for turn in range(turns):
                started = time.time()
                pcm = speech(0.5)
                for start in range(0, len(pcm), 640):
                    listening.feed(pcm[start : start + 640])
                await answered_turn(live, events, turn)
                heard = after(
                    fake.sent, "conversation.item.input_audio_transcription.completed", started
                )
                asked = after(fake.arrivals, "response.create", heard)
                first_audio = after(fake.sent, "response.output_audio.delta", asked)
                decide.append((asked - heard) * 1000)
                play.append((next(t for t in frames if t >= first_audio) - first_audio) * 1000)
    return decide, play


async def run_live(turns: int) -> tuple[list[float], list[float]]:
    """The same turns on Gemini Live: the caller's turn handed to the call in words."""
    decide: list[float] = []
    play: list[float] = []
    async with fake_live(respond, pace=0.0) as fake:
        link = LiveLink(model="gemini-live", api_key="bench", url=fake.url)
        link.ssl_context = fake.client_ssl()
        model = LiveLLM(link, turn_detection="backchannel")
        async with timed_call(model, "google-live", Words()) as (live, _input, frames, events):
            for turn in range(turns):
                heard = time.time()
                live.user_started_speaking()
                live.user_stopped_speaking()
                live.user_transcript("When are you open?")
                await answered_turn(live, events, turn)
                asked = after(fake.arrivals, "clientContent", heard)
                first_audio = after(fake.sent, "audio", asked)
                decide.append((asked - heard) * 1000)
                play.append((next(t for t in frames if t >= first_audio) - first_audio) * 1000)
    return decide, play


def report(name: str, values: list[float]) -> None:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    print(f"{name:>7}: median {statistics.median(values):6.1f} ms   p90 {p90:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--provider", choices=["openai-realtime", "google-live"])
    args = parser.parse_args()
    live = args.provider == "google-live"
    decide, play = asyncio.run(run_live(args.turns) if live else run(args.turns))
    print(f"{args.turns} turns on the loopback {'Live' if live else 'Realtime'} server")
    report("decide", decide)
    report("play", play)
    report("total", [d + p for d, p in zip(decide, play, strict=True)])


if __name__ == "__main__":
    main()
