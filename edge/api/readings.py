"""What a scrape of ``/metrics`` reads at that moment (:class:`edge.metrics.Readings`).

The counters of ``edge.metrics`` are updated where things happen; these gauges are
read when Prometheus asks, so the hot path pays nothing for them:

- the nodes, from this worker's routing table (``edge.fleet.registry``): no I/O;
- Redis and SQL up, each from one ping, as ``/readyz`` probes them;
- the ledger backlog (``edge.billing.ledger_writer.backlog``) and the open reservations
  (``edge.billing.reaper.open_reservations``): one pipelined round trip each;
- the unfinished jobs (``edge.jobs.store.queue_counts``) and the sum of the balances
  (``edge.reports.holdings.outstanding_balances``, as the console's overview reads it):
  indexed or single-table SQL reads.

Every read has :data:`READ_TIMEOUT` seconds, and they run at once: a scrape answers
within that bound even while Redis or SQL is gone, and a read that failed leaves its
series out (``portal_redis_up`` or ``portal_database_up`` then says why).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from tortoise.connection import get_connection

from edge import metrics
from edge.billing.ledger_writer import backlog
from edge.billing.reaper import open_reservations
from edge.jobs.store import queue_counts
from edge.reports.holdings import outstanding_balances

if TYPE_CHECKING:
    from edge.context import PortalContext
    from edge.fleet.registry import Registry

__all__ = ["READ_TIMEOUT", "node_readings", "take_readings"]

log = logging.getLogger(__name__)

#: Seconds each read of a scrape may take (Prometheus's scrape timeout is 10 s).
READ_TIMEOUT = 1.0

T = TypeVar("T")


def node_readings(registry: Registry) -> tuple[list[str], list[metrics.NodeReading]]:
    """Every model's name, and every node, as this worker routes to them."""
    names = {model.id: model.name for model in registry.models.values()}
    nodes = [metrics.NodeReading(node=str(node.id), model=names.get(model_id, str(model_id)),
                                 state=node.state, healthy=node.healthy,
                                 queue_depth=node.queue_depth)
             for model_id, infos in registry.nodes.items() for node in infos]
    return sorted(names.values()), nodes


async def _bounded(read: Awaitable[T]) -> T | None:
    """``read``'s value, or None when it failed or took over :data:`READ_TIMEOUT`."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await read
    except Exception as exc:  # a scrape reports what it could read, never an error
        log.debug("metrics: a read failed: %r", exc)
        return None


async def _ping_redis(portal: PortalContext) -> bool:
    return bool(await portal.store.client.ping())


async def _ping_database() -> bool:
    await get_connection("default").execute_query("SELECT 1")
    return True


async def take_readings(portal: PortalContext) -> metrics.Readings:
    """Read everything :class:`edge.metrics.Readings` holds, within :data:`READ_TIMEOUT`."""
    models, nodes = node_readings(portal.registry)
    redis_up, database_up, ledger, reservations, jobs, balances = await asyncio.gather(
        _bounded(_ping_redis(portal)), _bounded(_ping_database()),
        _bounded(backlog(portal.store)), _bounded(open_reservations(portal.store)),
        _bounded(queue_counts()), _bounded(outstanding_balances()))
    watch = portal.watch
    return metrics.Readings(
        models=models, nodes=nodes,
        redis_up=bool(redis_up), database_up=bool(database_up),
        hot_store_ready=None if watch is None else bool(watch.ready),
        ledger_backlog=None if ledger is None else ledger.entries,
        ledger_backlog_age=None if ledger is None else ledger.oldest_age,
        reservations_open=None if reservations is None else reservations[0],
        reservations_overdue=None if reservations is None else reservations[1],
        jobs=None if jobs is None else jobs[0],
        jobs_oldest_queued_age=None if jobs is None else jobs[1],
        balances=balances)
