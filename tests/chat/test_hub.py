"""The hub in-process, on a real Redis: one shared subscription, however many join at once."""

from __future__ import annotations

import asyncio

from edge.chat.hub import Member, RoomHub
from edge.chat.protocol import event
from edge.store.hotstore import HotStore


async def test_concurrent_first_joins_share_one_subscription(store: HotStore) -> None:
    hub = RoomHub(store)
    stop = asyncio.Event()
    runner = asyncio.create_task(hub.run(stop))
    members = [Member(f"m{i}", "busy", i % 7, f"user{i}", f"sk-ip-key{i % 7:05d}")
               for i in range(300)]
    await asyncio.gather(*(hub.join(m) for m in members))
    # One pub/sub connection, not one per join: redis-py's pub/sub opens a connection per
    # concurrent first command and keeps it. Commands (the joins' HSETs) give theirs back
    # to the pool, however many a burst opened; the pub/sub holds its own.
    in_use = store.client.connection_pool._in_use_connections
    assert len(in_use) == 1, len(in_use)
    assert hub._pubsub.connection in in_use
    assert hub.sockets == 300 and len(hub.by_prefix) == 7
    await hub.publish("busy", event("message", text="hello"))
    for member in members[:3]:
        text = await asyncio.wait_for(member.queue.get(), 5)
        while text is not None and '"message"' not in text:
            text = await asyncio.wait_for(member.queue.get(), 5)
        assert text is not None and '"hello"' in text

    closed = hub.close_key("sk-ip-key00003", 4001, "key revoked", event("error", code="x"))
    assert closed == len([m for m in members if m.key_id == 3])
    refused = next(m for m in members if m.key_id == 3)
    assert refused.closed and refused.close_code == 4001
    queued = [refused.queue.get_nowait() for _ in range(refused.queue.qsize())]
    assert queued == [event("error", code="x"), None]  # nothing of the room before it

    await asyncio.gather(*(hub.leave(m) for m in members))
    assert not hub.rooms and not hub.by_prefix and hub.sockets == 0
    stop.set()
    await runner
    await hub.close()
