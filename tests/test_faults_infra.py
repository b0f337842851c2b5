"""The fault-injection helpers in ``tests/faults.py`` work on this machine, and the faults
they inject are real: refused connections, a full disk, a locked database, a frozen process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url

from .faults import (
    kill9,
    proc_state,
    small_tmpfs,
    sqlite_lock,
    stoppable_client,
    throwaway_postgres,
    throwaway_redis,
)


def _redis_ping(url: str) -> bool:
    with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5) as client:
        return bool(client.ping())


def test_throwaway_redis_kill_and_restart_on_the_same_port() -> None:
    with throwaway_redis() as r:
        assert r.port != 6379
        assert r.url == f"redis://127.0.0.1:{r.port}/0"
        assert _redis_ping(r.url)

        r.kill()
        assert not r.running
        with pytest.raises(redis.exceptions.ConnectionError):
            _redis_ping(r.url)

        r.start()
        assert _redis_ping(r.url)

        r.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            _redis_ping(r.url)
        r.start()
        assert _redis_ping(r.url)
    assert not r.running
    assert not r.dir.exists()


async def _pg_select_one(url: str) -> int:
    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port, user=u.username, database=u.database, timeout=10
    )
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


def test_throwaway_postgres_stop_and_start() -> None:
    with throwaway_postgres() as pg:
        assert pg.port != 5432
        assert pg.url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/postgres"
        url = pg.create_database("faults_demo")
        assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/faults_demo"
        assert asyncio.run(_pg_select_one(url)) == 1

        pg.stop()
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(_pg_select_one(url))

        pg.start()
        assert asyncio.run(_pg_select_one(url)) == 1
        base = pg.base
    assert not base.exists()


def test_small_tmpfs_fills_up_and_frees() -> None:
    with small_tmpfs(8) as fs:
        probe = fs.path / "probe"
        written = fs.fill()
        assert 6 * 2**20 < written <= 8 * 2**20
        assert fs.available() == 0

        with (
            pytest.raises(OSError, match="No space left") as info,
            open(probe, "wb", buffering=0) as f,
        ):
            f.write(b"x")
        assert info.value.errno == errno.ENOSPC

        fs.free()
        with open(probe, "wb", buffering=0) as f:
            assert f.write(b"x") == 1
        assert probe.read_bytes() == b"x"
        mountpoint = fs.path
    assert not mountpoint.exists() or not mountpoint.is_mount()


def test_sqlite_lock_blocks_writers_not_readers(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    with contextlib.closing(sqlite3.connect(db)) as setup:
        assert setup.execute("PRAGMA journal_mode=wal").fetchone()[0] == "wal"
        setup.execute("CREATE TABLE t (x INTEGER)")
        setup.execute("INSERT INTO t VALUES (1)")
        setup.commit()

    with sqlite_lock(db) as lock:
        lock.hold()
        assert lock.held
        with contextlib.closing(sqlite3.connect(db, timeout=0.5)) as other:
            assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # readers read
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("INSERT INTO t VALUES (2)")
            other.rollback()

        lock.release()
        assert not lock.held
        with contextlib.closing(sqlite3.connect(db, timeout=0.5)) as other:
            other.execute("INSERT INTO t VALUES (2)")
            other.commit()
            assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 2

        lock.hold()  # the same holder can take it again
        with (
            contextlib.closing(sqlite3.connect(db, timeout=0.5)) as other,
            pytest.raises(sqlite3.OperationalError, match="database is locked"),
        ):
            other.execute("INSERT INTO t VALUES (3)")
        holder = lock.proc
    assert holder.poll() is not None  # exit killed the holder, and the lock with it
    with contextlib.closing(sqlite3.connect(db, timeout=0.5)) as other:
        other.execute("INSERT INTO t VALUES (3)")
        other.commit()


def _wait_state(pid: int, want: str, timeout: float = 10.0) -> str:
    """Poll /proc/PID/stat until the state is ``want`` (bounded); return the last state."""
    deadline = time.monotonic() + timeout
    state = proc_state(pid)
    while state != want and time.monotonic() < deadline:
        time.sleep(0.02)
        state = proc_state(pid)
    return state


def test_stoppable_client_pause_and_resume() -> None:
    with stoppable_client(["sleep", "30"]) as client:
        assert _wait_state(client.pid, "S") == "S"
        client.pause()
        assert client.state() == "T"
        client.resume()
        assert _wait_state(client.pid, "S") == "S"
        client.kill()
        assert client.proc.returncode == -9


def test_kill9_reaps_the_process() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    kill9(proc)
    assert proc.returncode == -9
    kill9(proc)  # idempotent
