from __future__ import annotations

import json

import pytest

from backchannel.cli import main


def test_demo_runs_on_sqlite_and_announces_the_result_once(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["demo", "--db", f"sqlite+aiosqlite:///{tmp_path}/demo.db", "--time-scale", "0.05"])
        == 0
    )
    out = capsys.readouterr().out
    assert "check_order called" in out
    assert "check_order -> succeeded" in out
    spoken = out.split("spoken:")[1].split("ledger:")[0]
    assert spoken.count("out for delivery") == 1
    record = json.loads(out.split("ledger:")[1])
    assert record["state"] == "succeeded"
    assert record["spokenAt"] is not None


def test_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fly"])
