"""Notices when Redis no longer reflects SQL, and rebuilds its money state from SQL.

Redis holds the live balances, the open reservations and the ledger stream; SQL's
ledger is the truth. Redis can lose everything (``FLUSHALL``, a restart without
persistence) or go back in time (a restart without the last second of its
append-only file, a restore from an older snapshot, a failover that lost writes).

So the hot store carries a *generation*, ``$ns:gen`` =
``<token>:<SQL's lone changes>:<run_id>`` (:func:`edge.store.keys.generation`), written
by the last heal and naming the Redis server process (its ``run_id``) it was
written on and how many changes SQL had taken alone (``portal keys topup`` while
no Redis answered; ``installation.sql_only_changes``):

- the money scripts refuse to run without it (a flush is noticed by the next
  request, which gets a short 503);
- every new connection checks that it names the server it reached
  (:func:`edge.store.generation.check_connection`): a restart, a restore or a failover drops every
  connection, so none is used before its server was checked;
- each process also looks twice a second (:class:`HotWatch`), for ``/readyz``,
  and the bookkeeper compares the count of SQL's lone changes.

A heal, by whichever process notices first (one at a time, under a lock):

1. deletes the generation, so that the money scripts refuse while it works;
2. drains what the ledger stream still holds into SQL (those changes are real);
3. drops reservations that SQL has already settled (a restore brings them back)
   and keeps the others, summing what each key holds;
4. sets every key's live balance to its SQL balance less what it holds (and
   what it holds, and its refund debt as far as a reservation still backs it;
   the rest of the debt is collected now, as the lost reservations' release
   would have), mirrors the keys again and claims the namespace for this
   database;
5. writes a new generation.

Usage that Redis lost before it reached SQL comes back from the processes'
spools (:mod:`edge.billing.spool`), charged on top of the healed balances.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, cast

from edge import metrics
from edge.billing.entries import CreditEntry, encode, owed_heal_reference
from edge.store import keys
from edge.store.generation import (
    HotStale,
    check_connection,
    generation_matches,
    generation_token,
)
from edge.store.hotstore import RedisUnavailable
from edge.store.replies import text

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from edge.store.hotstore import HotStore

# HotStale, check_connection and generation_token live in edge.store.generation (the
# store's connection check needs them) and are re-exported here.
__all__ = ["HealReport", "HotStale", "HotWatch", "check_connection", "count_sql_only_change",
           "generation_token", "heal", "server_run_id", "sql_only_changes"]

log = logging.getLogger(__name__)

#: Seconds between two looks at the generation.
WATCH_INTERVAL = 0.5
#: Seconds a heal may hold its lock; another process takes over after that.
HEAL_LOCK_SECONDS = 60
#: Reservations looked at per round trip while healing.
SCAN_BATCH = 500


async def sql_only_changes() -> int:
    """How many balance changes SQL took while no Redis answered (``portal keys topup``)."""
    from edge.db.models import Installation

    row = await Installation.get_or_none(id=1).only("id", "sql_only_changes")
    return row.sql_only_changes if row else 0


async def count_sql_only_change() -> None:
    """Note a change made in SQL alone: the next look finds the hot store stale and heals."""
    from tortoise.expressions import F

    from edge.db import installation_identity
    from edge.db.models import Installation

    await installation_identity()
    await Installation.filter(id=1).update(sql_only_changes=F("sql_only_changes") + 1)


async def server_run_id(client: aioredis.Redis) -> str:
    info = await client.info("server")
    return str(info["run_id"])


class HealReport:
    """What one heal did, for logs and tests."""

    def __init__(self) -> None:
        self.drained = 0
        self.kept = 0
        self.dropped = 0
        self.keys = 0
        self.generation = ""
        self.seconds = 0.0

    def __repr__(self) -> str:
        return (f"HealReport(drained={self.drained}, kept={self.kept}, dropped={self.dropped}, "
                f"keys={self.keys}, generation={self.generation!r}, "
                f"seconds={self.seconds:.3f})")


async def heal(raw: HotStore) -> HealReport:
    """Rebuild the hot money state of ``raw``'s namespace from SQL; caller holds the lock.

    ``raw`` must be a store whose connections skip :func:`check_connection`.
    """
    from edge.billing.caps import rebuild_cap_windows
    from edge.billing.ledger_writer import LedgerWriter
    from edge.db import installation_identity
    from edge.db.models import Account, UsageRecord
    from edge.identity.keys import mirror_all_keys

    started = time.perf_counter()
    report = HealReport()
    client = raw.client
    await client.delete(raw.generation)
    writer = LedgerWriter(raw, consumer=f"heal:{secrets.token_hex(4)}")
    while count := await writer.drain_once(claim_idle_ms=0):
        report.drained += count

    held: dict[int, int] = {}  # by account
    cap_held: dict[tuple[int, str], int] = {}  # by key and cap window
    members = [text(m) for m in await client.zrange(raw.open_reservations, 0, -1)]
    for start in range(0, len(members), SCAN_BATCH):
        batch = members[start:start + SCAN_BATCH]
        async with client.pipeline(transaction=False) as pipe:
            for request_id in batch:
                pipe.hmget(raw.reservation(request_id), "key", "amount", "acct", "cw")
            rows = await pipe.execute()
        # A flat values_list is a list of values; Tortoise types it as a list of tuples.
        settled = set(cast(list[str], await UsageRecord.filter(request_id__in=batch)
                           .values_list("request_id", flat=True)))
        for request_id, (key, amount, account, window) in zip(batch, rows, strict=True):
            if key is None or request_id in settled:
                await client.delete(raw.reservation(request_id))
                await client.zrem(raw.open_reservations, request_id)
                report.dropped += 1
                continue
            account_id = int(account or key)  # reservations from before accounts: the key's
            held[account_id] = held.get(account_id, 0) + int(amount or 0)
            if window is not None:
                spot = (int(key), text(window))
                cap_held[spot] = cap_held.get(spot, 0) + int(amount or 0)
            report.kept += 1

    report.generation = secrets.token_hex(8)
    rows = await Account.all().values_list("id", "balance", "owed")
    async with client.pipeline(transaction=False) as pipe:
        for account_id, balance, owed in rows:
            holds = held.get(account_id, 0)
            live = int(balance) - holds
            keep = min(int(owed), holds)  # refund debt still backed by a reservation
            if owed > keep:
                # The rest was to come from reservations Redis lost, whose credit is
                # back in the balance: collect it now, as their release would have.
                collect = min(int(owed) - keep, max(0, live))
                live -= collect
                collected: dict[Any, Any] = encode(CreditEntry(
                    reference=owed_heal_reference(report.generation, account_id),
                    account_id=account_id,
                    kind="refund", amount=-collect, requested=keep - int(owed),
                    owed=keep - int(owed),
                    note="refund debt collected when Redis was rebuilt"))
                pipe.xadd(raw.ledger_stream, collected)
            pipe.set(raw.balance(account_id), live)
            for name, value in ((raw.held(account_id), holds), (raw.owed(account_id), keep)):
                if value:
                    pipe.set(name, value)
                else:
                    pipe.delete(name)
        await pipe.execute()
    report.keys = len(rows)
    await rebuild_cap_windows(raw, cap_held)
    await mirror_all_keys(raw)
    await client.set(keys.installation(raw.ns), await installation_identity())
    await client.set(raw.generation, f"{report.generation}:{await sql_only_changes()}:"
                                     f"{await server_run_id(client)}")
    await raw.publish(keys.EVENT_KEYS)
    report.seconds = time.perf_counter() - started
    metrics.HEALS.inc()
    return report


class HotWatch:
    """One process's view of whether the hot store reflects SQL, healing it when not.

    Parameters:
      raw: a store over a client without the connection check (it must reach a
        restarted Redis to heal it).
      can_heal: this process has the database open (edge workers, the bookkeeper).
      check_sql: also compare SQL's count of lone changes (the bookkeeper and
        commands; edge workers leave that SQL read off their event loop).
    """

    def __init__(self, raw: HotStore, *, can_heal: bool = True, check_sql: bool = True) -> None:
        self.raw = raw
        self.can_heal = can_heal
        self.check_sql = check_sql
        self.ready = False
        self.generation: str | None = None
        self.reason = "not checked yet"

    async def check(self) -> bool:
        """One look: is the generation there, written on this server, after SQL's changes?"""
        client = self.raw.client
        async with client.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.get(self.raw.generation)
            info, raw = await pipe.execute()
        matches = generation_matches(raw, str(info["run_id"]))
        self.reason = {True: "ok", False: "Redis was restarted, restored or replaced",
                       None: "Redis holds no generation (flushed, new or healing)"}[matches]
        if matches and self.check_sql:
            healed_at = int(text(raw).split(":")[1])
            try:
                taken_alone = await sql_only_changes()
            except Exception:  # the database is away: Redis's own checks still hold
                taken_alone = healed_at
            if taken_alone > healed_at:
                matches, self.reason = False, "the database took credit while Redis was away"
        self.ready = bool(matches)
        self.generation = generation_token(raw) if matches else None
        return self.ready

    async def ensure(self, *, timeout: float = 30.0) -> bool:
        """Heal now if needed (or wait for the process that does); True once ready."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.check():
                    return True
                if self.can_heal:
                    await self._heal_under_lock()
                    if await self.check():
                        return True
            except RedisUnavailable as exc:
                self.ready, self.reason = False, f"Redis unavailable: {exc}"
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)

    async def _heal_under_lock(self) -> None:
        client = self.raw.client
        lock = keys.heal_lock(self.raw.ns)
        token = secrets.token_hex(8)
        if not await client.set(lock, token, nx=True, ex=HEAL_LOCK_SECONDS):
            return
        try:
            log.warning("hot store: %s; rebuilding it from the database", self.reason)
            report = await heal(self.raw)
            log.warning("hot store healed: %r", report)
        finally:
            if text(await client.get(lock) or b"") == token:
                await client.delete(lock)

    async def run(self, stop: asyncio.Event) -> None:
        """Look every :data:`WATCH_INTERVAL` seconds; heal what needs it."""
        while not stop.is_set():
            try:
                await self.ensure(timeout=0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hot store watch failed; looking again")
            try:
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)
            except TimeoutError:
                pass
