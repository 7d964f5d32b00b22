"""Which edge workers answered: the proof that a multi-worker test involved every worker.

``portal serve`` names the worker process in ``x-portal-worker``. The kernel may hand a
whole batch of new connections to one worker, so these fire batches over fresh
connections (no keep-alive) until every worker has answered or the rounds run out.
"""

from __future__ import annotations

import asyncio

import httpx

__all__ = ["answering_workers", "statuses_by_worker"]


async def statuses_by_worker(url: str, key: str, path: str = "/v1/key", *, count: int = 30,
                             rounds: int = 20, workers: int = 2) -> dict[str, set[int]]:
    """The status codes each worker answered to ``GET path`` with ``key``.

    Parameters:
      url: the portal's base URL.
      key: the API key (bearer token) to send.
      count: requests per round, all at once.
      rounds: most rounds before giving up (the caller asserts on what it got).
      workers: stop as soon as this many workers answered.
    """
    seen: dict[str, set[int]] = {}
    async with httpx.AsyncClient(base_url=url,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(rounds):
            responses = await asyncio.gather(*(
                client.get(path, headers={"authorization": f"Bearer {key}"})
                for _ in range(count)))
            for response in responses:
                seen.setdefault(response.headers["x-portal-worker"], set()).add(
                    response.status_code)
            if len(seen) >= workers:
                break
    return seen


async def answering_workers(url: str, key: str, path: str = "/v1/key", **options: int) -> set[str]:
    """The workers (pids, as strings) that answered; see :func:`statuses_by_worker`."""
    return set(await statuses_by_worker(url, key, path, **options))
