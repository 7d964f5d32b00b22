"""The ledger writer takes typed entries as well as raw ones, with the same rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.billing.entries import CreditEntry, MalformedEntry, UsageEntry, encode
from edge.billing.ledger_writer import persist_entries
from edge.db.models import ApiKey, LedgerEntry, UsageRecord
from tests.support.money import wallet_key, wallet_of


async def make_key() -> ApiKey:
    return await wallet_key()


async def test_typed_and_raw_entries_write_the_same_rows(database: str) -> None:
    key = await make_key()
    now = datetime.now(UTC)
    topup = CreditEntry(reference=f"open:{key.id}", account_id=key.id, kind="topup", amount=1000)
    typed = UsageEntry(request_id=f"t-{key.id}", key_id=key.id, prompt_tokens=3,
                       completion_tokens=4, cost=10, model="m", endpoint="completions",
                       latency_ms=5, streamed=True, counted_by="edge", charged=10)
    raw = {k.encode(): str(v).encode()
           for k, v in encode(UsageEntry(request_id=f"r-{key.id}", key_id=key.id,
                                         prompt_tokens=3, completion_tokens=4, cost=10,
                                         model="m", endpoint="completions", latency_ms=5,
                                         streamed=True, counted_by="edge",
                                         charged=10)).items()}
    await persist_entries([topup, typed, raw, {"t": "gift", "key": str(key.id)}], [now] * 4)
    await key.refresh_from_db()
    wallet = await wallet_of(key)
    assert (wallet.balance, wallet.spent, key.spent) == (980, 20, 20)
    rows = await UsageRecord.filter(key_id=key.id).order_by("request_id").values_list(
        "endpoint", "prompt_tokens", "completion_tokens", "cost", "latency_ms", "streamed",
        "cancelled", "counted_by", "node_id")
    assert rows == [("completions", 3, 4, 10, 5, True, False, "edge", None)] * 2
    assert await LedgerEntry.filter(account_id=key.id).count() == 3


async def test_a_usage_entry_without_its_charge_fails_the_batch(database: str) -> None:
    key = await make_key()
    with pytest.raises(MalformedEntry):
        await persist_entries([UsageEntry(request_id="x", key_id=key.id, cost=5)],
                              [datetime.now(UTC)])
    assert not await UsageRecord.filter(request_id="x").exists()
