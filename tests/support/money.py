"""Money fixtures for in-process tests: a key funded through the ledger, as the CLI does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from edge.billing.ledger_writer import persist_entries
from edge.db.models import ApiKey
from edge.identity.keys import KeyRecord

__all__ = ["funded_key"]


async def funded_key(balance: int) -> tuple[ApiKey, KeyRecord]:
    """A key in SQL whose ``balance`` micro-dollars came in by a ledger row (no limits)."""
    row = await ApiKey.create(name="t", prefix=f"sk-ip-{uuid.uuid4().hex[:8]}",
                              key_hash=uuid.uuid4().hex, balance=0, rpm=10**6, tpm=10**9)
    await persist_entries([{"t": "credit", "ref": f"open:{row.id}", "key": str(row.id),
                            "kind": "topup", "amount": str(balance)}], [datetime.now(UTC)])
    return row, KeyRecord.from_row(row)
