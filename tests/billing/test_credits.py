"""The one durable credit function, in-process on real Redis and SQL (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from edge.billing.credits import Credited, CreditNotDurable, credit, wait_persisted
from edge.billing.heal import sql_only_changes
from edge.db.models import ApiKey, LedgerEntry, LedgerKind
from edge.store.hotstore import HotStore
from tests.support.hot import hot_store
from tests.support.money import wallet_key, wallet_of


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[HotStore]:
    async with hot_store(redis_url, "cr") as hot:
        yield hot


async def _key(balance: int = 0) -> ApiKey:
    key = await wallet_key()
    if balance:
        await credit(key.id, balance, kind=LedgerKind.TOPUP, reference=f"open:{key.id}",
                     store=None)
    return key


async def _books(key: ApiKey) -> tuple[int, int]:
    return (await wallet_of(key)).balance, sum(
        e.amount for e in await LedgerEntry.filter(account_id=key.account_id))


async def test_a_reference_applies_once_however_concurrently(database: str,
                                                             store: HotStore) -> None:
    key = await _key()
    results = await asyncio.gather(*(
        credit(key.id, 2_000_000, kind=LedgerKind.TOPUP, reference="checkout:cs_1",
               note="top-up", store=store, grace=0.0) for _ in range(5)))
    assert sorted(results) == [Credited(0, True)] * 4 + [Credited(2_000_000, False)]
    assert await _books(key) == (2_000_000, 2_000_000)  # durable on return
    # Redis forgot its marker (a restart without persistence): SQL still says no.
    await store.client.delete(store.applied("checkout:cs_1"))
    again = await credit(key.id, 2_000_000, kind=LedgerKind.TOPUP, reference="checkout:cs_1",
                         store=store)
    assert again == Credited(0, True)
    assert await _books(key) == (2_000_000, 2_000_000)


async def test_a_debit_never_goes_below_zero(database: str, store: HotStore) -> None:
    key = await _key(1_000_000)
    taken = await credit(key.id, -3_000_000, kind=LedgerKind.REFUND, reference="refund:cs:re",
                         store=store, grace=0.0)
    assert taken == Credited(-1_000_000, False, 0)  # no reservation open: nothing deferred
    assert await _books(key) == (0, 0)
    row = await LedgerEntry.get(reference="refund:cs:re")
    assert row.amount == -1_000_000 and row.kind == LedgerKind.REFUND


async def test_without_redis_sql_takes_it_alone_and_counts_it(database: str) -> None:
    key = await _key(500_000)
    before = await sql_only_changes()
    made = await credit(key.id, -800_000, kind=LedgerKind.ADJUSTMENT, store=None)
    assert made == Credited(-500_000, False)
    assert await _books(key) == (0, 0)
    assert await sql_only_changes() == before + 1
    # Without a reference, each call is its own change.
    assert (await credit(key.id, 10, kind=LedgerKind.TOPUP, store=None)).applied == 10
    assert (await credit(key.id, 10, kind=LedgerKind.TOPUP, store=None)).applied == 10


async def test_a_credit_that_does_not_reach_sql_says_so(database: str,
                                                        store: HotStore) -> None:
    with pytest.raises(CreditNotDurable) as raised:
        await wait_persisted(store, "checkout:never", grace=0.0, timeout=0.3)
    assert raised.value.reference == "checkout:never"
    assert isinstance(raised.value, TimeoutError)
