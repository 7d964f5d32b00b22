"""Periodic actor: remove for good the conversations deleted long enough ago.

A deleted private room stays restorable for ``PORTAL_CHAT_PURGE_DAYS``; after that
its messages and share links go with it. Idempotent: a repeated run finds nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import dramatiq

from dramatiq_actors.broker import QUEUE_MAINTENANCE
from dramatiq_actors.maintenance import RETRIES
from dramatiq_actors.runtime import runtime
from edge.db.models import ChatRoom

__all__ = ["purge_conversations", "purge_deleted"]

log = logging.getLogger(__name__)


async def purge_deleted(days: int, *, at: datetime | None = None) -> int:
    """Remove the rooms deleted over ``days`` ago; their messages, members and shares
    go with them (the foreign keys cascade)."""
    cutoff = (at or datetime.now(UTC)) - timedelta(days=days)
    doomed = [room.id for room in await ChatRoom.filter(deleted_at__lt=cutoff).only("id")]
    if doomed:
        await ChatRoom.filter(id__in=doomed).delete()
    return len(doomed)


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, time_limit=300_000, **RETRIES)
async def purge_conversations() -> None:
    removed = await purge_deleted(runtime().settings.chat_purge_days)
    if removed:
        log.info("purged %s conversations deleted over %s days ago", removed,
                 runtime().settings.chat_purge_days)
