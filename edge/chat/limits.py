"""Limits of the chat: frames per socket, rooms and sockets per key, sockets per worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING

from edge.store import keys as redis_keys

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["Crowded", "MessageRate", "RoomQuota", "SetupBusy", "SocketGate"]


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


class Crowded(StrEnum):
    """Why :meth:`RoomQuota.enter` refused a socket."""

    ROOMS = "rooms"
    SOCKETS = "sockets"


class RoomQuota:
    """How many rooms a key is in, and with how many sockets, across workers (Redis).

    A hash per key: room → open sockets; its length is the rooms, the sum of its
    values the sockets. The hash expires unless refreshed (each entry, and every
    :data:`REFRESH` seconds by the workers that hold its sockets), so the sockets
    of a worker that died stop counting once no live worker holds the key.

    Parameters:
      store: the Redis store.
      limit: rooms one key may be in at once.
    """

    #: Seconds the hash lives without a refresh.
    TTL = 120
    #: Seconds between two refreshes by a worker holding the key's sockets.
    REFRESH = 20.0

    def __init__(self, store: HotStore, limit: int) -> None:
        self.store = store
        self.limit = limit

    def _key(self, key_id: int) -> str:
        return redis_keys.key_rooms(self.store.ns, key_id)

    async def enter(self, key_id: int, room: str, *, sockets: int | None = None) -> Crowded | None:
        """Count one more socket of ``key_id`` in ``room``, or refuse it (and count nothing).

        Parameters:
          sockets: sockets one key may have open at once (None: no bound).
        """
        name = self._key(key_id)
        async with self.store.client.pipeline(transaction=True) as pipe:
            pipe.hincrby(name, room, 1)
            pipe.hvals(name)
            pipe.expire(name, self.TTL)
            _count, counts, _ = await pipe.execute()
        crowded = None
        if len(counts) > self.limit:
            crowded = Crowded.ROOMS
        elif sockets is not None and sum(max(0, int(c)) for c in counts) > sockets:
            crowded = Crowded.SOCKETS
        if crowded is not None:
            await self.leave(key_id, room)
        return crowded

    async def leave(self, key_id: int, room: str) -> None:
        name = self._key(key_id)
        if await self.store.client.hincrby(name, room, -1) <= 0:
            await self.store.client.hdel(name, room)

    async def refresh(self, key_ids: Iterable[int]) -> None:
        """Keep the hashes of keys with sockets here from expiring."""
        async with self.store.client.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.expire(self._key(key_id), self.TTL)
            await pipe.execute()


class SetupBusy(Exception):
    """No setup slot came free in time: the worker is busy opening other sockets."""


class SocketGate:
    """This worker's chat sockets: how many are open, how many talk to Redis at once.

    Opening a socket (its key, quota, room and history) and closing it take a few
    Redis commands; thousands of sockets opened at once would each hold a pooled
    connection for them, and grow the pool to its bound (redis-py's pool never
    shrinks). Setups and leaves wait for one of :data:`SETUP_SLOTS` instead.

    Parameters:
      setup_slots: sockets set up (or torn down) at once at most.
    """

    #: Sockets set up or torn down at once, per worker.
    SETUP_SLOTS = 32
    #: Seconds a new socket waits for a setup slot before it is refused (1013).
    SETUP_WAIT = 10.0

    def __init__(self, setup_slots: int = SETUP_SLOTS) -> None:
        self.open = 0
        self._slots = asyncio.Semaphore(setup_slots)

    def enter(self, limit: int) -> bool:
        """Count one more open socket, unless ``limit`` are open already."""
        if self.open >= limit:
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1

    @contextlib.asynccontextmanager
    async def slot(self, wait: float | None = SETUP_WAIT) -> AsyncIterator[None]:
        """Hold a setup slot; ``wait`` seconds at most (None: as long as it takes).

        Raises:
          SetupBusy: no slot came free within ``wait``.
        """
        try:
            await asyncio.wait_for(self._slots.acquire(), wait)
        except TimeoutError:
            raise SetupBusy() from None
        try:
            yield
        finally:
            self._slots.release()
