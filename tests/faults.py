"""Real, throwaway infrastructure for fault-injection tests.

Each helper here is a context manager that owns a real process or a real mount, lets a
test break it on purpose (kill a Redis, stop a PostgreSQL, fill a disk, lock a SQLite
database, freeze a client) and cleans everything up on exit, even when the test fails:

* :func:`throwaway_redis` - a private ``redis-server`` on a free loopback port.
* :func:`throwaway_postgres` - a whole private PostgreSQL cluster (``initdb`` + ``pg_ctl``).
* :func:`small_tmpfs` - a tiny tmpfs mount that can be filled to ``ENOSPC``.
* :func:`sqlite_lock` - another process holding ``BEGIN EXCLUSIVE`` on a SQLite file.
* :func:`stoppable_client` - a subprocess that can be frozen (SIGSTOP) and thawed (SIGCONT).
* :func:`kill9` - SIGKILL a ``subprocess.Popen`` and reap it.

None of this touches the shared PostgreSQL (127.0.0.1:5432) or the shared Redis
(127.0.0.1:6379): every server gets its own free port, its own temp dir and, for
PostgreSQL, its own unix-socket directory. All network use is loopback only. Every wait
is bounded and polls a condition; nothing relies on a fixed sleep.

The helpers are synchronous so they work from pytest tests, fixtures and plain code alike.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .peers import free_port

__all__ = [
    "SqliteLock",
    "StoppableProcess",
    "ThrowawayPostgres",
    "ThrowawayRedis",
    "Tmpfs",
    "free_port",
    "kill9",
    "small_tmpfs",
    "sqlite_lock",
    "stoppable_client",
    "throwaway_postgres",
    "throwaway_redis",
    "tmpfs_available",
]

#: Default bound for "wait until the server answers".
READY_TIMEOUT = 20.0


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def kill9(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGKILL ``proc`` (if it is still running) and wait for it, so it leaves no zombie."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    proc.wait(timeout=timeout)


# --------------------------------------------------------------------------- Redis


def _redis_ping(port: int, timeout: float = 1.0) -> bool:
    """True if a Redis on 127.0.0.1:``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class ThrowawayRedis:
    """A private ``redis-server`` (no persistence) owned by this process.

    ``kill()`` is the crash (SIGKILL), ``stop()`` the clean shutdown (SIGTERM) and
    ``start()`` brings it back, empty, on the same port.
    """

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    ready_timeout: float = READY_TIMEOUT

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def start(self) -> None:
        """Start ``redis-server`` on ``self.port`` and wait (bounded) until PING answers."""
        if self.running:
            return
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "dir": str(self.dir),
            "logfile": str(self.log),
        }
        argv = [shutil.which("redis-server") or "/usr/bin/redis-server"]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {proc.returncode}:\n"
                    + _tail(self.log)
                )
            return _redis_ping(self.port)

        try:
            _wait_until(ready, self.ready_timeout, f"redis-server on port {self.port}")
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the server and wait for it: a crash, connections get refused."""
        if self.proc is not None:
            kill9(self.proc)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server and wait (bounded; SIGKILL if it does not exit)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill9(self.proc)


@contextmanager
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    """Run a private ``redis-server`` on a free loopback port; kill it and its dir on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="faults-redis-"))
    redis = ThrowawayRedis(port=free_port(), dir=tmp)
    try:
        redis.start()
        yield redis
    finally:
        redis.kill()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


@dataclass
class ThrowawayPostgres:
    """A private PostgreSQL cluster: its own data dir, port and unix-socket directory.

    Server-side commands run as the ``postgres`` OS user (``initdb`` refuses root).
    Authentication is ``trust`` for the ``postgres`` superuser, loopback only.
    """

    port: int
    base: Path
    bin: Path
    ready_timeout: float = 30.0

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy async URL of the ``postgres`` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """``postgresql+asyncpg://postgres@127.0.0.1:PORT/<name>``."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def _as_postgres(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        return subprocess.run(
            [*user, *args],
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _client(self, tool: str, *args: str, timeout: float = 30.0) -> None:
        out = subprocess.run(
            [
                str(self.bin / tool),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {out.stderr.strip()}")

    def initdb(self) -> None:
        """Create the cluster and write its loopback-only, throwaway configuration."""
        out = self._as_postgres(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-A", "trust",
            "-U", "postgres",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            timeout=120,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{out.stdout}\n{out.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/faults.py: a throwaway cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "max_connections = 50\n"
                "shared_buffers = 16MB\n"
            )

    def is_ready(self) -> bool:
        """True if ``pg_isready`` says the server accepts connections."""
        out = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        return out.returncode == 0

    def start(self) -> None:
        """Start the server on the same port and wait (bounded) until ``pg_isready`` agrees."""
        if self.is_ready():
            return
        out = self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D", str(self.data),
            "-l", str(self.log),
            "-w", "-t", str(int(self.ready_timeout)),
            "start",
            timeout=self.ready_timeout + 15,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {out.stderr.strip()}\n{_tail(self.log)}")
        _wait_until(self.is_ready, self.ready_timeout, f"PostgreSQL on port {self.port}")

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``: the server dies without a checkpoint, like a crash."""
        if not (self.data / "postmaster.pid").exists():
            return
        out = self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30",
            "stop",
            timeout=45,
        )  # fmt: skip
        if out.returncode != 0 and (self.data / "postmaster.pid").exists():
            raise RuntimeError(f"pg_ctl stop failed: {out.stderr.strip()}")

    def create_database(self, name: str) -> str:
        """Create database ``name`` (with ``createdb``) and return its async URL."""
        self._client("createdb", name)
        return self.database_url(name)

    def _force_kill(self) -> None:
        """Last resort when ``pg_ctl stop`` failed: SIGQUIT the postmaster, then SIGKILL."""
        pidfile = self.data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            with contextlib.suppress(TimeoutError):
                _wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "postmaster exit")
                return


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """Create, start and yield a private PostgreSQL cluster; stop and delete it on exit."""
    base = Path(tempfile.mkdtemp(prefix="faults-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    pg = ThrowawayPostgres(port=free_port(), base=base, bin=_pg_bin_dir())
    try:
        pg.initdb()
        pg.start()
        yield pg
    finally:
        try:
            pg.stop()
        except Exception:
            pg._force_kill()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- tmpfs


def _mount_tmpfs(path: Path, size_mb: int) -> str | None:
    """Mount a tmpfs at ``path``; return None on success, else the reason it failed."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount(8) binary"
    try:
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0777", "tmpfs", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"mount failed: {e}"
    if out.returncode != 0:
        return f"mount -t tmpfs refused: {out.stderr.strip() or out.returncode}"
    return None


def _umount(path: Path) -> None:
    """Unmount ``path``; fall back to a lazy unmount (``umount -l``) if it is busy."""
    for args in (["umount", str(path)], ["umount", "-l", str(path)]):
        out = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
        )
        if out.returncode == 0:
            return


@functools.cache
def _tmpfs_problem() -> str | None:
    tmp = Path(tempfile.mkdtemp(prefix="faults-tmpfs-probe-"))
    try:
        problem = _mount_tmpfs(tmp, 1)
        if problem is None:
            _umount(tmp)
        return problem
    finally:
        with contextlib.suppress(OSError):
            tmp.rmdir()


def tmpfs_available() -> bool:
    """True if this process may mount a tmpfs (probed once, then cached)."""
    return _tmpfs_problem() is None


@dataclass
class Tmpfs:
    """A mounted tmpfs of a fixed size: ``fill()`` makes it full, ``free()`` empties it."""

    path: Path
    size_mb: int
    filler: Path = field(init=False)

    def __post_init__(self) -> None:
        self.filler = self.path / ".filler"

    def fill(self, chunk: int = 1 << 20) -> int:
        """Append to a filler file until the kernel answers ``ENOSPC``; return bytes written.

        Afterwards the filesystem is full: writing a new file fails with ``ENOSPC``.
        """
        written = 0
        block = b"\0" * chunk
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    if len(block) == 1:
                        break
                    block = block[: len(block) // 16 or 1]  # top up the last partial page
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the filler file, so there is room again."""
        self.filler.unlink(missing_ok=True)

    def available(self) -> int:
        """Bytes still free for an unprivileged writer (``statvfs``)."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


@contextmanager
def small_tmpfs(size_mb: int = 8) -> Iterator[Tmpfs]:
    """Mount a ``size_mb`` MiB tmpfs at a fresh temp dir; unmount (lazily if busy) on exit.

    If mounting is not permitted here, this calls ``pytest.skip`` inside a running pytest
    test, and raises ``RuntimeError`` from plain code. Check :func:`tmpfs_available` first
    to decide without either.
    """
    tmp = Path(tempfile.mkdtemp(prefix="faults-tmpfs-"))
    problem = _mount_tmpfs(tmp, size_mb)
    if problem is not None:
        tmp.rmdir()
        if "PYTEST_CURRENT_TEST" in os.environ:
            pytest.skip(f"cannot mount a tmpfs here: {problem}")
        raise RuntimeError(f"cannot mount a tmpfs here: {problem}")
    try:
        yield Tmpfs(path=tmp, size_mb=size_mb)
    finally:
        _umount(tmp)
        with contextlib.suppress(OSError):
            tmp.rmdir()


# --------------------------------------------------------------------------- SQLite

# The lock holder: one connection in autocommit mode (so BEGIN/ROLLBACK are ours), driven
# by one command per stdin line, answering one line per command on stdout.
_SQLITE_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
conn.execute("SELECT 1").fetchall()
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    try:
        if cmd == "hold":
            if not conn.in_transaction:
                conn.execute("BEGIN EXCLUSIVE")
            print("held", flush=True)
        elif cmd == "release":
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            print("released", flush=True)
        else:
            print("error: unknown command " + cmd, flush=True)
    except sqlite3.Error as e:
        print("error: " + str(e), flush=True)
conn.close()
"""


class SqliteLock:
    """Another process that holds ``BEGIN EXCLUSIVE`` on a SQLite database on demand.

    In WAL mode (which the ledger uses) ``BEGIN EXCLUSIVE`` takes the database's single
    write lock: every other writer waits for its busy timeout and then fails with
    ``sqlite3.OperationalError: database is locked``, while readers keep reading the last
    committed snapshot. That is the fault this injects. (In rollback-journal mode the same
    lock would block readers too.)
    """

    def __init__(self, db_path: Path, timeout: float = READY_TIMEOUT) -> None:
        self.db_path = Path(db_path)
        self.timeout = timeout
        self.held = False
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SQLITE_HOLDER, str(self.db_path), str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="sqlite-lock-reader", daemon=True)
        self._reader.start()
        self._expect("ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _expect(self, answer: str) -> None:
        try:
            got = self._lines.get(timeout=self.timeout + 10)
        except queue.Empty:
            raise TimeoutError(f"sqlite lock holder did not answer {answer!r}") from None
        if got != answer:
            raise RuntimeError(f"sqlite lock holder answered {got!r}, expected {answer!r}")

    def _send(self, cmd: str, answer: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        self._expect(answer)

    def hold(self) -> None:
        """Take the exclusive lock; returns once the other process confirms it holds it."""
        self._send("hold", "held")
        self.held = True

    def release(self) -> None:
        """End the transaction (ROLLBACK), freeing the lock; the process stays for reuse."""
        self._send("release", "released")
        self.held = False

    def close(self) -> None:
        """Kill the holder process (the lock goes with it) and close its pipes."""
        kill9(self.proc)
        self._reader.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.held = False


@contextmanager
def sqlite_lock(db_path: Path) -> Iterator[SqliteLock]:
    """Start a lock-holder process for ``db_path`` (not yet holding); kill it on exit."""
    lock = SqliteLock(db_path)
    try:
        yield lock
    finally:
        lock.close()


# --------------------------------------------------------------------------- processes


def proc_state(pid: int) -> str:
    """The one-letter state of ``pid`` from ``/proc/PID/stat`` (R, S, T, Z, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


@dataclass
class StoppableProcess:
    """A subprocess that can be frozen and thawed, e.g. a half-open WebSocket client."""

    proc: subprocess.Popen[bytes]
    timeout: float = 10.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def state(self) -> str:
        """The process state letter from ``/proc/PID/stat``."""
        return proc_state(self.pid)

    def pause(self) -> None:
        """SIGSTOP; returns once the kernel reports the process stopped (``T``)."""
        self.proc.send_signal(signal.SIGSTOP)
        _wait_until(lambda: self.state() == "T", self.timeout, f"pid {self.pid} to stop")

    def resume(self) -> None:
        """SIGCONT; returns once the process is no longer stopped."""
        self.proc.send_signal(signal.SIGCONT)
        _wait_until(lambda: self.state() != "T", self.timeout, f"pid {self.pid} to continue")

    def kill(self) -> None:
        """SIGKILL and reap (works on a stopped process too)."""
        kill9(self.proc)


@contextmanager
def stoppable_client(
    cmd: Sequence[str], env: Mapping[str, str] | None = None
) -> Iterator[StoppableProcess]:
    """Run ``cmd`` as a :class:`StoppableProcess`; SIGKILL it on exit."""
    proc = subprocess.Popen(list(cmd), env=env, stdin=subprocess.DEVNULL)
    try:
        yield StoppableProcess(proc)
    finally:
        kill9(proc)
