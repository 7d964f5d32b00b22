"""Creating, crediting and revoking API keys: the operations behind the CLI and pages.

Each takes an optional :class:`~edge.store.hotstore.HotStore`. With one, changes go
through Redis (so running workers see them at once and live balances stay
exact). Without one (no Redis runs, only possible with the embedded server),
they go straight to SQL, which is then the whole truth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tortoise.transactions import in_transaction

from edge.billing.ledger_writer import LedgerWriter, persist_entries
from edge.billing.reservations import Billing
from edge.db.models import ApiKey, LedgerEntry, LedgerKind
from edge.identity.keys import generate_key, hash_key, publish_key

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["CreatedKey", "create_key", "credit_key", "revoke_key"]

#: Seconds a credit may take to reach SQL through the ledger stream.
PERSIST_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class CreatedKey:
    row: ApiKey
    secret: str  # shown once, never stored


async def create_key(*, name: str, pepper: bytes, credit: int, rpm: int, tpm: int,
                     expires_at: datetime | None = None,
                     store: HotStore | None = None) -> CreatedKey:
    """Make a key with an opening balance of ``credit`` micro-dollars."""
    if credit < 0:
        raise ValueError("the opening credit cannot be negative")
    for _attempt in range(5):
        secret, prefix = generate_key()
        if not await ApiKey.exists(prefix=prefix):
            break
    async with in_transaction():
        row = await ApiKey.create(name=name, prefix=prefix, key_hash=hash_key(secret, pepper),
                                  balance=credit, rpm=rpm, tpm=tpm, expires_at=expires_at)
        if credit:
            await LedgerEntry.create(key=row, kind=LedgerKind.TOPUP, amount=credit,
                                     reference=f"opening:{prefix}", note="opening credit")
    if store is not None:
        await publish_key(store, row)
    return CreatedKey(row, secret)


async def credit_key(key: ApiKey, amount: int, *, kind: LedgerKind, reference: str | None = None,
                     note: str = "", store: HotStore | None = None) -> tuple[int, bool]:
    """Add ``amount`` micro-dollars (negative: take) to a key, once per reference.

    Returns ``(applied amount, duplicate)``; the change is in SQL on return.
    """
    reference = reference or f"{kind}:{uuid.uuid4().hex}"
    if await LedgerEntry.exists(reference=reference):
        # SQL's unique reference is forever; Redis's marker may have expired or been reset.
        return 0, True
    if store is None:
        return await _credit_in_sql(key, amount, kind=kind, reference=reference, note=note)
    billing = Billing(store, reservation_ttl_ms=0)
    result = await billing.credit(key.id, amount, reference=reference, kind=str(kind), note=note)
    await wait_persisted(store, reference)
    return result.applied, result.duplicate


async def wait_persisted(store: HotStore, reference: str) -> None:
    """Drain the ledger stream until ``reference`` is in SQL (a server may do it first)."""
    writer = LedgerWriter(store, consumer=f"cli:{uuid.uuid4().hex[:8]}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PERSIST_TIMEOUT
    while not await LedgerEntry.exists(reference=reference):
        if loop.time() > deadline:
            raise TimeoutError(f"{reference} did not reach the database")
        if not await writer.drain_once():
            await asyncio.sleep(0.05)


async def _credit_in_sql(key: ApiKey, amount: int, *, kind: LedgerKind, reference: str,
                         note: str) -> tuple[int, bool]:
    """No Redis answers: SQL alone takes it, and counts it, so that the Redis that
    comes back (same server, same generation) is found stale and healed from SQL."""
    from edge.billing.heal import count_sql_only_change

    await key.refresh_from_db(fields=["balance"])
    applied = max(amount, -key.balance)
    await persist_entries(
        [{"t": "credit", "ref": reference, "key": str(key.id), "kind": str(kind),
          "amount": str(applied), "requested": str(amount), "note": note}],
        [datetime.now(UTC)])
    await count_sql_only_change()
    return applied, False


async def revoke_key(key: ApiKey, *, store: HotStore | None = None) -> None:
    """Refuse the key from now on; every worker hears of it within a second."""
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        await key.save(update_fields=["revoked_at"])
    if store is not None:
        await publish_key(store, key)
