"""What a worker shares between requests: hung on ``app.ctx.portal`` at start-up."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.jobs.waiters import JobWaiters

if TYPE_CHECKING:
    from edge.billing.reservations import Billing
    from edge.chat import ChatService
    from edge.fleet.registry import ModelInfo, Registry
    from edge.fleet.upstream import Upstream
    from edge.identity.keys import KeyDirectory
    from edge.identity.sessions import Sessions
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
    #: Called when a request finds no running node of a model (the node
    #: lifecycle plugs its boot request in here); returns seconds to wait.
    on_cold_model: Callable[[ModelInfo], Any] | None = None
    #: Whether the hot store reflects SQL (edge/billing/heal.py), for /readyz.
    watch: Any = None
