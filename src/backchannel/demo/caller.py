"""The demo's caller: a script that talks to a web call over the real WebSocket.

It behaves like a microphone: 20 ms frames of PCM16 go out in real time the whole call,
silence when it is not talking, synthesized speech when it is. Everything it hears is
kept with its arrival time, so the call can be written out as a two-track WAV (caller
left, assistant right) and printed as a timeline.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..voice.audio import FRAME_MS, RATE, Samples, resample
from ..voice.tts import TTS, spoken

FRAME = RATE * FRAME_MS // 1000
Timeline = Callable[[float, str, str], None]


@dataclass
class Caller:
    url: str
    voice: TTS
    timeline: Timeline
    events: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Samples] = field(default_factory=list)  # caller track, frame by frame
    heard: list[tuple[float, bytes]] = field(default_factory=list)  # assistant frames
    t0: float = field(default_factory=time.monotonic)
    _speech: list[tuple[Samples, asyncio.Event]] = field(default_factory=list)
    _last_heard: float = 0.0
    #: When the first microphone frame went out, on the timeline: the WAV's zero.
    mic_started: float = 0.0
    #: The caller's lines: (start, end) of their audio on the timeline, and the text.
    lines: list[tuple[float, float, str]] = field(default_factory=list)
    #: When each event arrived, on the timeline (parallel to ``events``).
    event_at: list[float] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self, script: Callable[[Caller], Awaitable[None]]) -> None:
        """Connect, keep the microphone streaming, and play ``script`` against the call,
        which ends when the script does (the caller hangs up) or the server ends it."""
        async with connect(self.url, max_size=None) as ws, asyncio.TaskGroup() as group:
            mic = group.create_task(self._microphone(ws))
            play = group.create_task(self._play(script, ws))
            await self._listen(ws)  # until the server closes the call
            mic.cancel()
            play.cancel()

    async def _play(self, script: Callable[[Caller], Awaitable[None]], ws: Any) -> None:
        await script(self)
        self.timeline(self.now(), "caller", "hangs up")
        await ws.send(json.dumps({"type": "end-call"}))

    async def reply(self, *, after: float, quiet: float = 0.8, within: float = 60.0) -> None:
        """Wait for the assistant to answer (audio after ``after``) and fall quiet."""
        await self.until(lambda: bool(self.heard) and self.heard[-1][0] > after, within=within)
        await self.assistant_quiet(quiet, within=within)

    async def say(self, text: str) -> None:
        """Speak a line into the microphone and return once it has been sent."""
        audio = await spoken(self.voice, text)
        audio = resample(audio, self.voice.sample_rate, RATE)
        start = self.now()
        self.timeline(start, "caller", f'says "{text}"')
        done = asyncio.Event()
        self._speech.append((audio, done))
        await done.wait()
        self.lines.append((start, self.now(), text))

    async def until(self, check: Callable[[], bool], *, within: float = 60.0) -> None:
        await wait_until(check, within=within)

    async def assistant_quiet(self, seconds: float, *, within: float = 60.0) -> None:
        """Wait until no assistant audio has arrived for ``seconds``."""
        await self.until(lambda: self.quiet_for() > seconds, within=within)

    def quiet_for(self) -> float:
        """Seconds since the assistant's last audio frame arrived."""
        return time.monotonic() - self._last_heard

    def seen(self, kind: str, **match: Any) -> bool:
        return any(
            e.get("type") == kind and all(e.get(k) == v for k, v in match.items())
            for e in self.events
        )

    async def _microphone(self, ws: ClientConnection) -> None:
        start, n = time.monotonic(), 0
        self.mic_started = self.now()
        pending = np.zeros(0, np.int16)
        while True:
            if pending.size == 0 and self._speech:
                pending = self._speech[0][0]
            frame = pending[:FRAME]
            pending = pending[FRAME:]
            if frame.size and pending.size == 0:
                self._speech.pop(0)[1].set()
            frame = np.concatenate([frame, np.zeros(FRAME - frame.size, np.int16)])
            self.sent.append(frame)
            try:
                await ws.send(frame.tobytes())
            except ConnectionClosed:
                return
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_MS / 1000 - time.monotonic()))

    async def _listen(self, ws: ClientConnection) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                self.heard.append((self.now(), message))
                self._last_heard = time.monotonic()
                continue
            event = json.loads(message)
            self.events.append(event)
            self.event_at.append(self.now())
            narrate(self.timeline, self.now(), event)

    def write_wav(self, path: Path) -> float:
        """Both sides on one timeline, from the first microphone frame: caller left,
        assistant right. Returns the length in seconds."""
        caller = np.concatenate(self.sent) if self.sent else np.zeros(0, np.int16)
        placed: list[tuple[int, Samples]] = []
        for at, frame in self.heard:
            # Frames are paced in real time; place each where it arrived, less one
            # frame for the transport.
            i = max(0, int((at - self.mic_started - FRAME_MS / 1000) * RATE))
            placed.append((i, np.frombuffer(frame, dtype="<i2").astype(np.int16)))
        n = max([caller.size, *(i + s.size for i, s in placed)])
        stereo = np.zeros((n, 2), np.int16)
        stereo[: caller.size, 0] = caller
        for i, samples in placed:
            stereo[i : i + samples.size, 1] = samples
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(stereo.astype("<i2").tobytes())
        return n / RATE


async def wait_until(check: Callable[[], bool], *, within: float, every: float = 0.05) -> None:
    """Until ``check()`` holds; ``TimeoutError`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the call did not get there in {within:.0f} s")
        await asyncio.sleep(every)


def narrate(timeline: Timeline, at: float, event: dict[str, Any]) -> None:
    """Put an event of the call's on the timeline, if it tells something."""
    kind = event.get("type")
    if kind == "transcript" and event.get("transcriptType", "final") == "final":
        who = "server" if event["role"] == "user" else "assistant"
        verb = "heard the caller say" if who == "server" else "said"
        timeline(at, who, f'{verb} "{event["transcript"]}"')
    elif kind == "tool-calls":
        for tc in event["toolCallList"]:
            args = json.dumps(tc["arguments"])
            timeline(at, "tool", f"{tc['function']['name']}{args} called: pending")
    elif kind == "tool-calls-result":
        r = event["toolCallResult"]
        timeline(at, "tool", f"{r['name']} {r['state']}: {json.dumps(r['result'])}")
    elif kind == "user-interrupted":
        timeline(at, "server", "caller spoke over the assistant: playback cut")
    elif kind == "status-update" and event.get("status") == "ended":
        timeline(at, "server", f"call ended ({event.get('endedReason')})")
    elif kind == "error":
        timeline(at, "server", f"error {event['error']['code']}")
