"""Keeps a worker's caches fresh from the ``$ns:events`` pub/sub channel.

Events are short strings (named in :mod:`edge.store.keys`): ``key:<prefix>`` (a key
changed), ``keys`` (all keys), ``models`` and ``nodes`` (the routing table changed),
``job:<id>`` (handled by the jobs' waiters). Pub/sub loses messages
while disconnected, so after every (re)connection the listener drops all cached
keys and reloads the routing table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from edge.store import keys as redis_keys
from edge.store.hotstore import RedisUnavailable
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["EventListener", "KeyCache", "RoutingTable"]

log = logging.getLogger(__name__)


class KeyCache(Protocol):
    """What the listener needs of a worker's key cache (``edge.identity.keys.KeyDirectory``)."""

    def invalidate(self, prefix: str | None = None) -> None:
        """Forget the key of ``prefix``, or every key when it is None."""


class RoutingTable(Protocol):
    """What the listener needs of a worker's routing table (``edge.fleet.registry.Registry``)."""

    async def reload(self) -> None:
        """Read the models and nodes again."""


class EventListener:
    """Applies cache invalidations to one worker's key directory and registry.

    Parameters:
      store: where the channel lives.
      keys: the worker's key cache.
      registry: the worker's routing table.
      extra: more handlers, by event prefix (chat rooms and jobs add theirs).
    """

    def __init__(self, store: HotStore, keys: KeyCache, registry: RoutingTable) -> None:
        self.store = store
        self.keys = keys
        self.registry = registry
        self.handlers: dict[str, Callable[[str], Awaitable[None] | None]] = {}
        self.connected = asyncio.Event()
        self._reload_pending = False

    def on(self, prefix: str, handler: Callable[[str], Awaitable[None] | None]) -> None:
        """Call ``handler(event)`` for events starting with ``prefix``."""
        self.handlers[prefix] = handler

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.events_channel)
                self.keys.invalidate()
                await self.reload_registry()
                self.connected.set()
                delay = 0.1
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self.dispatch(text(message["data"]))
            except asyncio.CancelledError:
                raise
            except RedisUnavailable as exc:
                self.connected.clear()
                log.warning("events: Redis unavailable (%s); reconnecting", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                self.connected.clear()
                log.exception("events: listener failed; restarting it")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # the connection may already be gone
                    pass

    async def dispatch(self, event: str) -> None:
        if event.startswith(redis_keys.KEY_EVENT_PREFIX):
            self.keys.invalidate(event.removeprefix(redis_keys.KEY_EVENT_PREFIX))
        elif event == redis_keys.EVENT_KEYS:
            self.keys.invalidate()
        elif event in (redis_keys.EVENT_MODELS, redis_keys.EVENT_NODES):
            await self.reload_registry()
        for prefix, handler in self.handlers.items():
            if event.startswith(prefix):
                result = handler(event)
                if result is not None:
                    await result

    async def reload_registry(self) -> None:
        """Reload the routing table; a burst of events causes at most one more reload."""
        if self._reload_pending:
            return
        self._reload_pending = True
        try:
            await asyncio.sleep(0)  # let a burst of events coalesce
            self._reload_pending = False
            await self.registry.reload()
        finally:
            self._reload_pending = False
