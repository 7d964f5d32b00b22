"""What actors share in a worker process: settings, the database, Redis, the metered call.

:class:`PortalRuntime` is a Dramatiq middleware: before the worker takes messages it opens
the database and Redis on the worker's event loop (async actors run there), and
closes them at shutdown. Actors reach it with :func:`runtime`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from edge.settings import Settings

if TYPE_CHECKING:
    from edge.fleet.registry import Registry
    from edge.fleet.upstream import Upstream
    from edge.metering.call import Metering
    from edge.store.hotstore import HotStore

__all__ = ["PortalRuntime", "Runtime", "runtime"]

log = logging.getLogger(__name__)
# A line per health probe buries what matters; failures are logged by the actors.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclasses.dataclass
class Runtime:
    settings: Settings
    store: HotStore
    upstream: Upstream
    #: The same metered call as the edge's (its routing table reloaded from SQL
    #: before each choice: jobs are few and wait for their nodes anyway).
    metering: Metering
    #: Set at close: stops the renewal of the slots jobs hold.
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    leases: asyncio.Task[None] | None = None

    @property
    def registry(self) -> Registry:
        return self.metering.registry


_current: Runtime | None = None


def runtime() -> Runtime:
    """The open resources of this worker process.

    Raises:
      RuntimeError: outside a booted worker (or before :func:`open_runtime`).
    """
    if _current is None:
        raise RuntimeError("the portal runtime is not open in this process")
    return _current


async def open_runtime(settings: Settings) -> Runtime:
    """Open the database, Redis and the node client; used by workers and tests."""
    global _current
    from edge.billing.reservations import Billing
    from edge.db import open_database
    from edge.fleet.boots import BootRequests
    from edge.fleet.registry import Registry
    from edge.fleet.slots import Slots
    from edge.fleet.upstream import Upstream
    from edge.metering.call import Metering
    from edge.store.hotstore import HotStore, connect_redis

    await open_database(settings.effective_database_url)
    store = HotStore(connect_redis(settings.redis_url, pool_size=64,
                                   checked_for=settings.redis_namespace),
                     settings.redis_namespace)
    upstream = Upstream(connect_timeout=settings.upstream_connect_timeout,
                        timeout=settings.upstream_timeout, max_connections=64,
                        api_key=settings.node_api_key)
    billing = Billing(store, reservation_ttl_ms=int(settings.upstream_timeout * 1000))
    metering = Metering(billing, Registry(default_slots=settings.node_slots), upstream,
                        boots=BootRequests(store, settings),
                        max_attempts=settings.upstream_attempts,
                        down_seconds=settings.node_cool_down,
                        warming_retry_after=settings.warming_retry_after,
                        slots=Slots(store, lease=settings.slot_lease,
                                    affinity_ttl=settings.affinity_ttl),
                        admission_wait=settings.admission_wait)
    _current = Runtime(settings=settings, store=store, upstream=upstream, metering=metering)
    assert metering.slots is not None
    _current.leases = asyncio.create_task(metering.slots.keep_leases(_current.stop))
    return _current


async def close_runtime() -> None:
    global _current
    from edge.db import close_database

    if _current is None:
        return
    current, _current = _current, None
    current.stop.set()
    if current.leases is not None:
        await current.leases
    if current.metering.slots is not None:
        await current.metering.slots.drain()
    await current.upstream.aclose()
    await current.store.close()
    await close_database()


class PortalRuntime(Middleware):
    """Opens the portal's resources on the worker's event loop (after AsyncIO's boot)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def before_worker_boot(self, broker, worker) -> None:
        # Before the worker threads take messages (after AsyncIO's own hook, which
        # started the loop: hooks run in order here).
        thread = get_event_loop_thread()
        if thread is None:
            raise RuntimeError("the AsyncIO middleware must come before PortalRuntime")
        thread.run_coroutine(open_runtime(self.settings))
        log.info("portal runtime open")

    def after_worker_shutdown(self, broker, worker) -> None:
        # After the worker threads finished their messages (closing before would fail
        # them), and before AsyncIO's own hook stops the loop: hooks run in reverse here.
        thread = get_event_loop_thread()
        if thread is not None:
            thread.run_coroutine(close_runtime())
