"""The Lua scripts on a real Redis: reserve, settle, credit and reap, exactly once."""

from __future__ import annotations

import asyncio

import pytest

from edge.billing.reaper import reap_stale_reservations
from edge.billing.reservations import Billing
from edge.errors import InsufficientCredit, RateLimited
from edge.identity.keys import KeyRecord
from edge.store.hotstore import HotStore


def key(key_id: int = 1, rpm: int = 1000, tpm: int = 10_000_000) -> KeyRecord:
    return KeyRecord(id=key_id, prefix="sk-ip-test0000", key_hash="", name="t", rpm=rpm,
                     tpm=tpm, revoked=False, frozen=False, expires_at=None)


# ``store``: tests/support/hot.py (every suite has it, through tests/conftest.py).


async def funded(store: HotStore, micros: int, key_id: int = 1) -> Billing:
    await store.client.set(store.balance(key_id), micros)
    return Billing(store, reservation_ttl_ms=60_000)


async def reserve(billing: Billing, rid: str, prompt: int, completion: int, k=None):
    return await billing.reserve(k or key(), rid, prompt_tokens=prompt,
                                 completion_tokens=completion, input_price=1_000_000,
                                 output_price=2_000_000, meta={"model": "m"})


async def test_reserve_then_settle_refunds_the_difference(store: HotStore) -> None:
    billing = await funded(store, 1000)
    held = await reserve(billing, "r1", 100, 200)  # 100 + 400 µ$
    assert held.amount == 500 and held.balance_after == 500
    settled = await billing.settle(held, prompt_tokens=10, completion_tokens=20,
                                   fields={"status": 200})
    assert (settled.charged, settled.balance, settled.settled) == (50, 950, True)
    again = await billing.settle(held, prompt_tokens=10, completion_tokens=20, fields={})
    assert not again.settled and await billing.balance(1) == 950
    entries = await store.client.xrange(store.ledger_stream)
    assert len(entries) == 1 and entries[0][1][b"charged"] == b"50"


async def test_settle_above_the_reservation_never_goes_negative(store: HotStore) -> None:
    billing = await funded(store, 120)
    held = await reserve(billing, "r1", 50, 0)  # holds 50
    settled = await billing.settle(held, prompt_tokens=500, completion_tokens=0, fields={})
    assert settled.charged == 120 and settled.balance == 0


async def test_concurrent_reservations_never_overspend(store: HotStore) -> None:
    billing = await funded(store, 1000)

    async def attempt(i: int) -> bool:
        try:
            await reserve(billing, f"r{i}", 30, 10)  # 50 µ$ each
            return True
        except InsufficientCredit:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(100)))
    assert results.count(True) == 20
    assert await billing.balance(1) == 0


async def test_insufficient_credit_changes_nothing(store: HotStore) -> None:
    billing = await funded(store, 10)
    with pytest.raises(InsufficientCredit):
        await reserve(billing, "r1", 100, 100)
    assert await billing.balance(1) == 10
    assert not await store.client.exists(store.reservation("r1"))


async def test_requests_per_minute_bucket(store: HotStore) -> None:
    billing = await funded(store, 10**9)
    limited = key(rpm=3)
    for i in range(3):
        await reserve(billing, f"r{i}", 1, 1, limited)
    with pytest.raises(RateLimited) as refused:
        await reserve(billing, "r9", 1, 1, limited)
    assert 1 <= refused.value.retry_after <= 20  # one request comes back every 20 s


async def test_credit_applies_once_per_reference(store: HotStore) -> None:
    billing = await funded(store, 0)
    results = await asyncio.gather(*(
        billing.credit(1, 700, reference="evt_1", kind="topup") for _ in range(50)))
    assert sum(not r.duplicate for r in results) == 1
    assert await billing.balance(1) == 700
    debit = await billing.credit(1, -1000, reference="refund_1", kind="refund")
    assert (debit.applied, debit.balance) == (-700, 0)  # never below zero


async def test_credit_loads_an_unloaded_balance_from_sql_first(store: HotStore,
                                                             monkeypatch) -> None:
    billing = Billing(store, reservation_ttl_ms=1000)

    async def from_sql(key_id: int) -> int:
        await store.client.set(store.balance(key_id), 300, nx=True)
        return 300

    monkeypatch.setattr(billing, "load_balance", from_sql)
    result = await billing.credit(7, 200, reference="x", kind="topup")
    assert result.balance == 500


async def test_reaper_charges_recorded_progress_and_releases_the_rest(store: HotStore) -> None:
    billing = Billing(store, reservation_ttl_ms=1)  # due at once
    await store.client.set(store.balance(1), 10_000)
    held = await reserve(billing, "dead", 10, 1000)
    await store.progress(keys=[store.reservation("dead"), store.open_reservations],
                         args=["dead", 10, 7, 1])
    await asyncio.sleep(0.01)
    assert await reap_stale_reservations(billing, grace_ms=0) == 1
    expected = 10 * 1 + 7 * 2  # prices: 1 and 2 µ$ per token
    assert await billing.balance(1) == 10_000 - expected
    (_id, fields), = await store.client.xrange(store.ledger_stream)
    assert fields[b"charged"] == str(expected).encode() and fields[b"cx"] == b"1"
    assert held.request_id == "dead"
    assert await reap_stale_reservations(billing, grace_ms=0) == 0
