"""Asking for a node of a cold model: one deduplicated request, whoever asks.

The API, chat replies and jobs all end up here when no node of a model runs.
The first asker within a boot's time takes the model's boot-request key and
enqueues ``boot_model``; the others find the key taken and enqueue nothing, so a
burst of requests boots one node, not fifty. ``boot_model`` clears the key when
the model needs no boot (or none can be booted), so the next ask goes through.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge.store import keys
from edge.tasks import enqueue

if TYPE_CHECKING:
    from edge.settings import Settings
    from edge.store.hotstore import HotStore

__all__ = ["BootRequests"]

log = logging.getLogger(__name__)


class BootRequests:
    """Asks the workers to boot a node of a model, at most once per boot time."""

    def __init__(self, store: HotStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def request(self, model: str, *, asker: str = "edge") -> bool:
        """Ask for a boot of ``model``; False when one was asked for already.

        Never raises: a failure to ask is logged, and the caller answers as for
        a model that is warming (its next request asks again).
        """
        settings = self.settings
        try:
            key = keys.boot_request(self.store.ns, model)
            if not await self.store.client.set(key, asker, nx=True, ex=settings.boot_timeout):
                return False
            await enqueue(settings, "boot_model", model)
        except Exception:
            log.exception("could not ask for a boot of %s", model)
            return False
        return True
