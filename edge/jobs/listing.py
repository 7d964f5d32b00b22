"""The operator's list of queued jobs, newest first, with whose they are.

A job belongs to a key; the list names the key's account beside it (one more read for
the page, not one per job), and where the job ran.
"""

from __future__ import annotations

from typing import Any

from edge.db.models import ApiKey, Job, JobStatus
from edge.jobs.store import job_view

__all__ = ["list_jobs"]


async def list_jobs(*, status: JobStatus | None = None, account: int | None = None,
                    model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Jobs newest first, as :func:`edge.jobs.store.job_view` shows them without their
    result, with ``key_id``, ``account`` (the key's account id) and ``node_id`` (the node
    that ran it last, None before one did).

    Parameters:
      status: only jobs in this status.
      account: only the jobs of this account's keys.
      model: only jobs for the model of this name.
      limit: at most this many (1 to 500).
    """
    query = Job.all().order_by("-created_at")
    if status is not None:
        query = query.filter(status=status)
    if account is not None:
        query = query.filter(key__account_id=account)
    if model is not None:
        query = query.filter(model=model)
    jobs = await query.limit(max(1, min(500, limit)))
    owners = dict(await ApiKey.filter(id__in={job.key_id for job in jobs}).values_list(
        "id", "account_id"))
    data = []
    for job in jobs:
        entry = job_view(job)
        entry.pop("result", None)
        entry.update(key_id=job.key_id, account=owners.get(job.key_id), node_id=job.node_id)
        data.append(entry)
    return data
