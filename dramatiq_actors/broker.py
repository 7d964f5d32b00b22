"""The Dramatiq broker: Redis, under the portal's namespace, with async actors.

Importing :mod:`dramatiq_actors` builds it from the environment (``PORTAL_*``),
which is how ``portal worker`` and every process that enqueues see the same one.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from dramatiq_actors.runtime import PortalRuntime
from edge.settings import Settings
from edge.store import keys
from edge.tasks import QUEUE_JOBS, QUEUE_LIFECYCLE, QUEUE_MAINTENANCE

# The queue names are the edge's (it enqueues without importing the actors): re-exported.
__all__ = ["QUEUE_JOBS", "QUEUE_LIFECYCLE", "QUEUE_MAINTENANCE", "make_broker"]


def make_broker(settings: Settings) -> RedisBroker:
    broker = RedisBroker(url=settings.redis_url, namespace=keys.dramatiq(settings.redis_namespace),
                         heartbeat_timeout=30_000)
    broker.add_middleware(AsyncIO())
    broker.add_middleware(PortalRuntime(settings))
    dramatiq.set_broker(broker)
    return broker
