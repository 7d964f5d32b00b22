"""The ledger writer on SQLite and PostgreSQL: every entry once, balances = ledger sums."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from tortoise.connection import get_connection

from edge.billing import ledger_writer
from edge.billing.ledger_writer import LedgerWriter, persist_entries
from edge.billing.reservations import Billing
from edge.db.models import ApiKey, LedgerEntry, UsageRecord
from edge.identity.keys import KeyRecord
from edge.store.hotstore import HotStore
from tests.support.money import wallet_key, wallet_of

# ``store``: tests/support/hot.py (every suite has it, through tests/conftest.py).


async def make_key(balance: int) -> ApiKey:
    key = await wallet_key()
    if balance:
        await persist_entries([{"t": "credit", "ref": f"open:{key.id}", "key": str(key.id),
                                "kind": "topup", "amount": str(balance)}], [datetime.now(UTC)])
    return key


async def books(key: ApiKey) -> tuple[int, int]:
    total = sum(e.amount for e in await LedgerEntry.filter(account_id=key.account_id))
    return (await wallet_of(key)).balance, total


def usage(rid: str, key: ApiKey, charged: int) -> dict[str, str]:
    return {"t": "usage", "rid": rid, "key": str(key.id), "pt": "3", "ct": "4",
            "charged": str(charged), "cost": str(charged), "model": "m", "node": "1",
            "ep": "chat", "lat": "5", "status": "200", "st": "0", "cx": "0"}


async def test_replayed_entries_change_nothing(database: str) -> None:
    key = await make_key(1000)
    now = datetime.now(UTC)
    batch = [usage("a", key, 10), usage("b", key, 20),
             {"t": "credit", "ref": "evt_1", "key": str(key.id), "kind": "topup",
              "amount": "500"}]
    for _ in range(3):
        await persist_entries(batch, [now] * 3)
    assert await books(key) == (1470, 1470)
    assert await UsageRecord.filter(key_id=key.id).count() == 2
    await key.refresh_from_db()
    assert key.spent == 30


async def test_zero_cost_usage_is_recorded_without_a_ledger_row(database: str) -> None:
    key = await make_key(100)
    await persist_entries([usage("z", key, 0)], [datetime.now(UTC)])
    assert await UsageRecord.filter(request_id="z").exists()
    assert not await LedgerEntry.filter(reference="usage:z").exists()


async def test_two_writers_drain_a_stream_exactly_once(database: str, store: HotStore) -> None:
    key = await make_key(0)
    await store.client.set(store.balance(key.id), 1_000_000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    record = KeyRecord(id=key.id, prefix=key.prefix, key_hash="", name="t", rpm=10**6,
                       tpm=10**9, revoked=False, frozen=False, expires_at=None)
    for i in range(300):
        held = await billing.reserve(record, f"r{i}", prompt_tokens=1, completion_tokens=1,
                                     input_price=1_000_000, output_price=1_000_000, meta={})
        await billing.settle(held, prompt_tokens=1, completion_tokens=1, fields={})
    await persist_entries([{"t": "credit", "ref": "opening", "key": str(key.id),
                            "kind": "topup", "amount": "1000000"}], [datetime.now(UTC)])

    writers = [LedgerWriter(store, consumer=f"w{i}") for i in range(2)]
    while await store.client.xlen(store.ledger_stream):
        await asyncio.gather(*(w.drain_once() for w in writers))
    assert await UsageRecord.filter(key_id=key.id).count() == 300
    assert await books(key) == (1_000_000 - 600, 1_000_000 - 600)
    assert int(await store.client.get(store.balance(key.id))) == 1_000_000 - 600


async def test_entries_of_a_dead_writer_are_claimed(database: str, store: HotStore,
                                                    monkeypatch) -> None:
    key = await make_key(0)
    await store.client.set(store.balance(key.id), 0)
    billing = Billing(store, reservation_ttl_ms=1)
    for i in range(5):
        await billing.credit(key.id, 100, reference=f"c{i}", kind="topup")
    dead = LedgerWriter(store, consumer="dead")
    await dead.ensure_group()
    # The dead writer read the entries but never wrote or acknowledged them.
    await store.client.xreadgroup(ledger_writer.GROUP, "dead", {store.ledger_stream: ">"})
    monkeypatch.setattr(ledger_writer, "CLAIM_IDLE_MS", 1)
    await asyncio.sleep(0.01)
    assert await LedgerWriter(store, consumer="alive").drain_once() == 5
    assert await books(key) == (500, 500)
    pending = await store.client.xpending(store.ledger_stream, ledger_writer.GROUP)
    assert pending["pending"] == 0


async def test_sql_dialect_is_what_we_think(database: str) -> None:
    dialect = get_connection("default").capabilities.dialect
    assert dialect == ("sqlite" if database.startswith("sqlite") else "postgres")


async def stamp_generation(store: HotStore) -> None:
    """What a heal leaves behind: the money scripts run only under a generation."""
    run_id = (await store.client.info("server"))["run_id"]
    await store.client.set(f"{store.ns}:gen", f"test:0:{run_id}")


async def wait_for_ledger(key: ApiKey, rows: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while await LedgerEntry.filter(account_id=key.account_id).count() < rows:
        assert time.monotonic() < deadline, f"fewer than {rows} ledger rows after {timeout}s"
        await asyncio.sleep(0.05)


async def test_the_writer_recreates_its_group_after_a_flush(database: str, store: HotStore,
                                                            caplog) -> None:
    key = await make_key(0)
    await stamp_generation(store)
    await store.client.set(store.balance(key.id), 0)
    billing = Billing(store, reservation_ttl_ms=60_000)
    writer = LedgerWriter(store, consumer="w")
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))  # blocks 1 s per read, as in production
    try:
        for i in range(3):
            await billing.credit(key.id, 100, reference=f"before{i}", kind="topup")
        await wait_for_ledger(key, 3)
        # A FLUSHALL, of this namespace only: the stream goes, and its group with it.
        await store.client.delete(*[k async for k in store.client.scan_iter(f"{store.ns}:*")])
        await stamp_generation(store)  # as a heal would, after the flush
        for i in range(3):  # the balance is reloaded from SQL; the stream is made anew
            await billing.credit(key.id, 100, reference=f"after{i}", kind="topup")
        await wait_for_ledger(key, 6)
    finally:
        stop.set()
        await running
    assert await books(key) == (600, 600)
    lost = [r for r in caplog.records
            if r.name == "edge.billing.ledger_writer" and "group is gone" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelname == "WARNING"
