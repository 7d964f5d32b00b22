"""A hot store for in-process tests: its own namespace on the test Redis, emptied after.

The money scripts run only in a healed generation (edge/billing/heal.py); a unit test
without a database marks one itself, as a heal would.

Fixtures (registered for every suite by tests/conftest.py):

- ``store``: a namespace of its own on the test Redis, a generation marked (the money
  scripts run), emptied after;
- ``bare_store``: the same without a generation: what a new, flushed or restarted Redis
  looks like before a heal (heal, heartbeat and restart tests start there).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.exceptions import RedisError

from edge.billing.heal import server_run_id
from edge.store.hotstore import HotStore, connect_redis

__all__ = ["bare_store", "hot_store", "mark_generation", "store"]


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
        # A test may leave its Redis stopped (restart tests): nothing is left to empty then.
        with contextlib.suppress(RedisError):
            keys = [k async for k in hot.client.scan_iter(f"{hot.ns}:*")]
            if keys:
                await hot.client.delete(*keys)
        await hot.close()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[HotStore]:
    """A hot store of its own, in a marked generation; emptied after."""
    async with hot_store(redis_url, "t") as hot:
        yield hot


@pytest.fixture
async def bare_store(redis_url: str) -> AsyncIterator[HotStore]:
    """A hot store of its own without a generation (never healed); emptied after."""
    async with hot_store(redis_url, "t", generation=False) as hot:
        yield hot
