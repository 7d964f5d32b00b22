"""Job records: making, claiming, finishing and settling them.

Shared by the API (which makes jobs and reads them) and ``run_job`` (which claims
and finishes them). A worker owns a running job through a lease it renews; when
the lease runs out (the worker died), another may take the job over. The result
is stored before the charge is settled, and settling is idempotent by the
job's request id, so a job is answered once and charged once whatever crashes.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tortoise.expressions import F, Q
from tortoise.functions import Coalesce, Count

from edge.billing.money import format_usd
from edge.db.models import Job, JobStatus
from edge.metering.outcome import Charge, Outcome, settle

if TYPE_CHECKING:
    from edge.billing.reservations import Billing

__all__ = ["JOB_ID", "claim_job", "finish_job", "job_view", "new_job_id", "queue_counts",
           "renew_lease", "requeue_job", "settle_job"]


#: What :func:`new_job_id` makes.
JOB_ID = re.compile(r"job_[0-9a-f]{24}")


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


def _now() -> datetime:
    return datetime.now(UTC)


async def queue_counts() -> tuple[dict[str, int], float]:
    """Unfinished jobs by status, and the oldest queued one's age in seconds (0: none).

    Two reads on the ``(status, created_at)`` index, for the metrics.
    """
    rows = await (Job.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
                  .annotate(n=Count("id")).group_by("status").values_list("status", "n"))
    counts = {str(status): int(n) for status, n in rows}
    oldest: Any = await (Job.filter(status=JobStatus.QUEUED).order_by("created_at")
                         .first().values_list("created_at", flat=True))
    age = (_now() - oldest).total_seconds() if isinstance(oldest, datetime) else 0.0
    return counts, max(0.0, age)


async def claim_job(job_id: str, lease_seconds: int) -> bool:
    """Take a queued job, or a running one whose worker's lease ran out."""
    now = _now()
    taken = await Job.filter(
        Q(id=job_id),
        Q(status=JobStatus.QUEUED) | (Q(status=JobStatus.RUNNING) & (
            Q(lease_until__isnull=True) | Q(lease_until__lt=now))),
    ).update(status=JobStatus.RUNNING, lease_until=now + timedelta(seconds=lease_seconds),
             attempts=F("attempts") + 1, started_at=Coalesce(F("started_at"), now))
    return bool(taken)


async def requeue_job(job_id: str, scheduled_for: float) -> None:
    """Give a running job back to the queue while it waits for a node.

    Waiting is not an attempt. ``lease_until`` of a queued job says until when a
    message is scheduled for it, so that the sweeper does not send another.
    """
    await Job.filter(id=job_id, status=JobStatus.RUNNING).update(
        status=JobStatus.QUEUED, lease_until=_now() + timedelta(seconds=scheduled_for),
        attempts=F("attempts") - 1)


async def renew_lease(job_id: str, lease_seconds: int) -> None:
    await Job.filter(id=job_id, status=JobStatus.RUNNING).update(
        lease_until=_now() + timedelta(seconds=lease_seconds))


async def finish_job(job: Job, status: JobStatus, *, result: Any = None, error: Any = None,
                     prompt_tokens: int = 0, completion_tokens: int = 0,
                     node_id: int | None = None) -> bool:
    """Record the outcome once; False when the job was already finished."""
    done = await Job.filter(id=job.id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
        status=status, result=result, error=error, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, node_id=node_id, finished_at=_now(),
        lease_until=None)
    await job.refresh_from_db()
    return bool(done)


#: The outcome a failed job's error code stands for (usage rows and metrics).
_FAILED_OUTCOMES = {"upstream_error": Outcome.NODE_FAILED,
                    "upstream_unavailable": Outcome.UNAVAILABLE,
                    "upstream_timeout": Outcome.TIMED_OUT,
                    "model_not_found": Outcome.REFUSED,
                    "job_expired": Outcome.TIMED_OUT}


def job_outcome(job: Job) -> tuple[Outcome, int | None]:
    """How a finished job's metered call ended, and the status it ended with when the
    outcome's own is not it (a node's 400 or 422, a model gone: 404)."""
    if job.status is JobStatus.SUCCEEDED:
        return Outcome.DONE, None
    error = job.error if isinstance(job.error, dict) else {}
    status = error.get("status")
    if isinstance(status, int) and 400 <= status < 500:  # the node refused it
        return Outcome.REFUSED, status
    if error.get("code") == "model_not_found":
        return Outcome.REFUSED, 404
    return _FAILED_OUTCOMES.get(error.get("code") or "", Outcome.FAILED), None


async def settle_job(job: Job, billing: Billing) -> int:
    """Charge a finished job for its tokens (nothing if it failed) and release the rest.

    Idempotent: the reservation is settled at most once, by request id, through
    the metered call's one settlement (:func:`edge.metering.outcome.settle`).
    Returns the micro-dollars charged.
    """
    store = billing.store
    pin, pout, account = await store.client.hmget(store.reservation(job.request_id), "pin",
                                                  "pout", "acct")
    charged = 0
    if pin is not None and pout is not None:
        outcome, status = job_outcome(job)
        succeeded = outcome is Outcome.DONE
        latency = int(((job.finished_at or _now()) - job.created_at).total_seconds() * 1000)
        settlement = await settle(
            billing, Charge(job.request_id, job.key_id, int(account or job.key_id), int(pin),
                            int(pout)),
            outcome, prompt_tokens=job.prompt_tokens if succeeded else 0,
            completion_tokens=job.completion_tokens if succeeded else 0, model=job.model,
            node_id=job.node_id, endpoint=f"job-{job.endpoint}", latency_ms=latency,
            streamed=False, status=status)
        charged = settlement.charged if settlement.settled else 0
    # Only the one settlement that took the reservation has a charge; others add 0.
    await Job.filter(id=job.id).update(settled=True, cost=F("cost") + charged)
    job.settled = True
    job.cost += charged
    return charged


def job_view(job: Job) -> dict[str, Any]:
    """The API's representation of a job."""
    view: dict[str, Any] = {
        "id": job.id,
        "object": "job",
        "status": str(job.status),
        "model": job.model,
        "endpoint": job.endpoint,
        "created_at": int(job.created_at.timestamp()),
        "started_at": int(job.started_at.timestamp()) if job.started_at else None,
        "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None,
        "deadline_at": int(job.deadline_at.timestamp()),
        "attempts": job.attempts,
    }
    if job.status is JobStatus.SUCCEEDED:
        view["result"] = job.result
    if job.error is not None:
        view["error"] = job.error
    if job.settled:
        view["cost"] = format_usd(job.cost)
        view["cost_micros"] = job.cost
    return view
