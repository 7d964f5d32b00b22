"""A cluster for lifecycle tests: moto's EC2, a portal, a Dramatiq worker, simnodes."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simnode.testing import SimnodeProcess, free_port, start_simnode
from tests.support.moto import MotoServer, moto_server
from tests.support.portal import PortalServer
from tests.support.services import sql_query

ADMIN = "admin-secret-for-tests"
MODEL = "llama"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@dataclasses.dataclass
class Cluster:
    portal: PortalServer
    moto: MotoServer
    nodes: list[SimnodeProcess] = dataclasses.field(default_factory=list)
    closed: bool = False

    @property
    def url(self) -> str:
        return self.portal.url

    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, self.url + "/admin" + path,
                             headers={"authorization": f"Bearer {ADMIN}"}, timeout=30, **kwargs)

    def sql(self, query: str, *params: object) -> list[tuple]:
        return sql_query(f"sqlite://{self.portal.root / 'data' / 'portal.sqlite3'}", query,
                         *params)

    def node(self, node_id: int) -> dict:
        (row,) = [n for n in self.admin("GET", "/nodes").json()["data"] if n["id"] == node_id]
        return row

    def wait_node(self, node_id: int, timeout: float = 30, **wanted: object) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            row = self.node(node_id)
            if all(row[k] == v for k, v in wanted.items()):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"node {node_id} is {row}, wanted {wanted}")
            time.sleep(0.1)

    def register(self, instance_id: str, port: int, instance_type: str = "g5.xlarge") -> int:
        """Pin an instance's node to a local port (where its simnode will listen)."""
        return self.portal.cli_json("nodes", "add", "--model", MODEL, "--url",
                                    f"http://127.0.0.1:{port}", "--instance-id",
                                    instance_id, "--instance-type", instance_type)["id"]

    def simnode_when_running(self, instance_id: str, port: int,
                             *args: str) -> threading.Thread:
        """Start a simnode on ``port`` once moto reports the instance running: the node's
        vLLM coming up after its boot."""
        def watch() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not self.closed:
                try:
                    running = self.moto.state(instance_id) == "running"
                except Exception:  # moto went away with the test
                    return
                if running:
                    self.nodes.append(start_simnode("--model", MODEL, *args, port=port))
                    return
                time.sleep(0.1)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread


@contextlib.contextmanager
def open_cluster(tmp_path: Path, redis_url: str, moto: MotoServer,
                 **env: str) -> Iterator[Cluster]:
    """A portal of two workers and a Dramatiq worker on ``moto`` (``env`` added to the
    portal's: ``AWS_ENDPOINT_URL`` of a gate in front of moto, say)."""
    moto.reset()
    portal = PortalServer(tmp_path, redis_url, workers=2, env={
        **moto.env, "PORTAL_ADMIN_TOKEN": ADMIN, "PORTAL_AWS_REGIONS": "us-east-1",
        "PORTAL_JOB_LEASE": "3", "PORTAL_BOOT_TIMEOUT": "60", "PORTAL_LOG_LEVEL": "INFO",
        "PORTAL_HEALTH_FAIL_THRESHOLD": "1", "PORTAL_WARMING_RETRY_AFTER": "30",
        "PORTAL_JOBS_SWEEP_INTERVAL": "1", "PORTAL_HEALTH_INTERVAL": "1",
        "PORTAL_SYNC_INTERVAL": "2", "PORTAL_SCALE_INTERVAL": "1", **env,
    })
    portal.cli("migrate")
    portal.add_model(MODEL)
    made = Cluster(portal, moto)
    try:
        portal.start()
        portal.start_worker()
        yield made
    finally:
        made.closed = True
        portal.stop()
        for node in made.nodes:
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, moto: MotoServer) -> Iterator[Cluster]:
    with open_cluster(tmp_path, redis_url, moto) as made:
        yield made


def unused_port() -> int:
    return free_port()
