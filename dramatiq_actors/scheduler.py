"""``portal scheduler``: enqueues the periodic actors on their intervals (APScheduler).

One scheduler per installation is enough; two do no harm (every periodic actor
is idempotent), they only double the work.
"""

from __future__ import annotations

import logging
import signal

from apscheduler.schedulers.blocking import BlockingScheduler

from edge.settings import Settings

__all__ = ["run_scheduler"]

log = logging.getLogger(__name__)


def run_scheduler(settings: Settings) -> None:
    from dramatiq_actors.conversations import purge_conversations
    from dramatiq_actors.jobs import sweep_jobs
    from dramatiq_actors.maintenance import check_health, sync_nodes
    from dramatiq_actors.scaling import scale_fleet

    # "Running job ..." and "executed successfully" every few seconds say nothing.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    scheduler = BlockingScheduler(timezone="UTC")
    periodic = (
        (sync_nodes, settings.sync_interval),
        (check_health, settings.health_interval),
        (scale_fleet, settings.scale_interval),
        (sweep_jobs, settings.jobs_sweep_interval),
        (purge_conversations, settings.chat_purge_interval),
    )
    for actor, seconds in periodic:
        if seconds > 0:
            # coalesce + one instance: a scheduler that fell behind sends one, not a burst.
            scheduler.add_job(actor.send, "interval", seconds=seconds, id=actor.actor_name,
                              coalesce=True, max_instances=1)
            scheduler.add_job(actor.send, id=f"{actor.actor_name}-now")  # once at start
            log.info("every %ss: %s", seconds, actor.actor_name)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: scheduler.shutdown(wait=False))
    scheduler.start()
