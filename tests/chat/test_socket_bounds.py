"""A burst of sockets: bounded per key and per worker, refused with a close code, and
the worker's Redis connections stay few (one pub/sub connection for all its rooms)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import websockets

from tests.support.portal import PortalServer

PER_KEY = 20
PER_WORKER = 60
BURST = 600


@pytest.fixture(scope="module")
def bounded_portal(tmp_path_factory: pytest.TempPathFactory,
                   redis_url: str) -> Iterator[PortalServer]:
    root: Path = tmp_path_factory.mktemp("bounds")
    portal = PortalServer(root, redis_url, workers=1, env={
        "PORTAL_CHAT_SOCKETS_PER_KEY": str(PER_KEY),
        "PORTAL_CHAT_SOCKETS_PER_WORKER": str(PER_WORKER),
        "PORTAL_CHAT_ROOMS_PER_KEY": "3"})
    portal.cli("migrate")
    with portal:
        yield portal


async def _open(url: str, key: str) -> tuple[websockets.ClientConnection | None, int, str]:
    """``(socket, 0, "")`` once ready, or ``(None, close code, reason)``."""
    try:
        socket = await websockets.connect(url, open_timeout=30)
    except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
        return None, -1, repr(exc)
    try:
        await socket.send(json.dumps({"type": "auth", "key": key}))
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), 30))
            if event["type"] == "ready":
                return socket, 0, ""
    except websockets.ConnectionClosed as closed:
        return None, closed.rcvd.code if closed.rcvd else -2, \
            closed.rcvd.reason if closed.rcvd else ""


def _redis_connections(portal: PortalServer) -> int:
    """TCP connections the edge worker holds to Redis."""
    port = int(portal.redis_url.rsplit(":", 1)[1].split("/")[0])
    (pid,) = portal.worker_pids()
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port)


async def test_a_burst_of_one_key_is_bounded_and_refused_with_4029(
        bounded_portal: PortalServer) -> None:
    _id, key = bounded_portal.create_key("1")
    url = bounded_portal.url.replace("http://", "ws://") + "/ws/chat/crowd"
    before = _redis_connections(bounded_portal)
    results = await asyncio.gather(*(_open(url, key) for _ in range(BURST)))
    opened = [socket for socket, _code, _reason in results if socket is not None]
    codes = Counter(code for _socket, code, _reason in results)
    # Beyond the worker's bound (sockets still opening count) the answer is 1013, beyond
    # the key's 4029; nothing else, and never a plain close.
    assert len(opened) == PER_KEY, codes
    assert set(codes) == {0, 1013, 4029}, codes
    reasons = {reason for _s, code, reason in results if code == 4029}
    assert reasons == {f"A key may have {PER_KEY} chat sockets open at once."}
    reasons = {reason for _s, code, reason in results if code == 1013}
    assert reasons == {"This server has too many chat sockets open; try again later."}
    during = _redis_connections(bounded_portal)
    await asyncio.gather(*(socket.close() for socket in opened))
    await asyncio.sleep(1.0)
    after = _redis_connections(bounded_portal)
    # Setups share 32 slots: the pool grew by a few dozen at most, not by the burst.
    assert during - before < 50 and after - before < 50, (before, during, after)
    # The key's sockets are free again.
    again, code, reason = await _open(url, key)
    assert again is not None, (code, reason)
    await again.close()
    log = bounded_portal.log()
    assert "Traceback" not in log and "MaxConnectionsError" not in log, log[-3000:]


async def test_a_full_worker_refuses_with_1013(bounded_portal: PortalServer) -> None:
    keys = [bounded_portal.create_key("1")[1] for _ in range(PER_WORKER // PER_KEY + 1)]
    url = bounded_portal.url.replace("http://", "ws://") + "/ws/chat/full"
    held = []
    for key in keys[:-1]:
        for _ in range(PER_KEY):
            socket, code, reason = await _open(url, key)
            assert socket is not None, (code, reason)
            held.append(socket)
    socket, code, reason = await _open(url, keys[-1])
    assert socket is None and code == 1013 and "try again later" in reason
    await held.pop().close()
    await asyncio.sleep(0.3)
    socket, code, reason = await _open(url, keys[-1])
    assert socket is not None, (code, reason)
    await asyncio.gather(socket.close(), *(s.close() for s in held))
    assert "Traceback" not in bounded_portal.log()
