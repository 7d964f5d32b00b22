"""Copies the Redis ledger stream into SQL, in batches, exactly once per reference.

Every balance change is first an entry of the stream ``$ns:ledger`` (appended by
the settle and credit scripts). Writers read it through one consumer group, so
each entry goes to one writer at a time; entries of a writer that died are
claimed by another after :data:`CLAIM_IDLE_MS`. A batch is one SQL transaction:
``INSERT … ON CONFLICT DO NOTHING RETURNING`` tells which ledger rows are new, and
only those move the key balances, so replaying an entry changes nothing.
The entries' format is :mod:`edge.billing.entries`'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ResponseError
from tortoise.transactions import in_transaction

from edge.billing.entries import (
    CreditEntry,
    Entry,
    MalformedEntry,
    UnknownEntry,
    UsageEntry,
    decode,
)
from edge.store.hotstore import RedisUnavailable
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["Backlog", "LedgerWriter", "backlog", "persist_entries"]

log = logging.getLogger(__name__)

#: Consumer group shared by every writer.
GROUP = "ledger-writers"
#: Entries read per batch.
BATCH_SIZE = 500
#: Milliseconds an entry may stay unacknowledged before another writer claims it.
CLAIM_IDLE_MS = 30_000


#: A stream entry as read: its id and its raw fields (None: deleted while pending).
RawEntry = tuple[str, dict[bytes, bytes] | None]


class LedgerWriter:
    """Drains the ledger stream into SQL; one per process that runs it.

    Parameters:
      store: the Redis store.
      consumer: this writer's name in the group (default: host and pid).
    """

    def __init__(self, store: HotStore, consumer: str | None = None) -> None:
        self.store = store
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._group_ready = False
        self._warned_group_lost = False

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # "0": a group made after entries were written still sees all of them.
            await self.store.client.xgroup_create(self.store.ledger_stream, GROUP, id="0",
                                                  mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def drain_once(self, *, block_ms: int | None = None,
                         claim_idle_ms: int | None = None) -> int:
        """Persist one batch of new entries (and stale ones of dead writers).

        Parameters:
          block_ms: milliseconds to wait for new entries (None: do not wait).
          claim_idle_ms: take over entries another writer has held this long
            (default :data:`CLAIM_IDLE_MS`; 0 when every other writer is stopped).

        Returns the number of entries handled.
        """
        await self.ensure_group()
        client = self.store.client
        stream = self.store.ledger_stream
        entries: list[RawEntry] = []
        idle = CLAIM_IDLE_MS if claim_idle_ms is None else claim_idle_ms
        try:
            claimed = await client.xautoclaim(stream, GROUP, self.consumer, idle,
                                              start_id="0-0", count=BATCH_SIZE)
            entries += _decode(claimed[1])
            if len(entries) < BATCH_SIZE:
                fresh = await client.xreadgroup(GROUP, self.consumer, {stream: ">"},
                                                count=BATCH_SIZE - len(entries),
                                                block=None if entries else block_ms)
                # RESP2 (connect_redis does not ask for RESP3, whose shape differs):
                # [[stream, entries]], empty or None when nothing came.
                for _name, items in cast("list[list[Any]]", fresh or []):
                    entries += _decode(items)
        except ResponseError as exc:
            if not _group_gone(exc):
                raise
            self._lose_group(exc)
            return 0
        self._warned_group_lost = False
        if not entries:
            return 0
        await persist_entries([fields for _id, fields in entries if fields],
                              [_entry_time(entry_id) for entry_id, fields in entries if fields])
        ids = [entry_id for entry_id, _ in entries]
        async with client.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
        return len(entries)

    def _lose_group(self, exc: ResponseError) -> None:
        """The stream went (a FLUSHALL, a deleted key): make the group again next round."""
        self._group_ready = False
        if not self._warned_group_lost:
            self._warned_group_lost = True
            log.warning("ledger writer: the ledger stream's consumer group is gone (%s); "
                        "recreating it", exc)

    async def run(self, stop: asyncio.Event, *, block_ms: int = 1000) -> None:
        """Drain until ``stop`` is set, backing off while Redis or SQL is away."""
        delay = 0.1
        while not stop.is_set():
            try:
                await self.drain_once(block_ms=block_ms)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except RedisUnavailable as exc:
                self._group_ready = False
                log.warning("ledger writer: Redis unavailable (%s); retrying", exc)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("ledger writer: batch failed; it will be retried")
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 5.0)


@dataclasses.dataclass(slots=True, frozen=True)
class Backlog:
    """The ledger stream's entries not yet in SQL: a writer deletes what it wrote."""

    entries: int
    oldest_age: float  # seconds since the oldest was appended (0: there is none)


async def backlog(store: HotStore) -> Backlog:
    """Read the backlog in one round trip (the metrics' ledger lag), on Redis's clock."""
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.xlen(store.ledger_stream)
        pipe.xrange(store.ledger_stream, count=1)
        (now_s, now_us), length, first = await pipe.execute()
    if not first:
        return Backlog(int(length), 0.0)
    appended_ms = int(text(first[0][0]).split("-", 1)[0])
    return Backlog(int(length), max(0.0, now_s + now_us / 1e6 - appended_ms / 1000))


def _group_gone(exc: ResponseError) -> bool:
    """NOGROUP; or, for a read blocked when the stream was deleted, Redis 7's UNBLOCKED."""
    text = str(exc)
    return "NOGROUP" in text or ("UNBLOCKED" in text and "no longer exists" in text)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def _decode(items: list[Any]) -> list[RawEntry]:
    """Stream ids as text; the fields stay raw (:func:`persist_entries` decodes them)."""
    return [(text(entry_id), fields) for entry_id, fields in items]


def _entry_time(entry_id: str) -> datetime:
    return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, UTC)


async def persist_entries(entries: Sequence[Entry | Mapping[Any, Any]],
                          times: Sequence[datetime]) -> None:
    """Write ledger and usage rows for stream entries in one transaction, idempotently.

    ``entries``: typed entries, or raw ones (a stream entry's fields; an entry of an
    unknown type is logged and skipped).

    Refund debt (``accounts.owed``, see ``edge/store/lua/credit.lua``): a credit entry's
    ``owed`` (the part of a debit deferred to open reservations) adds to it when its
    ledger row is new; a usage entry's ``owed_paid`` (debt collected from what the
    reservation released) is one more ledger row, ``owed:<request id>``, and with its
    ``owed_void`` (debt written off) takes from it when its usage row is new. So a
    account's balance stays the sum of its ledger, and a refund is, in sum, its own row
    plus those collections. A new usage charge also adds to its key's ``spent``.
    """
    usage_rows: list[tuple[Any, ...]] = []
    ledger_rows: list[tuple[Any, ...]] = []
    node_used: dict[int, datetime] = {}
    # Changes of accounts.owed, applied only if the row they ride on is new.
    owed_by_reference: dict[str, tuple[int, int]] = {}
    owed_by_request: dict[str, tuple[int, int]] = {}
    # The key of each usage charge, whose spend it adds to if its ledger row is new.
    key_by_reference: dict[str, int] = {}
    for raw, at in zip(entries, times, strict=True):
        try:
            entry = raw if isinstance(raw, UsageEntry | CreditEntry) else decode(raw)
        except UnknownEntry:
            log.error("ledger writer: skipping an entry of unknown type: %r", raw)
            continue
        account_id = entry.account_id
        if isinstance(entry, UsageEntry):
            if entry.charged is None:
                raise MalformedEntry(f"usage entry {entry.request_id} without 'charged'")
            charged = entry.charged
            rid = entry.request_id
            usage_rows.append((
                rid, account_id, entry.key_id, entry.model, entry.node_id, entry.endpoint,
                entry.prompt_tokens,
                entry.completion_tokens, charged, entry.latency_ms, entry.status,
                entry.streamed, entry.cancelled, entry.counted_by, at))
            if charged:
                ledger_rows.append((account_id, "usage", -charged, entry.reference,
                                    entry.model[:500], at))
                key_by_reference[entry.reference] = entry.key_id
            owed_paid, owed_void = entry.owed_paid, entry.owed_void
            if owed_paid:
                ledger_rows.append((account_id, "refund", -owed_paid, f"owed:{rid}",
                                    f"refund collected from the credit reservation "
                                    f"{rid} released", at))
            if owed_paid or owed_void:
                owed_by_request[rid] = (account_id, -(owed_paid + owed_void))
            node = entry.node_id
            if node is not None and at > node_used.get(node, at.min.replace(tzinfo=UTC)):
                node_used[node] = at
        else:
            note = entry.note
            requested, owed = entry.asked, entry.owed
            if owed:
                note = (f"{note} (asked {requested}, balance allowed {entry.amount}, "
                        f"{owed} to collect from open reservations)").strip()
                owed_by_reference[entry.reference] = (account_id, owed)
            elif requested != entry.amount:
                note = f"{note} (asked {requested}, balance allowed {entry.amount})".strip()
            ledger_rows.append((account_id, entry.kind, entry.amount, entry.reference,
                                note[:500], at))
    async with in_transaction() as conn:
        sql = _Sql(conn.capabilities.dialect)
        usage_rows = [(*row[:-1], sql.time(row[-1])) for row in usage_rows]
        ledger_rows = [(*row[:-1], sql.time(row[-1])) for row in ledger_rows]
        deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # balance, spent, owed
        key_spent: dict[int, int] = defaultdict(int)
        usage_values = [v for row in usage_rows for v in row]
        if owed_by_request:
            # execute_query_dict fetches rows on every driver (asyncpg's execute_query
            # does not return them for an INSERT).
            for row in await conn.execute_query_dict(
                    sql.insert_usage(len(usage_rows), returning=True), usage_values):
                if (debt := owed_by_request.get(row["request_id"])) is not None:
                    deltas[debt[0]][2] += debt[1]
        elif usage_rows:
            await conn.execute_query(sql.insert_usage(len(usage_rows)), usage_values)
        for node, at in node_used.items():
            # What idle nodes are judged by; the hot path never touches SQL for it.
            await conn.execute_query(sql.touch_node(), [sql.time(at), node, sql.time(at)])
        if ledger_rows:
            inserted = await conn.execute_query_dict(sql.insert_ledger(len(ledger_rows)),
                                                     [v for row in ledger_rows for v in row])
            for row in inserted:
                delta = deltas[int(row["account_id"])]
                delta[0] += int(row["amount"])
                if row["kind"] == "usage":
                    delta[1] -= int(row["amount"])
                    if (key := key_by_reference.get(row["reference"])) is not None:
                        key_spent[key] -= int(row["amount"])
                if (debt := owed_by_reference.get(row["reference"])) is not None:
                    delta[2] += debt[1]
        for account_id in sorted(deltas):
            balance, spent, owed_change = deltas[account_id]
            await conn.execute_query(sql.update_account(),
                                     [balance, spent, owed_change, account_id])
        for key_id in sorted(key_spent):
            await conn.execute_query(sql.update_key(), [key_spent[key_id], key_id])


class _Sql:
    """The statements, in the placeholder style of the connection's driver."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgres"

    def time(self, at: datetime) -> datetime | str:
        """asyncpg takes datetimes; SQLite gets the text Tortoise itself writes."""
        return at if self.postgres else at.isoformat(sep=" ")

    def _values(self, rows: int, width: int) -> str:
        if not self.postgres:
            one = "(" + ",".join("?" * width) + ")"
            return ",".join([one] * rows)
        return ",".join(
            "(" + ",".join(f"${r * width + c + 1}" for c in range(width)) + ")"
            for r in range(rows))

    def insert_usage(self, rows: int, *, returning: bool = False) -> str:
        return (
            "INSERT INTO usage_log (request_id, account_id, key_id, model, node_id, endpoint, "
            "prompt_tokens, completion_tokens, cost, latency_ms, status, streamed, cancelled, "
            f"counted_by, created_at) VALUES {self._values(rows, 15)} "
            "ON CONFLICT (request_id) DO NOTHING"
            + (" RETURNING request_id" if returning else ""))

    def insert_ledger(self, rows: int) -> str:
        return (
            "INSERT INTO ledger (account_id, kind, amount, reference, note, created_at) "
            f"VALUES {self._values(rows, 6)} ON CONFLICT (reference) DO NOTHING "
            "RETURNING account_id, amount, kind, reference")

    def touch_node(self) -> str:
        if self.postgres:
            return ("UPDATE nodes SET last_used_at = $1 WHERE id = $2 "
                    "AND (last_used_at IS NULL OR last_used_at < $3)")
        return ("UPDATE nodes SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)")

    def update_account(self) -> str:
        if self.postgres:
            return ("UPDATE accounts SET balance = balance + $1, spent = spent + $2, "
                    "owed = owed + $3 WHERE id = $4")
        return ("UPDATE accounts SET balance = balance + ?, spent = spent + ?, owed = owed + ? "
                "WHERE id = ?")

    def update_key(self) -> str:
        if self.postgres:
            return "UPDATE api_keys SET spent = spent + $1 WHERE id = $2"
        return "UPDATE api_keys SET spent = spent + ? WHERE id = ?"
