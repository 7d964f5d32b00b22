"""Per-connection and per-key limits of the chat."""

from __future__ import annotations

import time

__all__ = ["MessageRate", "RoomQuota"]


class MessageRate:
    """A token bucket: ``rate`` frames per second, bursts up to ``burst``."""

    def __init__(self, rate: float = 5.0, burst: int = 10) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class RoomQuota:
    """How many rooms a key is in at once, counted in Redis across workers.

    A hash per key: room → open sockets. The hash expires unless refreshed, so
    a worker that died cannot lock a key out for long.
    """

    TTL = 3600

    def __init__(self, store, limit: int) -> None:
        self.store = store
        self.limit = limit

    def _key(self, key_id: int) -> str:
        return f"{self.store.ns}:keyrooms:{key_id}"

    async def enter(self, key_id: int, room: str) -> bool:
        name = self._key(key_id)
        async with self.store.client.pipeline(transaction=True) as pipe:
            pipe.hincrby(name, room, 1)
            pipe.hlen(name)
            pipe.expire(name, self.TTL)
            _count, rooms, _ = await pipe.execute()
        if rooms > self.limit:
            await self.leave(key_id, room)
            return False
        return True

    async def leave(self, key_id: int, room: str) -> None:
        name = self._key(key_id)
        if await self.store.client.hincrby(name, room, -1) <= 0:
            await self.store.client.hdel(name, room)
