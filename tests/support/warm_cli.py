"""``portal`` commands without paying the imports each time: a fork server for the suite.

Each ``portal …`` subprocess spends about 2 s of CPU importing Sanic, Tortoise, redis and
the edge before it does anything; the suite runs hundreds of them (every key a test makes
is one). This server imports ``edge.cli`` once, then forks a fresh child per command: the
child takes the command's environment and working directory, runs ``edge.cli.main(argv)``
as the ``portal`` script would, and reports its exit status and output. A command is still
its own process (its own Tortoise, Redis pool and event loop), started from a clean copy.

Long-running commands (``serve``, ``worker``, ``dev``…) never come here: tests start those
with :class:`subprocess.Popen`. Set ``PORTAL_TEST_COLD_CLI=1`` to run every command as a
real subprocess again.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["WarmCli", "run_portal"]

#: Environment variables read when a module is imported: a command that sets one other
#: than the server has runs cold (prometheus_client picks its value class at import).
IMPORT_TIME_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
#: Modules commands import lazily; the server imports them before forking. Not
#: ``dramatiq_actors``: importing it builds the broker from the environment, which is
#: each command's own (its dependencies, which read none, are preloaded instead).
PRELOADED = ("edge.billing.heal", "edge.db", "edge.db.models", "edge.identity.accounts",
             "edge.store.hotstore", "tortoise.backends.sqlite", "asyncpg",
             "tortoise.backends.asyncpg", "dramatiq", "dramatiq.brokers.redis", "boto3",
             "botocore.session")
#: Commands that keep running or manage processes: always real subprocesses.
COLD_COMMANDS = {"serve", "worker", "workers", "dev", "simnode", "scheduler"}


def _send(sock: socket.socket, data: dict[str, Any]) -> None:
    body = json.dumps(data).encode()
    sock.sendall(struct.pack("!I", len(body)) + body)


def _receive(sock: socket.socket) -> dict[str, Any]:
    def exactly(size: int) -> bytes:
        chunks = b""
        while len(chunks) < size:
            chunk = sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError("the warm CLI closed the connection")
            chunks += chunk
        return chunks

    (size,) = struct.unpack("!I", exactly(4))
    return json.loads(exactly(size))


# -- the server (runs as ``python -m tests.support.warm_cli SOCKET``) -------------------
def _child(connection: socket.socket, request: dict[str, Any]) -> None:
    """In the forked child: become the command, run it, report, exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()  # its own session, as a subprocess started with start_new_session would be
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    status = 1
    try:
        from edge.cli import main

        sys.argv = ["portal", *request["argv"]]
        status = int(main(request["argv"]) or 0)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        out.seek(0)
        err.seek(0)
        try:
            _send(connection, {"status": status,
                               "stdout": out.read().decode("utf-8", "replace"),
                               "stderr": err.read().decode("utf-8", "replace")})
        finally:
            os._exit(0)


def serve(path: str) -> None:
    import edge.cli

    parser = edge.cli.build_parser()  # imports every sub-command's module
    del parser
    for module in PRELOADED:  # what commands import lazily, imported once for every child
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    # Tortoise reads each model's source for its comments at every init: cached here once.
    for model in vars(importlib.import_module("edge.db.models")).values():
        if isinstance(model, type):
            with contextlib.suppress(OSError, TypeError):
                inspect.getsource(model)

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([server, sys.stdin], [], [])
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1024):
            return  # the test process is gone (its end of our stdin closed)
        if server not in readable:
            continue
        connection, _address = server.accept()
        request = _receive(connection)
        if os.fork() == 0:
            server.close()
            _child(connection, request)
        connection.close()


# -- the client ------------------------------------------------------------------------
class WarmCli:
    """One fork server per test process, started on first use, stopped at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._path = ""
        self._env: dict[str, str] = {}

    def _ensure(self) -> str:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                directory = tempfile.mkdtemp(prefix="warm-cli-")
                self._path = str(Path(directory) / "cli.sock")
                self._env = {k: v for k, v in os.environ.items() if k not in IMPORT_TIME_ENV}
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.warm_cli", self._path],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env,
                    start_new_session=True,
                    cwd=str(Path(__file__).resolve().parents[2]))
                assert self._process.stdout is not None
                if self._process.stdout.readline().strip() != b"ready":
                    raise RuntimeError("the warm CLI did not start")
            return self._path

    def run(self, argv: list[str], *, env: dict[str, str], cwd: str,
            timeout: float) -> subprocess.CompletedProcess[str]:
        path = self._ensure()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            _send(sock, {"argv": argv, "env": env, "cwd": cwd})
            try:
                answer = _receive(sock)
            except TimeoutError:
                raise subprocess.TimeoutExpired(["portal", *argv], timeout) from None
        return subprocess.CompletedProcess(["portal", *argv], answer["status"],
                                           answer["stdout"], answer["stderr"])

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the server returns on EOF
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


_WARM = WarmCli()
atexit.register(_WARM.close)


def _cold(argv: list[str], env: dict[str, str]) -> bool:
    if os.environ.get("PORTAL_TEST_COLD_CLI") == "1" or not argv or argv[0] in COLD_COMMANDS:
        return True
    return any(env.get(name) != os.environ.get(name) for name in IMPORT_TIME_ENV)


def run_portal(binary: str, argv: list[str], *, env: dict[str, str], cwd: str | Path,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``portal ARGV`` as :func:`subprocess.run` with ``capture_output`` would."""
    if _cold(argv, env):
        return subprocess.run([binary, *argv], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)
    return _WARM.run(argv, env=env, cwd=str(cwd), timeout=timeout)


if __name__ == "__main__":
    atexit.register(lambda: Path(sys.argv[1]).unlink(missing_ok=True))
    serve(sys.argv[1])
