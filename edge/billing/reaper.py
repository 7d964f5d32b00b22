"""Settles reservations whose edge process died before settling them.

Two rules find them. A reservation whose owner (the process that made it, see
:mod:`edge.billing.heartbeat`) has no heartbeat any more belongs to a dead process: it is
settled within seconds of the death. A reservation past its deadline (plus a
grace period) belongs to a request whose worker is gone or stuck: streams push
their deadline forward as they deliver. That second rule is the only one for
reservations without an owner (a queued job's: the job, not a process, holds it).

The reaper charges what the reservation's progress fields say was delivered
(nothing, for a request that never answered) and releases the rest, through the
same settle script, so a late settlement by a living worker and the reaper
cannot both count.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from edge.billing.entries import UsageEntry
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.billing.reservations import Billing
    from edge.store.hotstore import HotStore

__all__ = ["Reaper", "open_reservations", "reap_stale_reservations"]

log = logging.getLogger(__name__)

#: Seconds an owner's heartbeat must stay missing, seen on two rounds, before its
#: reservations are settled: a worker whose beat was late (a slow Redis, a long
#: pause) keeps them. Its key's TTL (3 s) has passed by the first round already.
OWNER_GRACE = 1.0
#: Open reservations whose owner one round looks at (a pipelined HGET each).
SCAN_SIZE = 2000


async def reap_stale_reservations(billing: Billing, grace_ms: int, limit: int = 200) -> int:
    """Settle up to ``limit`` stale reservations; returns how many were settled here."""
    client = billing.store.client
    now_ms = await _now_ms(billing)
    stale = await client.zrangebyscore(billing.store.open_reservations, "-inf",
                                       now_ms - grace_ms, start=0, num=limit)
    settled = 0
    for raw_id in stale:
        settled += await _settle_abandoned(billing, text(raw_id), now_ms, "stale")
    return settled


class Reaper:
    """One bookkeeper's reaper: both rules, and what the owner rule remembers.

    Parameters:
      billing: settles.
      grace_ms: milliseconds past its deadline before a reservation is stale.
      owner_grace: seconds an owner's heartbeat stays missing before its
        reservations are settled (:data:`OWNER_GRACE`).
      limit: reservations settled per rule and round at most.
      scan: open reservations whose owner a round looks at; beyond that, the
        next rounds go on where this one stopped.
    """

    def __init__(self, billing: Billing, grace_ms: int, *, owner_grace: float = OWNER_GRACE,
                 limit: int = 200, scan: int = SCAN_SIZE) -> None:
        self.billing = billing
        self.grace_ms = grace_ms
        self.owner_grace = owner_grace
        self.limit = limit
        self.scan = scan
        self._offset = 0
        #: Owners seen without a heartbeat, and since when (monotonic seconds).
        self._missing: dict[str, float] = {}

    async def round(self) -> int:
        """Run both rules once; returns how many reservations were settled here."""
        settled = await reap_stale_reservations(self.billing, self.grace_ms, self.limit)
        return settled + await self.reap_orphans()

    async def reap_orphans(self) -> int:
        """Settle reservations whose owner's heartbeat is gone (since an earlier round)."""
        store = self.billing.store
        client = store.client
        start = self._offset
        ids = [text(raw) for raw in await client.zrange(store.open_reservations, start,
                                                           start + self.scan - 1)]
        whole = start == 0 and len(ids) < self.scan
        self._offset = 0 if len(ids) < self.scan else start + len(ids)
        if not ids:
            self._missing.clear()
            return 0
        async with client.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.hget(store.reservation(request_id), "own")
            owners = await pipe.execute()
        held: dict[str, list[str]] = {}
        for request_id, owner in zip(ids, owners, strict=True):
            if owner:
                held.setdefault(text(owner), []).append(request_id)
        if whole:  # forget owners that hold nothing any more
            self._missing = {o: t for o, t in self._missing.items() if o in held}
        if not held:
            return 0
        async with client.pipeline(transaction=False) as pipe:
            for owner in held:
                pipe.exists(store.heartbeat(owner))
            alive = await pipe.execute()
        now = time.monotonic()
        dead: list[str] = []
        for owner, beating in zip(held, alive, strict=True):
            if beating:
                self._missing.pop(owner, None)
            elif owner not in self._missing:
                self._missing[owner] = now
            elif now - self._missing[owner] >= self.owner_grace:
                dead.append(owner)
        if not dead:
            return 0
        now_ms = await _now_ms(self.billing)
        settled = 0
        for owner in dead:
            for request_id in held[owner]:
                if settled >= self.limit:
                    return settled
                settled += await _settle_abandoned(self.billing, request_id, now_ms,
                                                   f"owner {owner} is gone")
        return settled


async def open_reservations(store: HotStore) -> tuple[int, float]:
    """How many reservations are open, and how many seconds the earliest deadline is
    past (0 when none is): what the reaper has before it, for the metrics."""
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zcard(store.open_reservations)
        pipe.zrange(store.open_reservations, 0, 0, withscores=True)
        (now_s, now_us), count, earliest = await pipe.execute()
    now_ms = now_s * 1000 + now_us // 1000
    overdue = (now_ms - earliest[0][1]) / 1000 if earliest else 0.0
    return int(count), max(0.0, overdue)


async def _now_ms(billing: Billing) -> int:
    """Redis's clock: the one the scripts put in deadlines and ``created``."""
    now_s, now_us = await billing.store.client.time()
    return now_s * 1000 + now_us // 1000


async def _settle_abandoned(billing: Billing, request_id: str, now_ms: int, why: str) -> int:
    """Charge a reservation's recorded progress and release the rest; 1 if settled here."""
    store = billing.store
    client = store.client
    held = await client.hgetall(store.reservation(request_id))
    if not held:
        await client.zrem(store.open_reservations, request_id)
        return 0
    fields = {text(k): text(v) for k, v in held.items()}
    entry = UsageEntry.priced(
        request_id=request_id, key_id=int(fields["key"]),
        account_id=int(fields.get("acct") or fields["key"]),
        prompt_tokens=int(fields.get("pt", 0)), completion_tokens=int(fields.get("ct", 0)),
        input_price=int(fields.get("pin", 0)), output_price=int(fields.get("pout", 0)),
        model=fields.get("model", ""),
        node_id=int(fields["node"]) if fields.get("node") else None,
        endpoint=fields.get("ep", "chat"),
        latency_ms=max(0, now_ms - int(fields.get("created", now_ms))), status=499,
        streamed=fields.get("st", "0") == "1", cancelled=True)
    result = await billing.settle_usage(request_id, entry)
    if not result.settled:
        return 0
    log.warning("reaped reservation %s (%s): charged %d micro-dollars for %d+%d tokens",
                request_id, why, result.charged, entry.prompt_tokens, entry.completion_tokens)
    return 1
