"""Open chat sockets obey the usable-key rule: a refused key's sockets are closed.

A socket checks its key when it opens; this keeps checking while it stays open.
A revocation or a freeze reaches every worker at once as a ``key:<prefix>`` event
(:mod:`edge.store.events`), and the key's sockets here are closed within
milliseconds. Expiry sends no event, and events are lost while Redis is away:
every :data:`CHECK_INTERVAL` the guard also asks the rule again for each key with
a socket here (from the worker's key cache, refreshed from Redis when stale).

A closed socket gets an ``error`` event (``invalid_api_key`` or ``key_frozen``)
instead of anything still queued, then close code 4001 or 4003.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from edge.chat.protocol import CLOSE_FROZEN, event, refusal_close
from edge.identity.keys import KeyRefusal
from edge.store.hotstore import RedisUnavailable

if TYPE_CHECKING:
    from edge.chat.hub import RoomHub
    from edge.chat.limits import RoomQuota
    from edge.identity.keys import KeyDirectory, KeyRecord

__all__ = ["CHECK_INTERVAL", "KeyGuard", "refuse_key"]

log = logging.getLogger(__name__)

#: Seconds between two checks of every key with a socket on this worker.
CHECK_INTERVAL = 0.5


def refuse_key(hub: RoomHub, prefix: str, refusal: KeyRefusal) -> int:
    """Close this worker's sockets of the key ``prefix``; returns how many."""
    code, error = refusal_close(refusal)
    last = event("error", code=error, message=f"{refusal.message} The socket closes.")
    return hub.close_key(prefix, code, f"key {refusal}", last)


class KeyGuard:
    """Closes the sockets of keys the rule refuses, on events and every half second.

    Parameters:
      keys: the worker's key directory.
      hub: the worker's rooms.
      quota: refreshed for the keys with sockets here (:meth:`RoomQuota.refresh`).
    """

    def __init__(self, keys: KeyDirectory, hub: RoomHub, quota: RoomQuota | None = None) -> None:
        self.keys = keys
        self.hub = hub
        self.quota = quota
        self._wake = asyncio.Event()

    async def on_event(self, name: str) -> None:
        """An ``$ns:events`` event: ``key:<prefix>`` checks that key now, ``keys`` all."""
        if name.startswith("key:"):
            await self.check(name[4:])
        elif name == "keys":
            self._wake.set()

    async def check(self, prefix: str) -> KeyRefusal | None:
        """Ask the rule about ``prefix`` if it has sockets here; close them if refused."""
        if prefix not in self.hub.by_prefix:
            return None
        hit, record = self.keys.cached(prefix)
        if not hit:
            try:
                record = await self.keys.lookup(prefix)
            except RedisUnavailable:
                return None  # Redis away: sockets stay until the key can be read again
        refusal = _refusal(record)
        if refusal is not None:
            closed = refuse_key(self.hub, prefix, refusal)
            log.info("chat: key %s is %s; closed its %d socket(s) here", prefix, refusal,
                     closed)
        elif record is not None and (forbidden := record.forbids(route="chat")) is not None:
            # Its routes no longer name chat rooms: forbidden, as a frozen key is (4003).
            last = event("error", code="permission_denied",
                         message=f"{forbidden} The socket closes.")
            closed = self.hub.close_key(prefix, CLOSE_FROZEN, "key may not chat", last)
            log.info("chat: key %s may no longer chat; closed its %d socket(s) here", prefix,
                     closed)
        return refusal

    async def run(self, stop: asyncio.Event) -> None:
        """Check every key with a socket here until ``stop``; refresh the quota."""
        refreshed = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_INTERVAL)
            self._wake.clear()
            try:
                for prefix in list(self.hub.by_prefix):
                    await self.check(prefix)
                if self.quota is not None and time.monotonic() - refreshed > self.quota.REFRESH:
                    refreshed = time.monotonic()
                    await self.quota.refresh({m.key_id for same in self.hub.by_prefix.values()
                                              for m in same.values()})
            except asyncio.CancelledError:
                raise
            except RedisUnavailable as exc:
                log.warning("chat guard: Redis unavailable (%s)", exc)
            except Exception:
                log.exception("chat guard: a check failed")


def _refusal(record: KeyRecord | None) -> KeyRefusal | None:
    if record is None:  # gone from the mirror: no longer a key
        return KeyRefusal.REVOKED
    return record.refusal(time.time())
