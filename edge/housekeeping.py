"""A worker's periodic chores: refresh the routing table, reap stale reservations."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from edge.reaper import reap_stale_reservations

if TYPE_CHECKING:
    from edge.context import PortalContext

__all__ = ["housekeeping"]

log = logging.getLogger(__name__)

#: Seconds between two rounds; pub/sub does the fast updates, this is the safety net.
INTERVAL = 5.0


async def housekeeping(portal: PortalContext) -> None:
    grace_ms = int(portal.settings.reservation_grace * 1000)
    while not portal.stop.is_set():
        try:
            await asyncio.wait_for(portal.stop.wait(), INTERVAL)
            return
        except TimeoutError:
            pass
        try:
            await portal.registry.reload()
            await reap_stale_reservations(portal.billing, grace_ms)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("housekeeping round failed; trying again in %.0fs", INTERVAL)
