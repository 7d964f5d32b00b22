"""A portal with small bounds on receiving requests, and raw-socket helpers to probe them.

Shared by the package (a portal takes a while to start on a busy machine). One
worker, so that the body budget under test is the only one; a head and a body may
each take one second; bodies are at most 200 kB and the worker holds 400 kB of them.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Iterator

import pytest

from simnode.testing import SimnodeProcess, start_simnode
from tests.support.portal import PortalServer

MODEL = "m1"
#: Seconds each of a request's head and body may take (PORTAL_HEAD/BODY_TIMEOUT).
BOUND = 1.0
MAX_BODY = 200_000
BUDGET = 400_000
#: Seconds a simnode stream of 16 tokens lasts: longer than both bounds together.
STREAM_SECONDS = 16 / 5


@dataclasses.dataclass
class Edge:
    portal: PortalServer
    node: SimnodeProcess
    key: str

    @property
    def url(self) -> str:
        return self.portal.url

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.portal.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def head(self, method: str, path: str, *headers: str) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: portal", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length: (status, headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def closed(sock: socket.socket, timeout: float = 5) -> bool:
    """True when the server closes the connection within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def openai_error(body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


@pytest.fixture(scope="package")
def edge(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Edge]:
    with start_simnode("--model", MODEL, "--tokens-per-second", "5") as node:
        portal = PortalServer(tmp_path_factory.mktemp("http"), redis_url, workers=1, env={
            "PORTAL_HEAD_TIMEOUT": str(BOUND), "PORTAL_BODY_TIMEOUT": str(BOUND),
            "PORTAL_MAX_BODY_BYTES": str(MAX_BODY), "PORTAL_BODY_BUDGET_BYTES": str(BUDGET)})
        portal.cli("migrate")
        portal.add_model(MODEL)
        portal.add_node(MODEL, node.url)
        _id, key = portal.create_key("5")
        with portal:
            yield Edge(portal, node, key)


class LogWatch:
    """What the portal logs from now on: ``problems()`` lists tracebacks and errors."""

    def __init__(self, portal: PortalServer) -> None:
        self.path = portal.log_path
        self.start = self.path.stat().st_size

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.start)
            return log.read().decode(errors="replace")

    def problems(self) -> list[str]:
        return [line for line in self.text().splitlines()
                if "Traceback" in line or "ERROR" in line or "Error" in line]


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)
