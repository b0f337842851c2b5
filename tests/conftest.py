from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from backchannel import Ledger, ManualClock, MemoryStore, SqlStore
from backchannel.ledger.store import LedgerStore

POSTGRES_URL = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _store_params() -> list[object]:
    params: list[object] = ["memory", "sqlite"]
    params.append(
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    POSTGRES_URL is None, reason="BACKCHANNEL_TEST_POSTGRES_URL is not set"
                ),
            ],
        )
    )
    return params


@pytest.fixture(params=_store_params())
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[LedgerStore]:
    """Every ledger store: in-memory, SQLite file, and PostgreSQL when configured."""
    kind = request.param
    s: LedgerStore
    if kind == "memory":
        s = MemoryStore()
    elif kind == "sqlite":
        s = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/ledger-{uuid.uuid4().hex}.db")
    else:
        assert POSTGRES_URL is not None
        s = SqlStore(POSTGRES_URL)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def ledger(store: LedgerStore) -> Ledger:
    return Ledger(store)


@pytest.fixture(scope="session")
def piper() -> Any:
    """Piper's en_US voice, loaded once for the whole run."""
    from backchannel.voice.tts import PiperTTS

    return PiperTTS()


@pytest.fixture(scope="session")
def whisper() -> Any:
    """Whisper tiny.en, loaded once for the whole run."""
    from backchannel.voice.stt import WhisperSTT

    return WhisperSTT()


@pytest.fixture(scope="session")
def turn_model() -> Any:
    """Smart Turn v3, as ``backchannel model fetch`` installs it (a missing model fails
    here with that instruction)."""
    from backchannel.voice.turn_model import SmartTurn

    return SmartTurn()


@pytest.fixture(scope="session")
def local_llm() -> Iterator[Any]:
    """Qwen2.5 1.5B through llama.cpp, loaded once for the whole run.

    It must have been assembled with ``backchannel model fetch`` (the README's setup
    command and CI do it); a missing model fails here with that instruction.
    """
    from backchannel.llm.local import LlamaCppLLM, resolve_model

    llm = LlamaCppLLM(resolve_model("qwen2.5-1.5b"))
    yield llm
    llm.close()
