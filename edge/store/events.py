"""Keeps an edge worker's caches fresh from the ``$ns:events`` pub/sub channel.

Events are short strings (named in :mod:`edge.store.keys`):

- ``key:<prefix>``: a key changed;
- ``keys``: all keys changed;
- ``models`` and ``nodes``: the routing table changed;
- ``job:<id>``: a job changed state.

The listener does two things itself. It drops a changed key from the worker's key
cache (all of them, for ``keys``), and it reloads the routing table on ``models``
and ``nodes``. Other handlers register with :meth:`EventListener.on`, by prefix:

- the chat's key guard registers ``key``, and closes the sockets of a key that is
  no longer usable (:mod:`edge.chat.guard`);
- the jobs' long polls register ``job:`` (:mod:`edge.jobs.waiters`).

Events are handled one at a time, in the order they arrive. Each event first gets
the listener's own handling, then goes to every handler whose prefix it starts
with.

Pub/sub loses messages while disconnected. So after every (re)connection the
listener drops all cached keys and reloads the routing table. The handlers added
with :meth:`EventListener.on` are not told; they must not depend on every event
arriving. The key guard checks its keys again every half second, and a long poll
reads the job from SQL when its wait ends. A Redis failure, or a handler that
raises, restarts the listener: it subscribes again after a back-off that starts
at 0.1 s and doubles up to 5 s.

Only edge workers run a listener (:mod:`edge.app`). A job in ``portal worker``
subscribes to the channel itself, to notice new nodes (:mod:`dramatiq_actors.jobs`).
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

    More handlers, by event prefix, are added with :meth:`on` (the chat's key guard
    and the jobs' waiters add theirs).
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
        """Reload the routing table.

        A call made while another is about to reload returns at once: that reload
        reads SQL after it. The listener handles events one at a time, so each
        ``models`` or ``nodes`` event it receives causes one reload.
        """
        if self._reload_pending:
            return
        self._reload_pending = True
        try:
            await asyncio.sleep(0)  # let a burst of events coalesce
            self._reload_pending = False
            await self.registry.reload()
        finally:
            self._reload_pending = False
