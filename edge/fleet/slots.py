"""Admission control and cache-affine routing: how many calls each node runs at once,
over every worker and host, and which node holds a call's prefix.

A node takes at most its limit of calls (the model's ``node_slots``, or the batch
size learnt from its metrics, or ``PORTAL_NODE_SLOTS``); a call that finds every
node of its model full waits in the edge for a slot, up to a bound, rather than
swelling vLLM's own queue. Slots live in Redis (``take_slot.lua``), one sorted set
per node, leased: this process renews the leases of its open calls every
:data:`RENEW_EVERY` seconds, so the slots of a process that died free themselves
within :attr:`Slots.lease` seconds. Every slot taken is given back exactly once
(:meth:`Slots.give`), whatever ended the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge.fleet.affinity import EPSILON
from edge.store import keys
from edge.store.hotstore import LuaScript

if TYPE_CHECKING:
    from edge.fleet.registry import NodeInfo
    from edge.store.hotstore import HotStore

__all__ = ["Slots"]

log = logging.getLogger(__name__)

#: Seconds between two renewals of this process's leases.
RENEW_EVERY = 5.0


class Slots:
    """The slots this process holds, and the calls it holds back for want of one."""

    def __init__(self, store: HotStore, *, lease: float = 30.0,
                 affinity_ttl: float = 600.0) -> None:
        self.store = store
        self.lease = lease
        self.affinity_ttl = affinity_ttl  # 0: no cache-affine routing, least loaded only
        self._take = LuaScript(store.client, "take_slot")
        self.held: dict[str, int] = {}  # request id -> node id
        self.waiting: dict[str, str] = {}  # request id -> model
        self._removals: list[tuple[str, str]] = []  # (key, member) to remove from Redis
        self._sender: asyncio.Future[None] | None = None

    async def take(self, candidates: Sequence[NodeInfo], request_id: str,
                   affinity: int | None = None) -> NodeInfo | None:
        """A slot on one of ``candidates`` (least loaded first, as this worker sees them):
        the node that last served ``affinity`` while it has a free slot and its open
        calls are under its :attr:`~edge.fleet.registry.NodeInfo.keep` or within the
        bound, else the one with the fewest open calls. None: all are full."""
        if not candidates:
            return None
        ns = self.store.ns
        slot_keys = [keys.slots(ns, node.id) for node in candidates]
        remember = 0
        if affinity is not None and self.affinity_ttl > 0:
            remember = int(self.affinity_ttl * 1000)
            slot_keys.append(keys.affinity(ns, candidates[0].model_id, affinity))
        index = await self._take(
            keys=slot_keys,
            args=[request_id, int(self.lease * 1000), remember, EPSILON,
                  *(node.id for node in candidates), *(node.slots for node in candidates),
                  *(node.keep for node in candidates)])
        if not index:
            return None
        node = candidates[int(index) - 1]
        self.held[request_id] = node.id
        return node

    def give(self, request_id: str) -> None:
        """Give back the slot ``request_id`` holds (if any), without waiting for Redis.

        Removals are sent in batches by a task of their own (one pipeline for every slot
        given back meanwhile), so that a cancelled call still frees its slot and a busy
        worker pays one round trip for many; a slot lost with this process is freed by
        its lease.
        """
        node_id = self.held.pop(request_id, None)
        if node_id is not None:
            self._send_later(keys.slots(self.store.ns, node_id), request_id)

    async def hold_back(self, model: str, request_id: str, until: float) -> None:
        """Count ``request_id`` as waiting in the edge for a slot of ``model`` until the
        monotonic time ``until`` (the scaler reads these as demand)."""
        self.waiting[request_id] = model
        deadline_ms = int((time.time() + max(0.0, until - time.monotonic())) * 1000)
        await self.store.client.zadd(keys.waiting(self.store.ns, model),
                                     {request_id: deadline_ms})

    def let_go(self, request_id: str) -> None:
        """``request_id`` waits no more (it got a slot, or gave up)."""
        model = self.waiting.pop(request_id, None)
        if model is not None:
            self._send_later(keys.waiting(self.store.ns, model), request_id)

    def _send_later(self, key: str, member: str) -> None:
        self._removals.append((key, member))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the calls ending in this turn of the loop join the batch
        while self._removals:
            batch, self._removals = self._removals, []
            try:
                async with self.store.client.pipeline(transaction=False) as pipe:
                    for key, member in batch:
                        pipe.zrem(key, member)
                    await pipe.execute()
            except Exception as exc:
                log.warning("could not give %d slots back (their leases free them): %s",
                            len(batch), exc)

    async def renew(self) -> None:
        """Push back the leases of every slot this process holds, and of its waiters."""
        if not (self.held or self.waiting):
            return
        ns = self.store.ns
        deadline = int((time.time() + self.lease) * 1000)
        async with self.store.client.pipeline(transaction=False) as pipe:
            for request_id, node_id in list(self.held.items()):
                key = keys.slots(ns, node_id)
                pipe.zadd(key, {request_id: deadline}, xx=True)
                pipe.pexpire(key, int(self.lease * 1000))
            for request_id, model in list(self.waiting.items()):
                pipe.zadd(keys.waiting(ns, model), {request_id: deadline}, xx=True)
            await pipe.execute()

    async def keep_leases(self, stop: asyncio.Event) -> None:
        """Renew the leases every :data:`RENEW_EVERY` seconds until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RENEW_EVERY)
                return
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing slot leases failed; trying again in %.0fs",
                              RENEW_EVERY)

    async def drain(self) -> None:
        """Wait for the slots being given back (at shutdown)."""
        while self._sender is not None and not self._sender.done():
            await asyncio.gather(self._sender, return_exceptions=True)


async def open_calls(store: HotStore, node_ids: Sequence[int]) -> dict[int, int]:
    """Calls open on each of ``node_ids`` now, over every worker (expired leases left out)."""
    now_ms = int(time.time() * 1000)
    async with store.client.pipeline(transaction=False) as pipe:
        for node_id in node_ids:
            pipe.zcount(keys.slots(store.ns, node_id), now_ms, "+inf")
        counts = await pipe.execute()
    return {node_id: int(count) for node_id, count in zip(node_ids, counts, strict=True)}


async def waiting_calls(store: HotStore, model: str) -> int:
    """Calls of ``model`` held in the edge for a slot now, over every worker."""
    key, now_ms = keys.waiting(store.ns, model), int(time.time() * 1000)
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(key, "-inf", now_ms)  # left by a process that died
        pipe.zcard(key)
        _, count = await pipe.execute()
    return int(count)
