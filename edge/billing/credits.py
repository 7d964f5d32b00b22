"""Durable credit: every change of a balance that is not a metered request's charge.

Top-ups (a paid Stripe Checkout Session, ``portal keys topup``), refunds and lost
disputes (debits), and the give-back of a refund that failed all go through
:func:`credit`. Its guarantees, whoever calls it:

- **Once per reference.** SQL's unique ``ledger.reference`` is asked first (Redis's
  marker may have expired, or Redis may have been reset), then the credit script
  applies the change at most once more per reference, however often and however
  concurrently it is called.
- **Durable on return.** The change is in SQL when :func:`credit` returns: the
  bookkeeper usually writes it within milliseconds; after ``grace`` seconds this
  process drains the ledger stream itself; after :data:`PERSIST_TIMEOUT` it gives
  up with :class:`CreditNotDurable` (calling again with the same reference is safe).
- **Never below zero.** A debit takes what the balance has now and defers what the
  account's open reservations hold to when they settle (``deferred``; they pay it from
  what they release, ``owed:<request id>`` rows); the rest is a shortfall.
- **SQL alone when no Redis runs** (only possible with the embedded server): the
  change goes straight to SQL and is counted, so that the Redis that comes back is
  found stale and healed from SQL (:mod:`edge.billing.heal`).

An account's opening credit is not a credit: it is written with the account's row, in
the same transaction (:func:`edge.identity.accounts.create_key`).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from edge.billing.entries import CreditEntry
from edge.billing.ledger_writer import LedgerWriter, persist_entries
from edge.billing.reservations import Billing
from edge.db.models import Account, LedgerEntry, LedgerKind

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["BOOKKEEPER_GRACE", "PERSIST_TIMEOUT", "CreditNotDurable", "Credited", "credit",
           "wait_persisted"]

#: Seconds a credit may take to reach SQL through the ledger stream, in all.
PERSIST_TIMEOUT = 15.0
#: Seconds to let the bookkeeper persist a credit before draining the stream here:
#: draining only when it is slow keeps the writers' consumer group from growing a
#: consumer per top-up.
BOOKKEEPER_GRACE = 2.0


class CreditNotDurable(TimeoutError):
    """The change was applied in Redis but did not reach SQL in time.

    It will: the ledger stream holds it. Calling :func:`credit` again with the same
    reference waits for it again and applies nothing twice.
    """

    def __init__(self, reference: str) -> None:
        super().__init__(f"{reference} did not reach the database")
        self.reference = reference


class Credited(NamedTuple):
    """What :func:`credit` did."""

    #: Micro-dollars changed now (negative: taken).
    applied: int
    #: The reference was applied before; nothing changed.
    duplicate: bool
    #: Of a debit: micro-dollars open reservations hold, taken from what they release
    #: when they settle (``owed:<request id>`` rows); what they spend is shortfall.
    deferred: int = 0


async def credit(account_id: int, amount: int, *, kind: LedgerKind, reference: str | None = None,
                 note: str = "", store: HotStore | None,
                 grace: float | None = None) -> Credited:
    """Add ``amount`` micro-dollars (negative: take) to an account, once per ``reference``.

    Parameters:
      account_id: the account whose balance changes.
      amount: micro-dollars; negative for a debit (never below zero, see the module).
      kind: the ledger row's kind (top-up, refund, adjustment).
      reference: unique forever; the same one applies once. None: a new one.
      note: kept on the ledger row (500 characters at most).
      store: the hot store; None only when no Redis runs (SQL alone then).
      grace: seconds to wait for the bookkeeper before draining the stream here
        (None: :data:`BOOKKEEPER_GRACE`; 0: at once, for a command that may run
        without a server).

    Returns:
      :class:`Credited` ``(applied, duplicate, deferred)``; the change is in SQL.

    Raises:
      CreditNotDurable: applied, but not in SQL within :data:`PERSIST_TIMEOUT`.
      HotStoreHealing: Redis is being rebuilt; nothing was credited (retry in a second).
    """
    reference = reference or f"{kind}:{uuid.uuid4().hex}"
    if await LedgerEntry.exists(reference=reference):
        # SQL's unique reference is forever; Redis's marker may have expired or been reset.
        return Credited(0, True)
    if store is None:  # no Redis at all: SQL is the whole truth, and no reservation is open
        return await _credit_in_sql(account_id, amount, kind=kind, reference=reference, note=note)
    result = await Billing(store, reservation_ttl_ms=0).credit(
        account_id, amount, reference=reference, kind=str(kind), note=note)
    await wait_persisted(store, reference, grace=grace)
    return Credited(result.applied, result.duplicate, result.deferred)


async def wait_persisted(store: HotStore, reference: str, *, grace: float | None = None,
                         timeout: float = PERSIST_TIMEOUT) -> None:
    """Return once ``reference`` is in SQL: the bookkeeper's, for ``grace`` seconds, then ours.

    ``grace``: seconds (None: :data:`BOOKKEEPER_GRACE`, read at the call); ``timeout``:
    seconds in all.

    Raises:
      CreditNotDurable: not in SQL after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    drain_from = loop.time() + (BOOKKEEPER_GRACE if grace is None else grace)
    writer: LedgerWriter | None = None
    while not await LedgerEntry.exists(reference=reference):
        now = loop.time()
        if now > deadline:
            raise CreditNotDurable(reference)
        if now < drain_from:
            await asyncio.sleep(0.02)
            continue
        if writer is None:
            writer = LedgerWriter(store, consumer=f"credit:{uuid.uuid4().hex[:8]}")
        if not await writer.drain_once():
            await asyncio.sleep(0.05)


async def _credit_in_sql(account_id: int, amount: int, *, kind: LedgerKind, reference: str,
                         note: str) -> Credited:
    """No Redis answers: SQL alone takes it, and counts it, so that the Redis that
    comes back (same server, same generation) is found stale and healed from SQL."""
    from edge.billing.heal import count_sql_only_change

    account = await Account.get(id=account_id).only("id", "balance")
    applied = max(amount, -account.balance)
    await persist_entries(
        [CreditEntry(reference=reference, account_id=account_id, kind=str(kind), amount=applied,
                     requested=amount, note=note[:500])],
        [datetime.now(UTC)])
    await count_sql_only_change()
    return Credited(applied, False)
