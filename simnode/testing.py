"""Helpers for tests that run real simnode processes: start one, wait for it, read its SSE.

They ship with the package (like a stub broker ships with its library) so any suite
can start a node: ``with start_simnode("--model", "m") as node: ...``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Self

import httpx

__all__ = [
    "SimnodeProcess",
    "free_port",
    "json_events",
    "named_events",
    "sse_events",
    "start_simnode",
]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SimnodeProcess:
    """A ``python -m simnode`` subprocess; a context manager that stops it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        """Base URL of the node (without ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 15.0) -> float:
        """Poll ``/health`` until it answers 200; return the seconds it took.

        Raises:
            RuntimeError: when the process exits first.
            TimeoutError: when ``timeout`` seconds pass first.
        """
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"simnode exited with status {self.process.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"simnode on port {self.port} did not become healthy")

    def stop(self) -> None:
        """Terminate the process, killing it if it lingers past 5 seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_simnode(
    *args: str, port: int | None = None, wait: bool = True, quiet: bool = True
) -> SimnodeProcess:
    """Start ``python -m simnode ARGS --port PORT`` (a free port unless given).

    ``args`` must include ``--model``. With ``wait`` the call returns once ``/health``
    answers 200 (and stops the process if it never does).
    """
    port = port or free_port()
    argv = [sys.executable, "-m", "simnode", *args, "--port", str(port)]
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(argv, stdout=output, stderr=output, env=dict(os.environ))
    node = SimnodeProcess(process, port)
    if wait:
        try:
            node.wait_healthy()
        except BaseException:
            node.stop()
            raise
    return node


def sse_events(raw: str) -> list[str]:
    """Split an SSE body into the payloads of its ``data:`` events.

    Raises:
        ValueError: on an event that is not a single ``data:`` line.
    """
    events = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        if not block.startswith("data: ") or "\n" in block:
            raise ValueError(f"not a data event: {block!r}")
        events.append(block[len("data: ") :])
    return events


def json_events(raw: str) -> tuple[list[dict[str, Any]], bool]:
    """Return the JSON chunks of an SSE body, and whether it ended with ``data: [DONE]``."""
    events = sse_events(raw)
    done = bool(events) and events[-1] == "[DONE]"
    if done:
        events = events[:-1]
    return [json.loads(event) for event in events], done


def named_events(raw: str) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """Return the ``(event type, JSON data)`` of a named-event SSE body (Responses,
    Messages), and whether it ended with ``data: [DONE]``.

    Raises:
        ValueError: on an event that is not ``event: <type>`` then one ``data:`` line.
    """
    events: list[tuple[str, dict[str, Any]]] = []
    done = False
    for block in raw.split("\n\n"):
        if not block:
            continue
        if block == "data: [DONE]":
            done = True
            continue
        lines = block.split("\n")
        if len(lines) != 2 or not lines[0].startswith("event: ") or \
                not lines[1].startswith("data: "):
            raise ValueError(f"not a named event: {block!r}")
        events.append((lines[0][len("event: "):], json.loads(lines[1][len("data: "):])))
    return events, done
