from __future__ import annotations

from pathlib import Path

import pytest

from backchannel.cli import main


def test_demo_plays_a_voice_call_prints_the_timeline_and_saves_both_sides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "call.wav"
    argv = ["demo", "--llm", "scripted", "--lookup-seconds", "2", "--wav", str(wav)]
    assert main([*argv, "--workdir", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    assert 'caller    says "Hello, where is my order number 4417?"' in out
    assert "check_order" in out and "called: pending" in out
    assert "check_order succeeded" in out
    assert "result spoken" in out
    spoken = [line for line in out.splitlines() if "assistant said" in line]
    assert sum("out for delivery" in line for line in spoken) == 1, "announced once"
    assert wav.stat().st_size > 16_000 * 2 * 2 * 10  # over ten seconds of stereo


def test_demo_with_the_local_llm_says_how_to_get_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--model", str(tmp_path / "missing.gguf")]) == 1
    err = capsys.readouterr().err
    assert "--llm scripted" in err


def test_model_path_fails_clearly_when_not_fetched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "path", "--dir", str(tmp_path)]) == 1
    assert "backchannel model fetch" in capsys.readouterr().err


def test_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fly"])
