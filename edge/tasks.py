"""Enqueueing background work from the edge, without importing the actors.

The edge only needs to put a message on a queue; building the actors would pull
boto3 and the lifecycle code into every edge worker. Messages are addressed by
actor name and queue, exactly as ``dramatiq_actors`` declares them; the queue
names live here, below both, and :mod:`dramatiq_actors.broker` re-exports them.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from edge.settings import Settings
from edge.store import keys

__all__ = [
    "ACTOR_QUEUES", "QUEUE_JOBS", "QUEUE_LIFECYCLE", "QUEUE_MAINTENANCE", "enqueue",
    "enqueue_now",
]

#: Node actions an operator or a cold model is waiting for.
QUEUE_LIFECYCLE = "lifecycle"
#: Queued inference; long-running.
QUEUE_JOBS = "jobs"
#: Periodic sync, health checks and scaling decisions.
QUEUE_MAINTENANCE = "maintenance"

#: The queue of each actor the edge may enqueue.
ACTOR_QUEUES = {
    "run_job": QUEUE_JOBS,
    "boot_model": QUEUE_LIFECYCLE,
    "boot_node": QUEUE_LIFECYCLE,
    "stop_node": QUEUE_LIFECYCLE,
    "reboot_node": QUEUE_LIFECYCLE,
    "terminate_node": QUEUE_LIFECYCLE,
    "drain_node": QUEUE_LIFECYCLE,
    "launch_node": QUEUE_LIFECYCLE,
    "sync_nodes": QUEUE_MAINTENANCE,
    "check_health": QUEUE_MAINTENANCE,
    "scale_fleet": QUEUE_MAINTENANCE,
    "scale_out_model": QUEUE_LIFECYCLE,
    "replace_node": QUEUE_LIFECYCLE,
    "sweep_jobs": QUEUE_MAINTENANCE,
}


@functools.cache
def _broker(redis_url: str, namespace: str) -> RedisBroker:
    return RedisBroker(url=redis_url, namespace=keys.dramatiq(namespace), middleware=[])


def enqueue_now(settings: Settings, actor: str, *args: Any, **kwargs: Any) -> str:
    """Put a message for ``actor`` on its queue; returns the message id."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=ACTOR_QUEUES[actor], actor_name=actor, args=args, kwargs=kwargs, options={})
    _broker(settings.redis_url, settings.redis_namespace).enqueue(message)
    return message.message_id


async def enqueue(settings: Settings, actor: str, *args: Any, **kwargs: Any) -> str:
    """:func:`enqueue_now` off the event loop (the broker's client is synchronous)."""
    return await asyncio.to_thread(enqueue_now, settings, actor, *args, **kwargs)
