"""A worker's periodic chore: refresh the routing table from SQL.

Pub/sub does the fast updates; this is the safety net for a missed message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.fleet.registry import Registry

__all__ = ["housekeeping"]

log = logging.getLogger(__name__)

#: Seconds between two reloads.
INTERVAL = 5.0


async def housekeeping(registry: Registry, stop: asyncio.Event) -> None:
    """Reload ``registry`` from SQL every :data:`INTERVAL` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), INTERVAL)
            return
        except TimeoutError:
            pass
        try:
            await registry.reload()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reloading the routing table failed; trying again in %.0fs", INTERVAL)
