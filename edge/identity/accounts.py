"""Creating and revoking API keys: the operations behind the CLI and pages.

Each takes an optional :class:`~edge.store.hotstore.HotStore`. With one, changes go
through Redis (so running workers see them at once). Without one (no Redis runs,
only possible with the embedded server), they go straight to SQL, which is then
the whole truth. Crediting a key is :func:`edge.billing.credits.credit`.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tortoise.transactions import in_transaction

from edge.db.models import ApiKey, LedgerEntry, LedgerKind
from edge.identity.keys import generate_key, hash_key, publish_key

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["CreatedKey", "create_key", "revoke_key"]


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
    else:  # five prefixes taken in a row: the generator is broken, not unlucky
        raise RuntimeError("no free key prefix after 5 tries")
    async with in_transaction():
        row = await ApiKey.create(name=name, prefix=prefix, key_hash=hash_key(secret, pepper),
                                  balance=credit, rpm=rpm, tpm=tpm, expires_at=expires_at)
        if credit:
            await LedgerEntry.create(key=row, kind=LedgerKind.TOPUP, amount=credit,
                                     reference=f"opening:{prefix}", note="opening credit")
    if store is not None:
        await publish_key(store, row)
    return CreatedKey(row, secret)


async def revoke_key(key: ApiKey, *, store: HotStore | None = None) -> None:
    """Refuse the key from now on; every worker hears of it within a second, and
    closes the key's open chat sockets."""
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        await key.save(update_fields=["revoked_at"])
    if store is not None:
        await publish_key(store, key)
