"""Refunds and lost disputes collect what open reservations held (real Redis, SQLite, PostgreSQL).

A debit takes the free balance now and defers the rest, up to what the key's
open reservations hold, to when they settle: each pays the debt from what it
releases (an ``owed:<request id>`` refund row), and debt that no reservation
holds any more (it was spent) is written off as the shortfall. Once every
reservation is settled the balance is what it would be had the refund come
after them, and SQL balance = sum of the ledger = live balance.

One micro-dollar a token (prompt and completion) makes reservations and costs
exact: a reservation of ``n`` prompt tokens holds ``n`` micro-dollars.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from edge.billing import credits
from edge.billing.ledger_writer import LedgerWriter, persist_entries
from edge.billing.reaper import reap_stale_reservations
from edge.billing.reservations import Billing, CreditResult, Reservation
from edge.db.models import ApiKey, LedgerEntry, LedgerKind, Payment, PaymentStatus
from edge.identity.keys import KeyRecord
from edge.payments import handlers
from edge.payments.events import StripeEvent
from edge.store.hotstore import HotStore
from tests.support.money import wallet_key, wallet_of

#: Micro-dollars per 1M tokens: one micro-dollar a token.
PRICE = 1_000_000
USD = 1_000_000


# ``store``: tests/support/hot.py (every suite has it, through tests/conftest.py).


@dataclasses.dataclass
class Account:
    """One API key, in SQL and in Redis, and the operations of the hot path on it."""

    store: HotStore
    billing: Billing
    key: ApiKey
    record: KeyRecord

    @property
    def id(self) -> int:
        return self.key.id

    async def credit(self, amount: int, reference: str,
                     kind: str = LedgerKind.REFUND) -> CreditResult:
        return await self.billing.credit(self.id, amount, reference=reference, kind=str(kind),
                                         note=f"test {reference}")

    async def reserve(self, rid: str, amount: int, *, ttl_ms: int | None = None) -> Reservation:
        return await self.billing.reserve(self.record, rid, prompt_tokens=amount,
                                          completion_tokens=0, input_price=PRICE,
                                          output_price=PRICE, meta={"model": "m"},
                                          ttl_ms=ttl_ms)

    async def settle(self, held: Reservation, cost: int) -> dict[str, str]:
        """Settle at ``cost`` micro-dollars; returns the usage entry it appended."""
        settled = await self.billing.settle(held, prompt_tokens=cost, completion_tokens=0,
                                            fields={"model": "m", "status": 200})
        assert settled.settled
        return await self.last_entry()

    async def last_entry(self) -> dict[str, str]:
        ((_id, fields),) = await self.store.client.xrevrange(self.store.ledger_stream, count=1)
        return {k.decode(): v.decode() for k, v in fields.items()}

    async def live(self) -> int:
        return int(await self.store.client.get(self.store.balance(self.id)) or 0)

    async def held(self) -> int:
        return int(await self.store.client.get(self.store.held(self.id)) or 0)

    async def owed(self) -> int:
        return int(await self.store.client.get(self.store.owed(self.id)) or 0)

    async def drain(self) -> list[dict[str, str]]:
        """Write the stream into SQL; returns the entries written (to replay them)."""
        raw = await self.store.client.xrange(self.store.ledger_stream)
        entries = [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in raw]
        writer = LedgerWriter(self.store, consumer="test")
        while await writer.drain_once(claim_idle_ms=0):
            pass
        assert await self.store.client.xlen(self.store.ledger_stream) == 0
        return entries

    async def ledger(self) -> dict[str, tuple[str, int]]:
        rows = await LedgerEntry.filter(account_id=self.id).values_list("reference", "kind",
                                                                    "amount")
        references = [reference for reference, _kind, _amount in rows]
        assert len(references) == len(set(references)), "a reference twice"
        return {reference: (str(kind), amount) for reference, kind, amount in rows}

    async def books(self) -> int:
        """Drain, then: SQL balance = sum of the ledger = live balance + what open
        reservations hold (SQL sees a reservation only once settled), and SQL owed =
        Redis owed; returns the balance."""
        await self.drain()
        wallet = await wallet_of(self.key)
        total = sum(amount for _kind, amount in (await self.ledger()).values())
        assert wallet.balance == total == await self.live() + await self.held()
        assert wallet.balance >= 0
        assert wallet.owed == await self.owed()
        return wallet.balance


async def account(store: HotStore, topup: int) -> Account:
    """A key with ``topup`` micro-dollars credited through Redis (balance loaded from SQL)."""
    key = await wallet_key()
    record = KeyRecord(id=key.id, prefix=key.prefix, key_hash="", name="t", rpm=10**6,
                       tpm=10**12, revoked=False, frozen=False, expires_at=None)
    made = Account(store, Billing(store, reservation_ttl_ms=60_000), key, record)
    if topup:
        await made.credit(topup, f"checkout:cs_{key.id}", kind=LedgerKind.TOPUP)
    return made


@pytest.mark.parametrize("cost", [0, 1 * USD, 4_910_000, 6 * USD],
                         ids=["unused", "partly-used", "all-used", "above-its-reservation"])
async def test_a_full_refund_during_a_reservation_collects_what_it_held(
        database: str, store: HotStore, cost: int) -> None:
    """$5 topped up, $4.91 reserved, $5 refunded: $0.09 now, the rest as it is released."""
    acct = await account(store, 5 * USD)
    held = await acct.reserve("r1", 4_910_000)
    assert await acct.live() == 90_000 and await acct.held() == 4_910_000

    refund = await acct.credit(-5 * USD, "refund:cs:re_1")
    assert (refund.applied, refund.deferred, refund.balance) == (-90_000, 4_910_000, 0)
    assert await acct.owed() == 4_910_000
    assert await acct.books() == 4_910_000  # in SQL, the reservation is not spent yet
    assert (await wallet_of(acct.key)).owed == 4_910_000
    ((kind, amount),) = [v for ref, v in (await acct.ledger()).items() if ref.startswith("ref")]
    assert (kind, amount) == ("refund", -90_000)
    note = await LedgerEntry.get(reference="refund:cs:re_1").values_list("note", flat=True)
    assert "asked -5000000" in note and "4910000 to collect from open reservations" in note

    entry = await acct.settle(held, cost)
    charged = min(cost, 4_910_000)  # above the reservation: only what the balance has (0)
    assert int(entry["charged"]) == charged
    assert int(entry.get("owed_paid", 0)) == 4_910_000 - charged  # the refund collected
    assert int(entry.get("owed_void", 0)) == charged  # the shortfall: credit spent
    assert await acct.live() == max(0, 5 * USD - cost - 5 * USD) == 0
    assert not await store.client.exists(store.held(acct.id), store.owed(acct.id))

    entries = await acct.drain()
    assert await acct.books() == 0
    assert (await wallet_of(acct.key)).owed == 0
    ledger = await acct.ledger()
    collected = -ledger.get("owed:r1", ("refund", 0))[1]
    assert collected == 4_910_000 - charged
    if collected:
        assert ledger["owed:r1"][0] == "refund"
    assert -ledger["refund:cs:re_1"][1] + collected == 5 * USD - charged  # the refund, in sum
    assert ledger.get("usage:r1", ("usage", 0))[1] == -charged

    # Replayed entries change nothing (the writer is idempotent by reference).
    await persist_entries(entries, [datetime.now(UTC)] * len(entries))
    assert await acct.books() == 0 and (await wallet_of(acct.key)).owed == 0
    assert await acct.ledger() == ledger

    # The $4.91 the reservation held is not spendable again; new credit is, all of it.
    await acct.credit(1 * USD, "checkout:cs_later", kind=LedgerKind.TOPUP)
    assert await acct.books() == 1 * USD


async def test_a_partial_refund_the_free_balance_covers_defers_nothing(
        database: str, store: HotStore) -> None:
    acct = await account(store, 5 * USD)
    held = await acct.reserve("r1", 2 * USD)
    refund = await acct.credit(-1 * USD, "refund:cs:re_1")
    assert (refund.applied, refund.deferred, refund.balance) == (-1 * USD, 0, 2 * USD)
    assert await acct.owed() == 0 and not await store.client.exists(store.owed(acct.id))
    entry = await acct.settle(held, 500_000)
    assert "owed_paid" not in entry and "owed_void" not in entry
    assert await acct.live() == 5 * USD - 500_000 - 1 * USD
    assert await acct.books() == 3_500_000
    ledger = await acct.ledger()
    assert not any(ref.startswith("owed:") for ref in ledger)
    assert ledger["refund:cs:re_1"] == ("refund", -1 * USD)
    assert (await wallet_of(acct.key)).owed == 0


@pytest.mark.parametrize(("costs", "order"), [
    ((0, 0), ("r1", "r2")),
    ((1_200_000, 300_000), ("r1", "r2")),
    ((1_200_000, 300_000), ("r2", "r1")),
    ((3 * USD, 0), ("r2", "r1")),  # r1 above its reservation, with nothing free to take
])
async def test_two_reservations_and_a_refund_bigger_than_both(
        database: str, store: HotStore, costs: tuple[int, int], order: tuple[str, str]) -> None:
    """$5 topped up, $1 spent, $2 + $1.50 reserved, $5 refunded: $0.50 now, up to $3.50
    later, and $1 short at once (it was spent)."""
    acct = await account(store, 5 * USD)
    spent = await acct.reserve("spent", 1 * USD)
    await acct.settle(spent, 1 * USD)
    reservations = {"r1": await acct.reserve("r1", 2 * USD),
                    "r2": await acct.reserve("r2", 1_500_000)}
    assert await acct.live() == 500_000 and await acct.held() == 3_500_000

    refund = await acct.credit(-5 * USD, "refund:cs:re_1")
    assert (refund.applied, refund.deferred) == (-500_000, 3_500_000)  # shortfall 1 now
    assert await acct.owed() == 3_500_000

    cost_of = dict(zip(("r1", "r2"), costs, strict=True))
    charged = {}
    for rid in order:
        entry = await acct.settle(reservations[rid], cost_of[rid])
        charged[rid] = int(entry["charged"])
        assert await acct.live() == 0
    assert charged == {rid: min(cost, reservations[rid].amount) for rid, cost in cost_of.items()}
    assert await acct.owed() == 0 and await acct.held() == 0
    assert await acct.books() == 0  # max(0, 5 - 1 - costs - 5)
    assert (await wallet_of(acct.key)).owed == 0
    ledger = await acct.ledger()
    collected = -sum(amount for ref, (_k, amount) in ledger.items() if ref.startswith("owed:"))
    assert collected == 3_500_000 - sum(charged.values())
    # The refund in sum: what was taken now and what the reservations gave back.
    assert 500_000 + collected == 5 * USD - 1 * USD - sum(charged.values())


async def test_a_second_refund_defers_only_what_the_first_left_held(
        database: str, store: HotStore) -> None:
    acct = await account(store, 5 * USD)
    held = await acct.reserve("r1", 3 * USD)
    first = await acct.credit(-3 * USD, "refund:cs:re_1")
    assert (first.applied, first.deferred) == (-2 * USD, 1 * USD)
    second = await acct.credit(-3 * USD, "refund:cs:re_2")
    assert (second.applied, second.deferred) == (0, 2 * USD)  # all that is left held
    third = await acct.credit(-1 * USD, "refund:cs:re_3")
    assert (third.applied, third.deferred) == (0, 0)  # nothing held for it: all shortfall
    assert await acct.owed() == 3 * USD
    await acct.settle(held, 0)
    assert await acct.books() == 0
    assert (await acct.ledger())["owed:r1"] == ("refund", -3 * USD)


async def test_a_top_up_while_debt_is_owed_stays_spendable(database: str,
                                                         store: HotStore) -> None:
    """Only released reservation credit pays the debt, never a later top-up."""
    acct = await account(store, 5 * USD)
    held = await acct.reserve("r1", 4_910_000)
    await acct.credit(-5 * USD, "refund:cs:re_1")
    await acct.credit(2 * USD, "checkout:cs_2", kind=LedgerKind.TOPUP)
    assert await acct.live() == 2 * USD and await acct.owed() == 4_910_000
    await acct.settle(held, 10_000)
    assert await acct.books() == 2 * USD  # 5 + 2 - 0.01 - 5, the refund after the request


async def test_the_reaper_collects_from_a_reservation_it_settles(database: str,
                                                                store: HotStore) -> None:
    acct = await account(store, 5 * USD)
    await acct.reserve("dead", 4 * USD, ttl_ms=1)  # its worker died: due at once
    refund = await acct.credit(-5 * USD, "refund:cs:re_1")
    assert refund.deferred == 4 * USD
    await asyncio.sleep(0.01)  # past its deadline (Redis's clock counts milliseconds)
    assert await reap_stale_reservations(acct.billing, grace_ms=0) == 1
    assert await acct.books() == 0
    assert (await acct.ledger())["owed:dead"] == ("refund", -4 * USD)  # nothing was delivered


async def test_a_lost_dispute_during_an_open_reservation(database: str, store: HotStore,
                                                        monkeypatch) -> None:
    """The webhook handler itself: its outcome says what is deferred, honestly."""
    monkeypatch.setattr(credits, "BOOKKEEPER_GRACE", 0.0)  # no bookkeeper here: drain now
    acct = await account(store, 0)
    session = f"cs_{acct.id}"
    await Payment.create(account_id=acct.id, session_id=session, payment_intent=f"pi_{acct.id}",
                         amount=8 * USD, paid=8 * USD, status=PaymentStatus.DISPUTED)
    await acct.credit(8 * USD, handlers.topup_reference(session), kind=LedgerKind.TOPUP)
    held = await acct.reserve("r1", 6 * USD)
    lost = StripeEvent(id="evt_1", type="charge.dispute.closed", livemode=False, object={
        "id": "dp_1", "object": "dispute", "status": "lost", "amount": 800, "currency": "usd",
        "charge": "ch_1", "payment_intent": f"pi_{acct.id}"})
    ctx = SimpleNamespace(settings=None, store=store)

    outcome = await handlers.on_dispute_closed(lost, ctx)  # type: ignore[arg-type]
    assert outcome == (f"dispute dp_1 lost; account {acct.id} debited 2.000000 of 8.000000 now, "
                       "6.000000 to collect from open reservations, shortfall 0.000000; "
                       "it stays frozen")
    again = await handlers.on_dispute_closed(lost, ctx)  # type: ignore[arg-type]
    assert "taken back already" in again
    assert await acct.live() == 0 and await acct.owed() == 6 * USD

    await acct.settle(held, 1_500_000)
    assert await acct.books() == 0
    ledger = await acct.ledger()
    assert ledger[f"dispute:{session}:dp_1"] == ("refund", -2 * USD)
    assert ledger["owed:r1"] == ("refund", -4_500_000)
    assert ledger["usage:r1"] == ("usage", -1_500_000)


async def test_a_refund_while_a_job_waits_collects_when_the_job_settles(
        database: str, store: HotStore) -> None:
    from datetime import UTC, datetime, timedelta

    from edge.db.models import Job, JobStatus
    from edge.jobs.store import settle_job

    acct = await account(store, 5 * USD)
    # A queued job holds its worst case until its deadline, owned by no worker.
    await acct.reserve("job-rid", 4 * USD, ttl_ms=3_600_000)
    job = await Job.create(id="job_" + uuid.uuid4().hex[:24], key_id=acct.id, model="m",
                           body={}, request_id="job-rid",
                           deadline_at=datetime.now(UTC) + timedelta(hours=1))
    refund = await acct.credit(-5 * USD, "refund:cs:re_job")
    assert (refund.applied, refund.deferred) == (-1 * USD, 4 * USD)
    assert await acct.live() == 0
    # The job is answered (1 USD of tokens), then settled like any job.
    await Job.filter(id=job.id).update(status=JobStatus.SUCCEEDED, prompt_tokens=1 * USD,
                                       finished_at=datetime.now(UTC))
    await job.refresh_from_db()
    assert await settle_job(job, acct.billing) == 1 * USD
    assert await acct.books() == 0  # had the refund come after the job: 5 - 1 - 4 = 0
    ledger = await acct.ledger()
    assert ledger["owed:job-rid"] == ("refund", -3 * USD)  # what the job's release paid
    assert ledger["refund:cs:re_job"] == ("refund", -1 * USD)
    assert ledger["usage:job-rid"] == ("usage", -1 * USD)
    assert (await wallet_of(acct.key)).owed == 0
