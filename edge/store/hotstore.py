"""Redis: the key layout, the Lua scripts, and the connection.

Every key lives under the namespace ``$ns`` (``PORTAL_REDIS_NAMESPACE``)::

    $ns:bal:<key_id>        live balance of an API key, micro-dollars
    $ns:rl:<key_id>         rate-limit buckets of an API key
    $ns:resv:<request_id>   an open credit reservation
    $ns:resv:open           zset of open reservations by deadline (reaped when stale)
    $ns:hb:<owner>          heartbeat of a process holding reservations (short TTL);
                            its reservations are reaped once it is gone
    $ns:held:<key_id>       micro-dollars held by an API key's open reservations
    $ns:owed:<key_id>       refund debt of an API key, collected from what its
                            reservations release when they settle
    $ns:gen                 generation: <token>:<SQL's lone changes>:<run_id> (edge/billing/heal.py)
    $ns:heal:lock           held by the process healing the namespace
    $ns:ledger              stream of balance changes waiting to be written to SQL
    $ns:applied:<ref>       marker of a credit already applied
    $ns:key:<prefix>        mirror of an API key's record (no secret)
    $ns:keys:mirrored       set once every key is mirrored: a miss then means "no such key"
    $ns:events              pub/sub channel of cache invalidations

The scripts in ``edge/store/lua/`` document their own KEYS and ARGV.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["HotStore", "RedisUnavailable", "connect_redis"]

#: Errors meaning "Redis is not there right now".
RedisUnavailable = (RedisConnectionError, RedisTimeoutError, OSError)


#: Connections per process at most. Each open request holds at most one, so this
#: bounds a worker's concurrency on Redis; beyond it a request fails with a 503.
POOL_SIZE = 2048


#: Retries of a command whose connection failed: after a Redis restart every pooled
#: connection is dead, and a retry on a fresh one must hide that from the request.
#: Sleeps of 0.05, 0.1 and 0.2 s: a Redis that is really down fails within a second.
RETRIES = 3


def connect_redis(url: str, *, pool_size: int = POOL_SIZE,
                  checked_for: str | None = None) -> aioredis.Redis:
    """A pooled asyncio client; replies stay bytes, decoding is the caller's choice.

    A plain (non-blocking) pool: the blocking pool's condition variable costs a
    twentieth of the hot path, and the pool is sized above any sane concurrency.

    Commands and pipelines are retried on a new connection after a connection
    error or timeout (:data:`RETRIES`), so a command may run twice when only its
    reply was lost: the scripts are written to be safe to repeat (reserve.lua
    answers -4, which :meth:`edge.billing.reservations.Billing.reserve` accepts). Pub/sub is
    not retried: its listeners must see the break to drop what they cached.

    ``checked_for`` (a namespace): every new connection first checks that the
    namespace's generation names the server it reached (:mod:`edge.billing.heal`), so
    nothing runs on a restarted, restored or replaced Redis before it is healed.
    """
    extra: dict[str, Any] = {}
    if checked_for is not None:
        from edge.billing.heal import check_connection

        extra["redis_connect_func"] = check_connection(checked_for)
    return _Redis.from_url(url, max_connections=pool_size, health_check_interval=30,
                           socket_keepalive=True,
                           retry=Retry(ExponentialBackoff(cap=0.2, base=0.025), RETRIES),
                           retry_on_error=[RedisConnectionError, RedisTimeoutError], **extra)


class _PubSub(PubSub):
    """Pub/sub that raises on a lost connection instead of resubscribing quietly.

    redis-py's retry would resubscribe in place; messages published meanwhile are
    lost, and edge/store/events.py (like the chat hub) drops its caches only on an error.
    """

    async def _execute(self, conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await command(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            await conn.disconnect(error=exc)
            raise


class _Redis(aioredis.Redis):
    def pubsub(self, **kwargs: Any) -> PubSub:
        return _PubSub(self.connection_pool, event_dispatcher=self._event_dispatcher,
                       **kwargs)


class LuaScript:
    """A script from ``edge/store/lua/``, run by its SHA1 and loaded on first use.

    Like redis-py's ``AsyncScript`` minus its per-call work (an import, two tuple
    copies, the deprecation wrapper of ``evalsha``): this runs twice per request.
    """

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.source = resources.files("edge.store.lua").joinpath(f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.execute_command("EVALSHA", self.sha, len(keys), *keys,
                                                     *args)
        except NoScriptError:
            self.sha = await self.client.script_load(self.source)
            return await self.client.execute_command("EVALSHA", self.sha, len(keys), *keys,
                                                     *args)


class HotStore:
    """Names Redis keys and holds the registered scripts for one namespace."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.ns = namespace
        self.reserve = LuaScript(client, "reserve")
        self.settle = LuaScript(client, "settle")
        self.credit = LuaScript(client, "credit")
        self.progress = LuaScript(client, "progress")
        self.replay = LuaScript(client, "replay")
        self.ledger_stream = f"{namespace}:ledger"
        self.open_reservations = f"{namespace}:resv:open"
        self.events_channel = f"{namespace}:events"
        self.keys_mirrored = f"{namespace}:keys:mirrored"
        self.generation = f"{namespace}:gen"

    def balance(self, key_id: int) -> str:
        return f"{self.ns}:bal:{key_id}"

    def limiter(self, key_id: int) -> str:
        return f"{self.ns}:rl:{key_id}"

    def reservation(self, request_id: str) -> str:
        return f"{self.ns}:resv:{request_id}"

    def held(self, key_id: int) -> str:
        return f"{self.ns}:held:{key_id}"

    def owed(self, key_id: int) -> str:
        return f"{self.ns}:owed:{key_id}"

    def applied(self, reference: str) -> str:
        return f"{self.ns}:applied:{reference}"

    def key_record(self, prefix: str) -> str:
        return f"{self.ns}:key:{prefix}"

    def heartbeat(self, owner: str) -> str:
        return f"{self.ns}:hb:{owner}"

    async def publish(self, event: str) -> None:
        """Tell every edge worker to drop what it cached about ``event``."""
        await self.client.publish(self.events_channel, event)

    async def close(self) -> None:
        await self.client.aclose()
