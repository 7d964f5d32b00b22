"""What a worker shares between requests: hung on ``app.ctx.portal`` at start-up.

It sits below the HTTP surfaces and imports none of them: what a surface keeps for
itself lives on ``app.ctx`` (the chat service on ``app.ctx.chat``), and what the
context holds for one is typed here by what its users call (:class:`JobWaiting`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge.billing.reservations import Billing
    from edge.fleet.registry import Registry
    from edge.fleet.upstream import Upstream
    from edge.identity.console_sessions import ConsoleSessions
    from edge.identity.keys import KeyDirectory
    from edge.identity.sessions import Sessions
    from edge.metering.call import Metering
    from edge.settings import Settings
    from edge.store.events import EventListener
    from edge.store.hotstore import HotStore

__all__ = ["JobWaiting", "PortalContext"]


class JobWaiting(Protocol):
    """Long-polls of ``GET /v1/jobs/{id}?wait=`` in one worker
    (:class:`edge.jobs.waiters.JobWaiters`, woken by ``job:<id>`` events)."""

    def register(self, job_id: str) -> asyncio.Future[None]:
        """A future resolved when the job's outcome is published."""
        ...

    def discard(self, job_id: str, future: asyncio.Future[None]) -> None:
        """Forget a future registered for ``job_id``."""
        ...

    async def wait(self, future: asyncio.Future[None], seconds: float) -> None:
        """Wait for ``future``, at most ``seconds``."""
        ...


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
    job_waiters: JobWaiting
    sessions: Sessions | None = None
    #: The operator console's sessions (edge/identity/console_sessions.py).
    console_sessions: ConsoleSessions | None = None
    worker_id: str = ""
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)
    #: The metered call's shared parts (edge/metering/call.py).
    metering: Metering = None  # type: ignore[assignment]  # set at start-up
    #: Whether the hot store reflects SQL (edge/billing/heal.py), for /readyz.
    watch: Any = None
