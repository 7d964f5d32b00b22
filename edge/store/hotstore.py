"""Redis: the connection, the Lua scripts, and the names of one namespace's keys.

Every key and channel lives under the namespace ``$ns`` (``PORTAL_REDIS_NAMESPACE``);
:mod:`edge.store.keys` builds them all and its docstring lists them, with what
each holds. The scripts in ``edge/store/lua/`` document their own KEYS and ARGV;
:mod:`edge.store.codes` names what they answer.
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

from edge.store import keys
from edge.store.generation import check_connection

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
    answers ``DUPLICATE``, which :meth:`edge.billing.reservations.Billing.reserve`
    accepts). Pub/sub is
    not retried: its listeners must see the break to drop what they cached.

    ``checked_for`` (a namespace): every new connection first checks that the
    namespace's generation names the server it reached
    (:func:`edge.store.generation.check_connection`), so nothing runs on a restarted,
    restored or replaced Redis before it is healed (:mod:`edge.billing.heal`).
    """
    extra: dict[str, Any] = {}
    if checked_for is not None:
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
    """The registered scripts and the key names of one namespace (:mod:`edge.store.keys`)."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.ns = namespace
        self.reserve = LuaScript(client, "reserve")
        self.settle = LuaScript(client, "settle")
        self.credit = LuaScript(client, "credit")
        self.progress = LuaScript(client, "progress")
        self.replay = LuaScript(client, "replay")
        self.ledger_stream = keys.ledger_stream(namespace)
        self.open_reservations = keys.open_reservations(namespace)
        self.events_channel = keys.events(namespace)
        self.keys_mirrored = keys.keys_mirrored(namespace)
        self.generation = keys.generation(namespace)

    def balance(self, account_id: int) -> str:
        return keys.balance(self.ns, account_id)

    def limiter(self, key_id: int) -> str:
        return keys.limiter(self.ns, key_id)

    def cap(self, key_id: int) -> str:
        return keys.cap(self.ns, key_id)

    def reservation(self, request_id: str) -> str:
        return keys.reservation(self.ns, request_id)

    def held(self, account_id: int) -> str:
        return keys.held(self.ns, account_id)

    def owed(self, account_id: int) -> str:
        return keys.owed(self.ns, account_id)

    def applied(self, reference: str) -> str:
        return keys.applied(self.ns, reference)

    def key_record(self, prefix: str) -> str:
        return keys.key_record(self.ns, prefix)

    def heartbeat(self, owner: str) -> str:
        return keys.heartbeat(self.ns, owner)

    async def publish(self, event: str) -> None:
        """Tell every edge worker to drop what it cached about ``event``."""
        await self.client.publish(self.events_channel, event)

    async def close(self) -> None:
        await self.client.aclose()
