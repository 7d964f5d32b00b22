"""Long-polling: wake ``GET /v1/jobs/{id}?wait=`` when the job's outcome is published."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["JobWaiters"]


class JobWaiters:
    """Futures per job id in one worker, resolved by ``job:<id>`` events."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    def register(self, job_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, set()).add(future)
        return future

    def discard(self, job_id: str, future: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(job_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[job_id]

    def on_event(self, event: str) -> None:
        """``job:<id>`` → wake everyone waiting for that job."""
        for future in self._waiting.pop(event.removeprefix("job:"), ()):
            if not future.done():
                future.set_result(None)

    async def wait(self, future: asyncio.Future[None], seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), seconds)
