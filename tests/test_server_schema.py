"""schemathesis against the served OpenAPI spec: no 5xx, no schema violations, every
status code documented. Runs the real server process on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .fake_openai import serve as serve_model
from .peers import rule_model, server_process


def test_openapi_fuzzing_finds_no_server_errors(tmp_path: Path) -> None:
    with (
        serve_model(rule_model) as (_model, model_url),
        server_process(tmp_path, model_url) as server,
    ):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.url}/openapi.json",
                "-H",
                f"Authorization: Bearer {server.api_key}",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,"
                "content_type_conformance",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--phases",
                "examples,coverage,fuzzing,stateful",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        server_log = server.log.read_text()
    print(run.stdout[-1500:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in server_log, server_log[-4000:]
