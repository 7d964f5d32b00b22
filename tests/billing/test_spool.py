"""Spool files in the format written before typed entries still replay, exactly once.

On the test Redis and SQL (SQLite and PostgreSQL): segments written by hand as the
earlier code wrote them — a settlement Redis lost (``done`` of an older generation),
one whose reservation vanished (``owed``), one Redis never took (``pending``) — are
charged once by the drainer and reach SQL with their usage rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.billing.heal import HotWatch, generation_token
from edge.billing.ledger_writer import LedgerWriter
from edge.billing.reservations import Billing
from edge.billing.spool import Spool, SpoolDrainer
from edge.db.models import LedgerEntry, UsageRecord
from edge.store.hotstore import HotStore
from tests.support.money import funded_key, wallet_of


@pytest.fixture
async def store(bare_store: HotStore, database: str) -> HotStore:
    assert await HotWatch(bare_store).ensure(timeout=5)  # the first heal of a new namespace
    return bare_store


async def drain(store: HotStore) -> None:
    writer = LedgerWriter(store, consumer="test")
    while await writer.drain_once(claim_idle_ms=0):
        pass


def write_segment(root: Path, records: list[dict]) -> Path:
    directory = root / "old-worker"
    directory.mkdir(parents=True, exist_ok=True)
    segment = directory / "1700000000.000000.jsonl"
    segment.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return segment


async def current(store: HotStore) -> str | None:
    raw = await store.client.get(store.generation)
    return generation_token(raw) if raw else None


async def test_old_spool_records_replay_once(store: HotStore, tmp_path: Path) -> None:
    row, record = await funded_key(1000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    # A reservation its owner could not settle (Redis refused): a pending record.
    await billing.reserve(record, "pending-1", prompt_tokens=100, completion_tokens=0,
                          input_price=1_000_000, output_price=1_000_000, meta={"model": "m"})
    usage = {"t": "usage", "rid": "", "key": row.id, "pt": 0, "ct": 0, "cost": 0,
             "model": "m", "node": "", "ep": "chat", "lat": 5, "status": 200, "st": 0,
             "cx": 0}
    spool = tmp_path / "spool"
    write_segment(spool, [
        {"k": "done", "gen": "older", "ref": "usage:lost-1",
         "entry": {**usage, "rid": "lost-1", "pt": 30, "cost": 30, "charged": 30}},
        {"k": "owed", "gen": "older", "ref": "usage:owed-1",
         "entry": {**usage, "rid": "owed-1", "pt": 20, "cost": 20, "charged": 20}},
        {"k": "pending", "gen": await current(store), "ref": "usage:pending-1",
         "entry": {**usage, "rid": "pending-1", "pt": 40, "cost": 40},
         "resv": {"rid": "pending-1", "key": row.id, "cost": 40, "tokens": 40}},
    ])
    drainer = SpoolDrainer(spool, billing, lambda: current(store))
    assert await drainer.drain_once(closed_after=0, pending_grace=0) == 3
    assert await drainer.drain_once(closed_after=0, pending_grace=0) == 0  # once
    await drain(store)
    wallet = await wallet_of(row)
    assert wallet.balance == 1000 - 30 - 20 - 40
    assert wallet.balance == sum(e.amount for e in await LedgerEntry.filter(account_id=row.id))
    used = dict(await UsageRecord.filter(key_id=row.id).values_list("request_id", "cost"))
    assert used == {"lost-1": 30, "owed-1": 20, "pending-1": 40}
    assert await billing.balance(row.id) == 1000 - 90
    await drainer.drain_once(closed_after=0)
    assert not list(spool.glob("*/*.jsonl"))  # all in SQL: deleted


async def test_a_record_that_does_not_decode_keeps_its_segment(store: HotStore,
                                                                tmp_path: Path) -> None:
    billing = Billing(store, reservation_ttl_ms=60_000)
    segment = write_segment(tmp_path / "spool", [
        {"k": "done", "gen": "older", "ref": "usage:odd", "entry": {"t": "usage", "key": "1"}}])
    drainer = SpoolDrainer(tmp_path / "spool", billing, lambda: current(store))
    assert await drainer.drain_once(closed_after=0) == 0
    assert segment.exists()


async def test_what_the_spool_writes_now_decodes_and_replays(store: HotStore,
                                                             tmp_path: Path) -> None:
    row, record = await funded_key(1000)
    spool = Spool(tmp_path / "spool", "w1")
    billing = Billing(store, reservation_ttl_ms=60_000, spool=spool)
    held = await billing.reserve(record, "r1", prompt_tokens=100, completion_tokens=0,
                                 input_price=1_000_000, output_price=1_000_000, meta={})
    await billing.settle_usage(held, held.usage(25, 0, model="m", node_id=None))
    spool.close()
    (line,) = [line for segment in (tmp_path / "spool" / "w1").glob("*.jsonl")
               for line in segment.read_text().splitlines()]
    written = json.loads(line)
    assert (written["k"], written["ref"]) == ("done", "usage:r1")
    assert written["entry"]["charged"] == 25 and written["entry"]["t"] == "usage"
    # Redis loses the stream before the writer copied it: the drainer charges it again.
    await store.client.delete(store.ledger_stream)
    await store.client.delete(store.generation)
    assert await HotWatch(store).ensure(timeout=5)
    drainer = SpoolDrainer(tmp_path / "spool", billing, lambda: current(store))
    assert await drainer.drain_once(closed_after=0) == 1
    await drain(store)
    wallet = await wallet_of(row)
    assert wallet.balance == 975
    assert await UsageRecord.filter(request_id="r1").values_list("cost", flat=True) == [25]
