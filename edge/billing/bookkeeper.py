"""The bookkeeper: one process beside the edge workers that writes the ledger.

It drains the Redis ledger stream into SQL and settles reservations abandoned by
dead workers (those whose heartbeat stopped, within seconds; others past their
deadline). Keeping this out of the edge workers keeps SQL (and SQLite's
writer lock) off the processes that answer requests. ``portal serve`` starts it
through Sanic's worker manager, which stops it with the server; several hosts
may each run one: the stream's consumer group shares the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from edge.settings import Settings

__all__ = ["run_bookkeeper", "start_bookkeeper"]

log = logging.getLogger(__name__)

#: Seconds between two rounds of the reaper.
REAP_INTERVAL = 2.0


def start_bookkeeper(app) -> None:
    """``main_process_ready`` listener: have Sanic's manager run the bookkeeper."""
    app.manager.manage("Bookkeeper", run_bookkeeper, {"settings": app.ctx.settings},
                       transient=True)


def run_bookkeeper(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(settings))


async def _main(settings: Settings) -> None:
    from edge.billing.heal import HotWatch
    from edge.billing.heartbeat import new_owner
    from edge.billing.ledger_writer import LedgerWriter
    from edge.billing.reservations import Billing
    from edge.billing.spool import Spool, SpoolDrainer
    from edge.db import close_database, open_database
    from edge.store.hotstore import HotStore, connect_redis

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await open_database(settings.effective_database_url)
    namespace = settings.redis_namespace
    store = HotStore(connect_redis(settings.redis_url, pool_size=8, checked_for=namespace),
                     namespace)
    watch = HotWatch(HotStore(connect_redis(settings.redis_url, pool_size=4), namespace))
    spool_root = settings.data_path / "spool"
    owner = f"bookkeeper:{new_owner()}"
    # The reaper's settlements are spooled like a worker's; the drainer reads every
    # spool of this host, its own included.
    spool = Spool(spool_root, owner)
    billing = Billing(store, reservation_ttl_ms=int(settings.upstream_timeout * 1000),
                      spool=spool)

    async def generation() -> str | None:
        return watch.generation if await watch.ensure(timeout=0) else None

    try:
        await asyncio.gather(
            watch.run(stop),
            LedgerWriter(store).run(stop),
            _reap(billing, stop, int(settings.reservation_grace * 1000)),
            billing.run_pending(stop),
            SpoolDrainer(spool_root, billing, generation).run(stop),
        )
    finally:
        spool.close()
        await watch.raw.close()
        await store.close()
        await close_database()


async def _reap(billing, stop: asyncio.Event, grace_ms: int) -> None:
    from edge.billing.reaper import Reaper

    reaper = Reaper(billing, grace_ms)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REAP_INTERVAL)
        if stop.is_set():
            return
        try:
            await reaper.round()
        except Exception:
            log.exception("reaper round failed; trying again")
