"""A revoked key is refused within a second on every worker (pub/sub, not TTLs)."""

from __future__ import annotations

import asyncio
import time

from tests.support import workers
from tests.support.standard import Deployment


async def statuses_by_worker(url: str, key: str, count: int = 60) -> dict[str, set[int]]:
    return await workers.statuses_by_worker(url, key, count=count)


def test_revoked_key_is_refused_within_a_second_everywhere(deployment: Deployment) -> None:
    key_id, key = deployment.key("1")
    warm = asyncio.run(statuses_by_worker(deployment.url, key))
    assert len(warm) == 2 and all(s == {200} for s in warm.values())  # cached on both

    deployment.portal.cli("keys", "revoke", str(key_id))
    revoked_at = time.monotonic()
    time.sleep(max(0.0, 1.0 - (time.monotonic() - revoked_at)))
    after = asyncio.run(statuses_by_worker(deployment.url, key))
    assert len(after) == 2
    assert all(s == {401} for s in after.values()), after


def test_key_cache_survives_redis_mirror_loss(deployment: Deployment) -> None:
    """With the Redis mirror gone (a restarted Redis), keys are found in SQL again."""
    import redis

    _key_id, key = deployment.key("1")
    client = redis.Redis.from_url(deployment.portal.redis_url)
    ns = deployment.portal.namespace
    client.delete(f"{ns}:keys:mirrored", f"{ns}:key:{key[:14]}")
    client.publish(f"{ns}:events", "keys")
    time.sleep(0.3)
    seen = asyncio.run(statuses_by_worker(deployment.url, key, 20))
    assert all(s == {200} for s in seen.values())
