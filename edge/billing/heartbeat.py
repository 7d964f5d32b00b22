"""A process's heartbeat in Redis, so the reaper frees what a dead process held.

Each edge worker names itself (:func:`new_owner`), stamps that name on its
reservations (``own``) and keeps ``$ns:hb:<owner>`` alive with a short TTL. When
the process dies the key expires within :data:`TTL_MS`, and the reaper settles
its reservations from their recorded progress within seconds, instead of after
their deadline (the upstream timeout: minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["INTERVAL", "TTL_MS", "heartbeat", "new_owner"]

log = logging.getLogger(__name__)

#: Seconds between two beats.
INTERVAL = 1.0
#: Milliseconds a beat keeps the key alive: three beats, so one slow beat is no death.
TTL_MS = 3000


def new_owner() -> str:
    """A name no other process has had: host and pid, plus randomness for pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def heartbeat(store: HotStore, owner: str, stop: asyncio.Event, *,
                    interval: float = INTERVAL, ttl_ms: int = TTL_MS) -> None:
    """Refresh ``owner``'s key until ``stop``; then delete it.

    By then the worker has finished its requests (Sanic's graceful shutdown), so
    whatever it still holds is abandoned and may be reaped at once.
    """
    key = store.heartbeat(owner)
    failing = False
    try:
        while not stop.is_set():
            try:
                await store.client.set(key, "1", px=ttl_ms)
                if failing:
                    log.warning("heartbeat: Redis answers again")
                    failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("heartbeat: cannot refresh %s (%s); the reaper may settle "
                                "this worker's reservations", key, exc)
                    failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.client.delete(key), 1.0)
