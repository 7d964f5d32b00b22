"""A hot store for in-process tests: its own namespace on the test Redis, emptied after.

The money scripts run only in a healed generation (edge/billing/heal.py); a unit test
without a database marks one itself, as a heal would.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edge.billing.heal import server_run_id
from edge.store.hotstore import HotStore, connect_redis

__all__ = ["hot_store", "mark_generation"]


async def mark_generation(store: HotStore, token: str = "test") -> str:
    """Write a generation naming the server, as a heal does; returns its token."""
    await store.client.set(store.generation, f"{token}:0:{await server_run_id(store.client)}")
    return token


@asynccontextmanager
async def hot_store(redis_url: str, prefix: str = "unit", *,
                    generation: bool = True) -> AsyncIterator[HotStore]:
    hot = HotStore(connect_redis(redis_url), f"{prefix}{uuid.uuid4().hex[:8]}")
    if generation:
        await mark_generation(hot)
    try:
        yield hot
    finally:
        keys = [k async for k in hot.client.scan_iter(f"{hot.ns}:*")]
        if keys:
            await hot.client.delete(*keys)
        await hot.close()
