"""Money fixtures for in-process tests: a key funded through the ledger, as the CLI does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from edge.billing.ledger_writer import persist_entries
from edge.db.models import Account, ApiKey
from edge.identity.keys import KeyRecord

__all__ = ["funded_key", "wallet_key", "wallet_of"]


async def funded_key(balance: int) -> tuple[ApiKey, KeyRecord]:
    """A key of its own account in SQL, whose ``balance`` micro-dollars came in by a ledger
    row (no limits)."""
    account = await Account.create(name="t")
    row = await ApiKey.create(id=account.id, account=account, name="t",
                              prefix=f"sk-ip-{uuid.uuid4().hex[:8]}", key_hash=uuid.uuid4().hex,
                              rpm=10**6, tpm=10**9)
    await persist_entries([{"t": "credit", "ref": f"open:{row.id}", "acct": str(account.id),
                            "kind": "topup", "amount": str(balance)}], [datetime.now(UTC)])
    await account.refresh_from_db()
    return row, KeyRecord.from_row(row, account)


async def wallet_key() -> ApiKey:
    """A key alone in its account, which has the key's id (as every migrated key's has):
    money tests may then name the account by the key's id. No limits, no credit."""
    account = await Account.create(name="t")
    return await ApiKey.create(id=account.id, account=account, name="t",
                               prefix=f"sk-ip-{uuid.uuid4().hex[:8]}", key_hash=uuid.uuid4().hex,
                               rpm=10**6, tpm=10**9)


async def wallet_of(key: ApiKey) -> Account:
    """The key's account as SQL holds it now."""
    return await Account.get(id=key.account_id)
