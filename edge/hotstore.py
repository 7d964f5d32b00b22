"""Redis: the key layout, the Lua scripts, and the connection.

Every key lives under the namespace ``$ns`` (``PORTAL_REDIS_NAMESPACE``)::

    $ns:bal:<key_id>        live balance of an API key, micro-dollars
    $ns:rl:<key_id>         rate-limit buckets of an API key
    $ns:resv:<request_id>   an open credit reservation
    $ns:resv:open           zset of open reservations by deadline (reaped when stale)
    $ns:ledger              stream of balance changes waiting to be written to SQL
    $ns:applied:<ref>       marker of a credit already applied
    $ns:key:<prefix>        mirror of an API key's record (no secret)
    $ns:keys:mirrored       set once every key is mirrored: a miss then means "no such key"
    $ns:events              pub/sub channel of cache invalidations

The scripts in ``edge/lua/`` document their own KEYS and ARGV.
"""

from __future__ import annotations

from importlib import resources

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["HotStore", "RedisUnavailable", "connect_redis"]

#: Errors meaning "Redis is not there right now".
RedisUnavailable = (RedisConnectionError, RedisTimeoutError, OSError)


#: Connections per process; callers beyond it wait (up to POOL_TIMEOUT) instead of failing.
POOL_SIZE = 64
#: Seconds a caller waits for a free pooled connection.
POOL_TIMEOUT = 10


def connect_redis(url: str, *, pool_size: int = POOL_SIZE) -> aioredis.Redis:
    """A pooled asyncio client; replies stay bytes, decoding is the caller's choice.

    The pool blocks when every connection is busy, so a burst of requests queues
    for Redis rather than failing with "too many connections".
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=POOL_TIMEOUT, health_check_interval=30,
        socket_keepalive=True)
    return aioredis.Redis(connection_pool=pool)


def _script(name: str) -> str:
    return resources.files("edge.lua").joinpath(f"{name}.lua").read_text()


class HotStore:
    """Names Redis keys and holds the registered scripts for one namespace."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.ns = namespace
        self.reserve = client.register_script(_script("reserve"))
        self.settle = client.register_script(_script("settle"))
        self.credit = client.register_script(_script("credit"))
        self.progress = client.register_script(_script("progress"))
        self.ledger_stream = f"{namespace}:ledger"
        self.open_reservations = f"{namespace}:resv:open"
        self.events_channel = f"{namespace}:events"
        self.keys_mirrored = f"{namespace}:keys:mirrored"

    def balance(self, key_id: int) -> str:
        return f"{self.ns}:bal:{key_id}"

    def limiter(self, key_id: int) -> str:
        return f"{self.ns}:rl:{key_id}"

    def reservation(self, request_id: str) -> str:
        return f"{self.ns}:resv:{request_id}"

    def applied(self, reference: str) -> str:
        return f"{self.ns}:applied:{reference}"

    def key_record(self, prefix: str) -> str:
        return f"{self.ns}:key:{prefix}"

    async def publish(self, event: str) -> None:
        """Tell every edge worker to drop what it cached about ``event``."""
        await self.client.publish(self.events_channel, event)

    async def close(self) -> None:
        await self.client.aclose()
