"""Open sockets obey the usable-key rule: revoked, frozen or expired keys lose them at once."""

from __future__ import annotations

import asyncio
import time

import redis

from tests.chat.conftest import MODEL
from tests.support.chat import ChatClient
from tests.support.standard import Deployment

#: Seconds within which an open socket of a refused key must be closed.
WITHIN = 2.0


async def _closed_within(client: ChatClient, started: float) -> float:
    await asyncio.wait_for(asyncio.shield(client._reader), WITHIN + 3)
    return time.monotonic() - started


def _freeze(deployment: Deployment, key: str) -> None:
    """What a dispute does to the mirror (edge/payments/handlers.py set_frozen), by hand."""
    portal = deployment.portal
    client = redis.Redis.from_url(portal.redis_url)
    prefix = key[:14]
    client.hset(f"{portal.namespace}:key:{prefix}", "frozen", 1)
    client.publish(f"{portal.namespace}:events", f"key:{prefix}")
    client.close()


async def test_revoking_closes_open_sockets_on_both_workers_at_once(
        room_portal: Deployment) -> None:
    key_id, key = room_portal.key("1")
    _other_id, other = room_portal.key("1")
    # Sockets of the key on both workers, and a bystander in the same room.
    mine: list[ChatClient] = []
    for _ in range(40):
        client = await ChatClient.connect(room_portal.url, "guarded", key)
        if client.worker in {c.worker for c in mine}:
            await client.close()
        else:
            mine.append(client)
        if len(mine) == 2:
            break
    assert len(mine) == 2
    bystander = await ChatClient.connect(room_portal.url, "guarded", other)

    room_portal.portal.cli("keys", "revoke", str(key_id))  # it publishes, then exits
    started = time.monotonic()
    for client in mine:
        assert await _closed_within(client, started) < WITHIN
        assert client.socket.close_code == 4001
        assert "revoked" in client.socket.close_reason
        assert client.events[-1]["type"] == "error"
        assert client.events[-1]["code"] == "invalid_api_key"
    # The room goes on without them: nothing of it reaches them any more.
    await bystander.send(type="message", text="are they gone?", ask=False)
    await bystander.wait_for("message", role="user")
    await asyncio.sleep(0.3)
    for client in mine:
        assert not [e for e in client.events if e.get("text") == "are they gone?"]
    await bystander.close()


async def test_freezing_closes_open_sockets_with_4003(room_portal: Deployment) -> None:
    _key_id, key = room_portal.key("1")
    client = await ChatClient.connect(room_portal.url, "frosty", key)
    await client.send(type="ping")
    await client.wait_for("pong")
    started = time.monotonic()
    _freeze(room_portal, key)
    assert await _closed_within(client, started) < WITHIN
    assert client.socket.close_code == 4003
    assert client.events[-1]["code"] == "key_frozen"
    # And a new socket of a frozen key is refused with the same code.
    url = room_portal.url.replace("http://", "ws://") + "/ws/chat/frosty"
    import json

    import websockets

    async with websockets.connect(url) as socket:
        await socket.send(json.dumps({"type": "auth", "key": key}))
        assert json.loads(await socket.recv())["type"] == "error"
        try:
            await socket.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4003


async def test_a_key_that_expires_loses_its_socket_within_a_second(
        room_portal: Deployment) -> None:
    data = room_portal.portal.cli_json("keys", "create", "--name", "brief", "--credit", "1",
                                       "--expires-in-days", str(3 / 86400))
    client = await ChatClient.connect(room_portal.url, "mayfly", data["key"])
    expires = time.monotonic() + 3 - 0.5  # the CLI took some of the 3 s
    await client.send(type="history")
    await client.wait_for("history")
    await asyncio.wait_for(asyncio.shield(client._reader), 10)
    late = time.monotonic() - expires
    assert late < WITHIN, late
    assert client.socket.close_code == 4001
    assert "expired" in client.events[-1]["message"]
    assert MODEL  # same deployment as the room tests


async def test_a_key_whose_routes_drop_chat_loses_its_sockets(room_portal: Deployment) -> None:
    key_id, key = room_portal.key("1")
    client = await ChatClient.connect(room_portal.url, "routed", key)
    await client.send(type="ping")
    await client.wait_for("pong")
    started = time.monotonic()
    room_portal.portal.cli("keys", "update", str(key_id), "--routes", "chat/completions")
    assert await _closed_within(client, started) < WITHIN
    assert client.socket.close_code == 4003
    assert client.events[-1]["code"] == "permission_denied"
    assert "may not use chat" in client.events[-1]["message"]
