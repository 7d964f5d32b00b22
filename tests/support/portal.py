"""A real ``portal serve`` in a subprocess, with its own data, namespace and port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from simnode.testing import free_port
from tests.support.templates import copy_sqlite_template
from tests.support.warm_cli import run_portal

__all__ = ["PORTAL_BIN", "PortalServer"]

PORTAL_BIN = str(Path(sys.executable).with_name("portal"))


class PortalServer:
    """One portal installation: a data directory, a database, a Redis namespace.

    Parameters:
      root: directory for its files.
      redis_url: the Redis to use (never an embedded one: tests share one).
      database_url: empty for SQLite in ``root``.
      workers: edge worker processes.
      env: more environment variables (settings).
    """

    def __init__(self, root: Path, redis_url: str, *, database_url: str = "",
                 workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespace = f"t{uuid.uuid4().hex[:10]}"
        self.redis_url = redis_url
        self.env = {
            **os.environ,
            "PORTAL_DATA_DIR": str(root / "data"),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_REDIS_URL": redis_url,
            "PORTAL_REDIS_NAMESPACE": self.namespace,
            "PORTAL_EMBEDDED_REDIS": "never",
            "PORTAL_PORT": str(self.port),
            "PORTAL_WORKERS": str(workers),
            "PORTAL_KEY_PEPPER": "test-pepper-" + self.namespace,
            "PORTAL_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "serve.log"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        #: The database ``portal migrate`` last brought up to date (start skips it then).
        self._migrated: str | None = None

    # -- the CLI --------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args == ("migrate",):
            self._from_template()
        result = run_portal(PORTAL_BIN, list(args), env=self.env, cwd=self.root, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"portal {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        if args == ("migrate",) and result.returncode == 0:
            self._migrated = self.env["PORTAL_DATABASE_URL"]
        elif args[:1] not in (("models",), ("nodes",), ("keys",)):
            self._migrated = None  # a restore, say, may have put an older schema back
        return result

    def _from_template(self) -> None:
        """A SQLite database not made yet starts as a copy of a migrated template, which
        ``portal migrate`` then finds up to date but for the database's own identity
        (tests/support/templates.py): seconds of CPU less per portal."""
        if self.env["PORTAL_DATABASE_URL"]:
            return
        database = Path(self.env["PORTAL_DATA_DIR"]) / "portal.sqlite3"
        if not database.exists():
            copy_sqlite_template(database)

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def add_model(self, name: str, *, input_price: str = "0.50", output_price: str = "1.50",
                  served_name: str | None = None, context: int = 8192,
                  kind: str = "generate") -> None:
        self.cli("models", "add", name, "--served-name", served_name or name,
                 "--input-price", input_price, "--output-price", output_price,
                 "--context", str(context), "--kind", kind)

    def add_node(self, model: str, url: str) -> int:
        return self.cli_json("nodes", "add", "--model", model, "--url", url)["id"]

    def create_key(self, credit: str = "10", **limits: int) -> tuple[int, str]:
        args = ["keys", "create", "--name", "test", "--credit", credit]
        for name, value in limits.items():
            args += [f"--{name}", str(value)]
        data = self.cli_json(*args)
        return data["id"], data["key"]

    # -- the server -----------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> PortalServer:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        if self._migrated != self.env["PORTAL_DATABASE_URL"]:  # one subprocess less
            self.cli("migrate")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([PORTAL_BIN, "serve"], env=self.env, cwd=self.root,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"portal serve exited:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    self._wait_all_workers()
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"portal serve did not become ready:\n{self.log()}")

    def _wait_all_workers(self) -> None:
        wanted = int(self.env["PORTAL_WORKERS"])
        deadline = time.monotonic() + 20
        while len(self.worker_pids()) < wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # the last worker binds after it is spawned

    def worker_pids(self) -> list[int]:
        """Pids of the edge worker processes (children of the serve process)."""
        if self.process is None:
            return []
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                listening = any(c.laddr and c.laddr.port == self.port and c.status == "LISTEN"
                                for c in child.net_connections(kind="tcp"))
            except psutil.Error:
                continue
            if listening:
                pids.append(child.pid)
        return pids

    def log(self, name: str = "serve") -> str:
        try:
            return (self.root / f"{name}.log").read_text()[-8000:]
        except OSError:
            return ""

    # -- other long-running commands (worker, scheduler) ------------------------------
    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Run ``portal ARGS`` in the background as ``name``; logs in ``name.log``."""
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen([PORTAL_BIN, *args], env=self.env, cwd=self.root,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.children[name] = process
        return process

    def start_worker(self, name: str = "worker", processes: int = 1,
                     threads: int = 8) -> subprocess.Popen[bytes]:
        process = self.spawn(name, "worker", "--processes", str(processes),
                             "--threads", str(threads))
        deadline = time.monotonic() + 30
        while "portal runtime open" not in self.log(name) and "Worker process is ready" \
                not in self.log(name):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"portal worker did not start:\n{self.log(name)}")
            time.sleep(0.1)
        return process

    def kill(self, name: str) -> None:
        """SIGKILL a background command and everything it started."""
        process = self.children.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def stop_child(self, name: str, timeout: float = 5) -> None:
        process = self.children.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        for name in list(self.children):
            self.stop_child(name, timeout=1)  # actors are idempotent: no need to be gentle
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # the main process stops its workers
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> PortalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
