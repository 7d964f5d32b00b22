"""What a worker shares between requests: hung on ``app.ctx.portal`` at start-up."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from edge.jobs.waiters import JobWaiters

if TYPE_CHECKING:
    from edge.billing.reservations import Billing
    from edge.chat import ChatService
    from edge.fleet.registry import Registry
    from edge.fleet.upstream import Upstream
    from edge.identity.keys import KeyDirectory
    from edge.identity.sessions import Sessions
    from edge.metering.call import Metering
    from edge.settings import Settings
    from edge.store.events import EventListener
    from edge.store.hotstore import HotStore

__all__ = ["PortalContext"]


@dataclasses.dataclass(slots=True)
class PortalContext:
    settings: Settings
    pepper: bytes
    store: HotStore
    keys: KeyDirectory
    billing: Billing
    registry: Registry
    events: EventListener
    http: Upstream
    job_waiters: JobWaiters = dataclasses.field(default_factory=lambda: JobWaiters())
    sessions: Sessions | None = None
    chat: ChatService | None = None
    worker_id: str = ""
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)
    #: The metered call's shared parts (edge/metering/call.py).
    metering: Metering = None  # type: ignore[assignment]  # set at start-up
    #: Whether the hot store reflects SQL (edge/billing/heal.py), for /readyz.
    watch: Any = None
