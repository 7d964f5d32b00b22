"""Queued inference: ``run_job`` answers a job when a node of its model serves.

It claims the job under a lease (renewed while it works), waits for a routable
node (asking for a boot, deduplicated), calls it, stores the answer, then settles
the charge: result first, charge second, both idempotent, so a worker killed at
any point leaves a job that the next attempt finishes without charging twice.
``sweep_jobs`` re-enqueues jobs whose worker vanished and settles finished ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dramatiq
from tortoise.expressions import Q

from dramatiq_actors.broker import QUEUE_JOBS, QUEUE_MAINTENANCE
from dramatiq_actors.runtime import runtime
from edge.db.models import Job, JobStatus
from edge.errors import (
    APIError,
    InvalidRequest,
    NodeFailed,
    NodesBusy,
    NodesUnavailable,
    ScalingOut,
)
from edge.jobs.store import claim_job, finish_job, renew_lease, requeue_job, settle_job
from edge.metering.call import MeteredCall
from edge.metering.request_spec import Endpoint, RequestSpec, parse_request

if TYPE_CHECKING:
    from edge.billing.reservations import Billing
    from edge.fleet.registry import ModelInfo, NodeInfo

__all__ = ["run_job", "sweep_jobs"]

log = logging.getLogger(__name__)

#: Metered calls that may fail (each after trying the model's nodes) before the job fails.
MAX_NODE_FAILURES = 3
#: Longest wait, in seconds, between two looks for a routable node.
NODE_WAIT = 1.0
#: Seconds one attempt waits for a node before giving its worker thread back: jobs
#: waiting for a boot must not hold every thread, the boot's own included.
WAIT_SLICE = 5.0
#: Seconds before a job given back is looked at again.
WAIT_AGAIN = 0.25
#: Seconds a job may stay queued before the sweeper enqueues it again.
QUEUED_GRACE = 300
#: Seconds a given-back job's scheduled message may be late before the sweeper steps in.
SCHEDULED_GRACE = 60


def _billing() -> Billing:
    return runtime().metering.billing


async def _publish(job: Job) -> None:
    await runtime().store.publish(f"job:{job.id}")


class _NoNodeYet(Exception):
    """No routable node within this attempt's slice of waiting."""


# After node actions in a worker's queue (a lower priority runs later): a boot must not
# wait behind the jobs that wait for it.
@dramatiq.actor(queue_name=QUEUE_JOBS, max_retries=5, min_backoff=1_000, max_backoff=30_000,
                time_limit=25 * 3_600_000, priority=10)
async def run_job(job_id: str) -> None:
    """Answer one job."""
    outcome = await answer_job(job_id)
    log.debug("run_job %s: %s", job_id, outcome)


async def answer_job(job_id: str) -> str:
    """Answer one job; returns its final status (or why nothing was done)."""
    rt = runtime()
    job = await Job.get_or_none(id=job_id)
    if job is None:
        return "missing"
    if job.status.terminal:
        if not job.settled:
            await settle_job(job, _billing())
            await _publish(job)
        return str(job.status)
    if not await claim_job(job_id, rt.settings.job_lease):
        return "taken"  # a living worker holds it
    renewer = asyncio.create_task(_renew(job_id, rt.settings.job_lease))
    try:
        await job.refresh_from_db()
        if not await rt.store.client.exists(rt.store.reservation(job.request_id)):
            # Its credit is gone (released, reaped, or Redis reset): never run it free.
            await finish_job(job, JobStatus.FAILED, error=_error(
                "The job's credit reservation was lost; submit it again.", "reservation_lost"))
        else:
            await _answer(job)
    except _NoNodeYet:
        await requeue_job(job_id, WAIT_AGAIN + SCHEDULED_GRACE)
        await asyncio.to_thread(run_job.send_with_options, args=(job_id,),
                                delay=int(WAIT_AGAIN * 1000))
        return "waiting"
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
    if job.status.terminal:
        await settle_job(job, _billing())
        await _publish(job)
    return str(job.status)


async def _renew(job_id: str, lease: int) -> None:
    while True:
        await asyncio.sleep(lease / 3)
        await renew_lease(job_id, lease)


async def _answer(job: Job) -> None:
    rt = runtime()
    model = await _model(job.model)
    if model is None:
        await finish_job(job, JobStatus.FAILED, error=_error(
            f"The model '{job.model}' is no longer offered.", "model_not_found"))
        return
    endpoint = Endpoint(job.endpoint)
    payload = json.dumps(dict(job.body, stream=False), separators=(",", ":")).encode()
    spec = parse_request(payload, endpoint)
    asked_boot = False
    events = None  # subscribed before the first wait, so no "nodes" event is missed
    give_back_at = time.monotonic() + WAIT_SLICE
    try:
        while True:
            remaining = await _time_left(job)
            if remaining <= 0:
                return
            if await _routable_node(model) is not None:
                break
            if time.monotonic() > give_back_at:
                raise _NoNodeYet
            if events is None:
                events = rt.store.client.pubsub(ignore_subscribe_messages=True)
                await events.subscribe(rt.store.events_channel)
                continue  # look again now that nothing can be missed
            if not asked_boot and rt.metering.boots is not None:
                await rt.metering.boots.request(model.name, asker="job")
                asked_boot = True
            await _nodes_changed(events, min(NODE_WAIT, remaining))
    finally:
        if events is not None:
            await events.aclose()
    await _call(job, model, spec, payload)


async def _call(job: Job, model: ModelInfo, spec: RequestSpec, payload: bytes) -> None:
    """Call the model's nodes until one answers, the deadline passes or too many failed.

    Each try is a metered call (which itself tries other nodes while they refuse);
    the answer is stored here, and charged by :func:`settle_job` after.
    """
    rt = runtime()
    failures = 0
    while True:
        remaining = await _time_left(job)
        if remaining <= 0:
            return
        call = MeteredCall(rt.metering, model=model, spec=spec, body=payload,
                           request_id=job.request_id, endpoint=f"job-{spec.endpoint.value}",
                           settles=False, deadline=time.monotonic() + remaining,
                           slot_wait=min(remaining, WAIT_SLICE))
        try:
            async with asyncio.timeout(remaining), call:
                await call.open()
                answer = await call.fetch()
        except InvalidRequest as exc:  # the node refused the request itself (400/422)
            await finish_job(job, JobStatus.FAILED, error={
                **_error(exc.message, exc.code or "invalid_request_error"),
                "param": exc.param, "status": exc.status})
            return
        except (NodesBusy, ScalingOut):  # every node full: the job waits its turn, queued
            log.info("job %s: every node of %s is busy; queued again", job.id, model.name)
            raise _NoNodeYet from None
        except (NodeFailed, NodesUnavailable, TimeoutError) as exc:
            failures += 1
            message = exc.message if isinstance(exc, APIError) else "The GPU node timed out."
            log.warning("job %s: %s (attempt %d)", job.id, message, failures)
            if failures >= MAX_NODE_FAILURES:
                # upstream_unavailable, upstream_error or upstream_timeout: the outcome
                # its usage row records (edge/jobs/store.py).
                code = exc.code if isinstance(exc, APIError) and exc.code \
                    else "upstream_timeout"
                await finish_job(job, JobStatus.FAILED, error=_error(message, code))
                return
            await asyncio.sleep(min(2.0 * failures, max(0.0, remaining)))
            await rt.registry.reload()
            continue
        await finish_job(job, JobStatus.SUCCEEDED, result=answer.body, node_id=answer.node_id,
                         prompt_tokens=answer.prompt_tokens,
                         completion_tokens=answer.completion_tokens)
        return


async def _time_left(job: Job) -> float:
    """Seconds before the job's deadline; at the deadline, the job is expired here."""
    remaining = (job.deadline_at - datetime.now(UTC)).total_seconds()
    if remaining <= 0:
        await finish_job(job, JobStatus.EXPIRED, error=_error(
            "No node of the model answered before the job's deadline.", "job_expired"))
    return remaining


def _error(message: str, code: str) -> dict[str, str]:
    return {"message": message, "code": code}


async def _model(name: str) -> ModelInfo | None:
    """The model as routing knows it (fresh from SQL), or None when it is not offered."""
    registry = runtime().registry
    await registry.reload()
    return registry.model(name)


async def _routable_node(model: ModelInfo) -> NodeInfo | None:
    """The node a call would go to now (the edge's choice: :meth:`Registry.pick`)."""
    registry = runtime().registry
    await registry.reload()
    return registry.pick(model)


async def _nodes_changed(events, timeout: float) -> None:
    """Wait for a ``nodes`` event (a node came up) or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = await events.get_message(timeout=left)
        if message is not None and message["data"] == b"nodes":
            return


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, max_retries=3, time_limit=120_000)
async def sweep_jobs() -> None:
    """Re-enqueue jobs nobody works on, and settle finished ones left unsettled."""
    counts = await sweep()
    if any(counts.values()):
        log.info("sweep_jobs: %s", counts)


async def sweep() -> dict[str, int]:
    now = datetime.now(UTC)
    # A running job whose lease ran out lost its worker; a job still queued after
    # QUEUED_GRACE was probably never enqueued (Redis was away when it was made).
    dead = await Job.filter(status=JobStatus.RUNNING, lease_until__lt=now)
    lost = await Job.filter(Q(status=JobStatus.QUEUED),
                            Q(created_at__lt=now - timedelta(seconds=QUEUED_GRACE)),
                            Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    orphaned = dead + lost
    unsettled = await Job.filter(settled=False, status__in=[
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.EXPIRED])
    for job in orphaned + unsettled:
        await asyncio.to_thread(run_job.send, job.id)
    return {"requeued": len(orphaned), "unsettled": len(unsettled)}
