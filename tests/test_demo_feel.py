"""The demo's account of how the call felt, on a made-up timeline."""

from __future__ import annotations

from backchannel.demo.feel import feel


def frames(start: float, end: float) -> list[tuple[float, bytes]]:
    """Assistant audio from ``start`` to ``end``, 20 ms a frame."""
    return [(start + i * 0.02, b"") for i in range(round((end - start) / 0.02))]


def test_silences_after_the_caller_and_the_announcement_after_the_floor_frees() -> None:
    lines = [(1.0, 3.0, "Where is my order?"), (6.0, 8.0, "And shipping?")]
    heard = frames(3.4, 5.0) + frames(8.6, 10.0) + frames(10.3, 12.0)
    events = [
        {"type": "speech-update", "role": "assistant", "status": "started"},
        {"type": "transcript", "role": "assistant", "transcript": "Shipping is free."},
        {"type": "speech-update", "role": "assistant", "status": "started"},
        {"type": "transcript", "role": "assistant", "transcript": "It is out for delivery."},
    ]
    how = feel(
        lines=lines, heard=heard, events=events, event_at=[8.6, 10.0, 10.3, 12.0], result_at=7.0
    )
    assert [round(r.first_audio or 0, 2) for r in how.replies] == [0.4, 0.6]
    # The result came during the caller's question; the reply owed to it came first.
    assert how.announced_at == 10.3
    assert how.floor_free_at is not None and round(how.floor_free_at, 2) == 9.98
    assert "0.32 after the floor was free" in how.lines()[-1]


def test_no_announcement_no_floor() -> None:
    how = feel(lines=[(0.0, 1.0, "Hi")], heard=[], events=[], event_at=[], result_at=None)
    assert how.replies[0].first_audio is None and how.announced_at is None
    assert "no answer" in how.lines()[1]
