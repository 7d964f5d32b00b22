"""Settles reservations whose edge process died before settling them.

A reservation past its deadline (plus a grace period) belongs to a request whose
worker is gone: streams push their deadline forward as they deliver. The reaper
charges what the reservation's progress fields say was delivered (nothing, for a
request that never answered) and releases the rest, through the same settle
script, so a late settlement by a living worker and the reaper cannot both count.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge.money import token_cost

if TYPE_CHECKING:
    from edge.billing import Billing

__all__ = ["reap_stale_reservations"]

log = logging.getLogger(__name__)


async def reap_stale_reservations(billing: Billing, grace_ms: int, limit: int = 200) -> int:
    """Settle up to ``limit`` stale reservations; returns how many were settled here."""
    store = billing.store
    client = store.client
    now_s, now_us = await client.time()
    now_ms = now_s * 1000 + now_us // 1000
    stale = await client.zrangebyscore(store.open_reservations, "-inf", now_ms - grace_ms,
                                       start=0, num=limit)
    settled = 0
    for raw_id in stale:
        request_id = raw_id.decode()
        held = await client.hgetall(store.reservation(request_id))
        if not held:
            await client.zrem(store.open_reservations, request_id)
            continue
        fields = {k.decode(): v.decode() for k, v in held.items()}
        prompt = int(fields.get("pt", 0))
        completion = int(fields.get("ct", 0))
        cost = token_cost(prompt, completion, int(fields.get("pin", 0)), int(fields.get("pout", 0)))
        entry: dict[str, str | int] = {
            "t": "usage", "rid": request_id, "key": fields["key"], "pt": prompt,
            "ct": completion, "cost": cost, "model": fields.get("model", ""),
            "node": fields.get("node", ""), "ep": fields.get("ep", "chat"),
            "lat": max(0, now_ms - int(fields.get("created", now_ms))), "status": 499,
            "st": fields.get("st", "0"), "cx": 1,
        }
        result = await billing.settle_amount(request_id, int(fields["key"]), cost,
                                             prompt + completion, entry)
        if result.settled:
            settled += 1
            log.warning("reaped reservation %s: charged %d micro-dollars for %d+%d tokens",
                        request_id, result.charged, prompt, completion)
    return settled
