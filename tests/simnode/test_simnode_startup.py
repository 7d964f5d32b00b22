"""``--startup-delay`` keeps the port closed for a while, like a model loading."""

from __future__ import annotations

import socket
import time

from simnode.testing import start_simnode


def test_port_opens_only_after_the_startup_delay(node_args: tuple[str, ...]) -> None:
    started = time.monotonic()
    with start_simnode(*node_args, "--startup-delay", "1.0", wait=False) as node:
        time.sleep(0.3)
        with socket.socket() as probe:
            probe.settimeout(0.5)
            assert probe.connect_ex(("127.0.0.1", node.port)) != 0
        node.wait_healthy()
        assert time.monotonic() - started >= 1.0


def test_python_m_simnode_rejects_bad_options(node_args: tuple[str, ...]) -> None:
    node = start_simnode(*node_args, "--reply-tokens", "0", wait=False)
    assert node.process.wait(timeout=10) == 2
