"""What customers hold now: the credit in their balances, and what open calls reserve of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise.functions import Sum

from edge.db.models import Account
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["outstanding_balances", "reserved_credit"]

#: Reservations read from Redis per round trip.
_BATCH = 500


async def outstanding_balances() -> int:
    """The sum of every account's balance in SQL, micro-dollars: the credit customers hold."""
    rows: list[Any] = await Account.all().annotate(total=Sum("balance")).values_list(
        "total", flat=True)
    return int(rows[0] or 0) if rows else 0


async def reserved_credit(store: HotStore) -> tuple[int, int]:
    """How many credit reservations are open in Redis now, and the micro-dollars they hold."""
    client = store.client
    request_ids = [text(r) for r in await client.zrange(store.open_reservations, 0, -1)]
    opened = held = 0
    for start in range(0, len(request_ids), _BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for request_id in request_ids[start:start + _BATCH]:
                pipe.hget(store.reservation(request_id), "amount")
            amounts = await pipe.execute()
        for amount in amounts:
            if amount is not None:  # settled between the two reads
                opened += 1
                held += int(amount)
    return opened, held
