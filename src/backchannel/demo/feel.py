"""How the demo call felt, from the caller's side: the silences after they stopped
talking, and how soon the order result was said once the floor was free.

Everything is read off what the caller sent and heard (audio frames and events, each
with its time on the demo's timeline) and the ledger's times for the tool call.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Words that tell the order's status (out for delivery, this afternoon).
STATUS_WORDS = ("deliver", "afternoon", "on its way", "on the way")
#: Assistant frames further apart than this are a silence.
GAP = 0.1


@dataclass(frozen=True, slots=True)
class Reply:
    line: str
    #: End of the caller's line → the assistant's first audio after it (s).
    first_audio: float | None


@dataclass(frozen=True, slots=True)
class Feel:
    replies: list[Reply]
    #: The order result: when it arrived, when the floor was free for it (after the
    #: caller's line or the reply owed to it), and when its announcement started to play
    #: (s on the timeline).
    result_at: float | None
    floor_free_at: float | None
    announced_at: float | None

    def lines(self) -> list[str]:
        out = ["how it felt (seconds):"]
        for r in self.replies:
            waited = f"{r.first_audio:.2f}" if r.first_audio is not None else "no answer"
            out.append(f"  caller stops -> first assistant audio {waited}  ({r.line!r})")
        if self.result_at is not None and self.announced_at is not None:
            free = self.floor_free_at if self.floor_free_at is not None else self.result_at
            out.append(
                f"  order result: arrived {self.result_at:.2f}, floor free {free:.2f}, "
                f"announcement starts {self.announced_at:.2f} "
                f"({self.announced_at - free:.2f} after the floor was free)"
            )
        return out


def feel(
    *,
    lines: list[tuple[float, float, str]],
    heard: list[tuple[float, bytes]],
    events: list[dict[str, Any]],
    event_at: list[float],
    result_at: float | None,
) -> Feel:
    frames = [at for at, _ in heard]
    replies = []
    for _start, end, text in lines:
        after = next((t for t in frames if t > end), None)
        replies.append(Reply(text, None if after is None else after - end))
    announced = announcement(events, event_at, _tells_status)
    floor = None
    if result_at is not None and announced is not None:
        floor = floor_free(result_at, announced, lines, frames)
    return Feel(replies, result_at, floor, announced)


def floor_free(
    since: float, before: float, lines: list[tuple[float, float, str]], frames: list[float]
) -> float:
    """When the floor was last taken before the announcement (at ``before``) and then
    freed: the end of the caller's line or of the assistant's speech just before it (a
    reply owed to the caller comes first), and never before the result arrived."""
    ends = [end for _start, end, _text in lines if end <= before]
    i = bisect.bisect_left(frames, before - GAP / 2)  # frames of the announcement itself
    if i > 0:
        ends.append(frames[i - 1])
    return max([since, *ends])


def _tells_status(line: str) -> bool:
    return any(w in line.lower() for w in STATUS_WORDS)


def announcement(
    events: list[dict[str, Any]],
    event_at: list[float],
    tells: Callable[[str], bool],
    *,
    after: float = float("-inf"),
) -> float | None:
    """When the assistant started the first utterance, heard after ``after``, whose
    words ``tells`` (the moment its ``speech-update`` said it started)."""
    started = None
    for event, at in zip(events, event_at, strict=False):
        if event.get("type") == "speech-update" and event.get("role") == "assistant":
            if event.get("status") == "started":
                started = at
        elif (
            event.get("type") == "transcript"
            and event.get("role") == "assistant"
            and at > after
            and tells(str(event.get("transcript")))
        ):
            return started if started is not None else at
    return None
