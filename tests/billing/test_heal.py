"""The hot store's generation, the heal from SQL, and what Redis lost charged again.

In process, on the test Redis (a namespace of its own) and SQLite: the edge's
own code paths, without the processes the fault suite (tests/faults/) runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge.billing.heal import HotStale, HotWatch, check_connection, count_sql_only_change, heal
from edge.billing.ledger_writer import LedgerWriter
from edge.billing.reservations import Billing, HotStoreHealing
from edge.billing.spool import Spool, SpoolDrainer
from edge.db.models import ApiKey, LedgerEntry, UsageRecord
from edge.identity.keys import KeyRecord
from edge.store.hotstore import HotStore
from tests.support.money import funded_key, wallet_of


@pytest.fixture
async def store(bare_store: HotStore, database: str) -> HotStore:
    assert await HotWatch(bare_store).ensure(timeout=5)  # the first heal of a new namespace
    return bare_store


async def reserve(billing: Billing, record: KeyRecord, rid: str, micros: int):
    return await billing.reserve(record, rid, prompt_tokens=micros, completion_tokens=0,
                                 input_price=1_000_000, output_price=1_000_000,
                                 meta={"model": "m"})


async def drain(store: HotStore) -> None:
    writer = LedgerWriter(store, consumer="test")
    while await writer.drain_once(claim_idle_ms=0):
        pass


async def books(row: ApiKey) -> tuple[int, int]:
    wallet = await wallet_of(row)
    return wallet.balance, sum(e.amount for e in await LedgerEntry.filter(account_id=row.id))


async def test_scripts_refuse_without_a_generation(store: HotStore) -> None:
    row, record = await funded_key(1000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    await store.client.delete(store.generation)
    with pytest.raises(HotStoreHealing):
        await reserve(billing, record, "r1", 10)
    with pytest.raises(HotStoreHealing):
        await billing.credit(row.id, 5, reference="c1", kind="topup")


async def test_a_heal_rebuilds_balances_keeps_open_reservations_and_drops_settled_ones(
        store: HotStore) -> None:
    row, record = await funded_key(1000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    open_one = await reserve(billing, record, "r-open", 100)
    settled = await reserve(billing, record, "done", 50)
    snapshot = await store.client.hgetall(store.reservation("done"))
    await billing.settle(settled, prompt_tokens=20, completion_tokens=0, fields={})
    await drain(store)
    # Redis goes back in time: the settled reservation is back, the balance is wrong.
    await store.client.hset(store.reservation("done"), mapping=snapshot)
    await store.client.zadd(store.open_reservations, {"done": 1})
    await store.client.set(store.balance(row.id), 777)
    report = await heal(store)
    assert (report.kept, report.dropped) == (1, 1)
    assert await billing.balance(row.id) == 1000 - 20 - 100  # SQL less what "r-open" holds
    assert not await store.client.exists(store.reservation("done"))
    await billing.settle(open_one, prompt_tokens=30, completion_tokens=0, fields={})
    await drain(store)
    assert await books(row) == (950, 950)
    assert await billing.balance(row.id) == 950


async def test_a_reservation_lost_with_redis_is_still_charged(store: HotStore) -> None:
    row, record = await funded_key(1000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    held = await reserve(billing, record, "lost", 300)
    keys = [k async for k in store.client.scan_iter(f"{store.ns}:*")]
    await store.client.delete(*keys)  # FLUSHALL of this namespace, mid-request
    assert await HotWatch(store).ensure(timeout=5)
    assert await billing.balance(row.id) == 1000  # healed from SQL: nothing held any more
    outcome = await billing.settle(held, prompt_tokens=120, completion_tokens=0, fields={})
    assert outcome.settled and outcome.charged == 120
    await drain(store)
    assert await books(row) == (880, 880)
    assert await billing.balance(row.id) == 880
    assert await UsageRecord.filter(request_id="lost").count() == 1
    # Settling it again (a retry) charges nothing more.
    again = await billing.settle(held, prompt_tokens=120, completion_tokens=0, fields={})
    assert not again.settled
    await drain(store)
    assert await books(row) == (880, 880)


async def test_a_settlement_redis_refuses_is_kept_and_settled_later(
        store: HotStore, tmp_path: Path, monkeypatch) -> None:
    from edge.billing import reservations as billing_module

    monkeypatch.setattr(billing_module, "SETTLE_PATIENCE", 0.3)
    row, record = await funded_key(1000)
    spool = Spool(tmp_path / "spool", "w1")
    billing = Billing(store, reservation_ttl_ms=60_000, spool=spool)
    held = await reserve(billing, record, "later", 300)
    generation = await store.client.get(store.generation)
    await store.client.delete(store.generation)  # Redis refuses (healing) for a while
    outcome = await billing.settle(held, prompt_tokens=40, completion_tokens=0, fields={})
    assert outcome.deferred and outcome.charged == 40 and billing.pending
    assert await billing.settle_pending() == 0  # still refused
    await store.client.set(store.generation, generation)
    assert await billing.settle_pending() == 1 and not billing.pending
    await drain(store)
    assert await books(row) == (960, 960)
    assert await billing.balance(row.id) == 960
    spool.close()
    kinds = [line.split('"k":"')[1].split('"')[0]
             for segment in (tmp_path / "spool" / "w1").glob("*.jsonl")
             for line in segment.read_text().splitlines()]
    assert kinds == ["pending", "done"]


async def test_the_spool_charges_again_what_redis_lost(store: HotStore, tmp_path: Path) -> None:
    row, record = await funded_key(1000)
    spool = Spool(tmp_path / "spool", "w1")
    billing = Billing(store, reservation_ttl_ms=60_000, spool=spool)
    kept = await reserve(billing, record, "kept", 100)
    lost = await reserve(billing, record, "lost", 100)
    await billing.settle(kept, prompt_tokens=10, completion_tokens=0, fields={})
    await drain(store)  # "kept" reached SQL
    await billing.settle(lost, prompt_tokens=25, completion_tokens=0, fields={})
    await store.client.delete(store.ledger_stream)  # "lost" never did: Redis lost it
    await store.client.delete(store.generation)
    assert await HotWatch(store).ensure(timeout=5)
    assert await billing.balance(row.id) == 990  # SQL's truth, without "lost"
    spool.close()

    async def generation() -> str | None:
        raw = await store.client.get(store.generation)
        return raw.decode().partition(":")[0] if raw else None

    drainer = SpoolDrainer(tmp_path / "spool", billing, generation)
    assert await drainer.drain_once(closed_after=0) == 1  # "lost" charged again, once
    assert await drainer.drain_once(closed_after=0) == 0
    await drain(store)
    assert await books(row) == (965, 965)
    assert await billing.balance(row.id) == 965
    await drainer.drain_once(closed_after=0)
    assert not list((tmp_path / "spool").glob("*/*.jsonl"))  # all in SQL: deleted


async def test_a_connection_to_another_server_is_refused(store: HotStore, redis_url) -> None:
    import redis.asyncio as aioredis

    await store.client.set(store.generation, "old:0:someotherserver")
    checked = aioredis.Redis.from_url(redis_url, redis_connect_func=check_connection(store.ns))
    try:
        with pytest.raises(HotStale):
            await checked.ping()
    finally:
        await checked.aclose()
    watch = HotWatch(store)
    assert not await watch.check()
    assert await watch.ensure(timeout=5) and watch.generation != "old"


async def test_a_change_sql_took_alone_makes_the_store_stale(store: HotStore) -> None:
    watch = HotWatch(store)
    assert await watch.check()
    await count_sql_only_change()
    started = time.monotonic()
    assert not await watch.check()
    assert await watch.ensure(timeout=5) and time.monotonic() - started < 5


async def test_refund_debt_of_reservations_redis_lost_is_collected_by_the_heal(
        store: HotStore) -> None:
    row, record = await funded_key(1000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    kept = await reserve(billing, record, "kept", 300)
    await reserve(billing, record, "lost", 600)
    refund = await billing.credit(row.id, -1000, reference="refund:1", kind="refund")
    assert (refund.applied, refund.deferred) == (-100, 900)
    await drain(store)
    wallet = await wallet_of(row)
    assert (wallet.balance, wallet.owed) == (900, 900)
    # Redis goes back to a state without "lost" (say, a restore): only "kept" is held.
    await store.client.delete(store.reservation("lost"))
    await store.client.zrem(store.open_reservations, "lost")
    await heal(store)
    await drain(store)
    wallet = await wallet_of(row)
    assert (wallet.balance, wallet.owed) == (300, 300)  # 600 collected now, 300 still backed
    assert await billing.balance(row.id) == 0
    assert int(await store.client.get(store.owed(row.id))) == 300
    assert int(await store.client.get(store.held(row.id))) == 300
    # "kept" settles at 50: its release pays the rest of the debt.
    await billing.settle(kept, prompt_tokens=50, completion_tokens=0, fields={})
    await drain(store)
    assert await books(row) == (0, 0)
    wallet = await wallet_of(row)
    assert wallet.owed == 0 and await billing.balance(row.id) == 0
