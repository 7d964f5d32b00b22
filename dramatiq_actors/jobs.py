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

import dramatiq
import httpx
from tortoise.expressions import Q

from dramatiq_actors.broker import QUEUE_JOBS, QUEUE_MAINTENANCE
from dramatiq_actors.runtime import runtime
from edge.billing.reservations import Billing
from edge.db.models import LLM, Job, JobStatus, Node, NodeState
from edge.fleet.upstream import node_error
from edge.jobs.store import claim_job, finish_job, renew_lease, requeue_job, settle_job
from edge.metering.request_spec import Endpoint

__all__ = ["run_job", "sweep_jobs"]

log = logging.getLogger(__name__)

#: Calls to nodes that may fail (refused, 5xx) before the job fails.
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
    rt = runtime()
    return Billing(rt.store, reservation_ttl_ms=int(rt.settings.upstream_timeout * 1000))


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
    model = await LLM.get_or_none(name=job.model)
    if model is None or not model.enabled:
        await finish_job(job, JobStatus.FAILED, error=_error(
            f"The model '{job.model}' is no longer offered.", "model_not_found"))
        return
    endpoint = Endpoint(job.endpoint)
    body = dict(job.body, model=model.served_name, stream=False)
    payload = json.dumps(body, separators=(",", ":")).encode()
    asked_boot = False
    events = None  # subscribed before the first wait, so no "nodes" event is missed
    give_back_at = time.monotonic() + WAIT_SLICE
    try:
        while True:
            remaining = await _time_left(job)
            if remaining <= 0:
                return
            node = await _routable_node(model)
            if node is not None:
                break
            if time.monotonic() > give_back_at:
                raise _NoNodeYet
            if events is None:
                events = rt.store.client.pubsub(ignore_subscribe_messages=True)
                await events.subscribe(rt.store.events_channel)
                continue  # look again now that nothing can be missed
            if not asked_boot:
                await _ask_boot(model.name)
                asked_boot = True
            await _nodes_changed(events, min(NODE_WAIT, remaining))
    finally:
        if events is not None:
            await events.aclose()
    await _call(job, model, node, endpoint, payload)


async def _call(job: Job, model: LLM, node: Node, endpoint: Endpoint, payload: bytes) -> None:
    """Call nodes until one answers, the deadline passes or too many fail."""
    rt = runtime()
    failures = 0
    while True:
        remaining = await _time_left(job)
        if remaining <= 0:
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(remaining):
                response = await rt.upstream.post(node.url + endpoint.path, payload)
                await response.aread()
        except (httpx.TransportError, httpx.StreamError, TimeoutError) as exc:
            failures += 1
            log.warning("job %s: node %s failed (%s), attempt %d", job.id, node.id, exc, failures)
            if failures >= MAX_NODE_FAILURES:
                await finish_job(job, JobStatus.FAILED, node_id=node.id, error=_error(
                    f"The GPU node failed: {type(exc).__name__}.", "upstream_error"))
                return
            await asyncio.sleep(min(2.0 * failures, max(0.0, remaining)))
            node = await _routable_node(model) or node
            continue
        if response.status_code == 200:
            try:
                answer = response.json()
                usage = answer.get("usage") or {}
            except (ValueError, AttributeError):
                answer = None
        if response.status_code == 200 and isinstance(answer, dict):
            answer["model"] = model.name
            await finish_job(job, JobStatus.SUCCEEDED, result=answer, node_id=node.id,
                             prompt_tokens=int(usage.get("prompt_tokens") or 0),
                             completion_tokens=int(usage.get("completion_tokens") or 0))
            log.debug("job %s answered by node %s in %.2fs", job.id, node.id,
                     time.monotonic() - started)
            return
        error = node_error(response.status_code, response.content) \
            if response.status_code != 200 else node_error(502, b"an answer that is not JSON")
        if error.status == 400:
            await finish_job(job, JobStatus.FAILED, node_id=node.id,
                             error=_error(error.message, "invalid_request_error"))
            return
        failures += 1
        if failures >= MAX_NODE_FAILURES:
            await finish_job(job, JobStatus.FAILED, node_id=node.id,
                             error=_error(error.message, "upstream_error"))
            return
        await asyncio.sleep(min(2.0 * failures, max(0.0, remaining)))
        node = await _routable_node(model) or node


async def _time_left(job: Job) -> float:
    """Seconds before the job's deadline; at the deadline, the job is expired here."""
    remaining = (job.deadline_at - datetime.now(UTC)).total_seconds()
    if remaining <= 0:
        await finish_job(job, JobStatus.EXPIRED, error=_error(
            "No node of the model answered before the job's deadline.", "job_expired"))
    return remaining


def _error(message: str, code: str) -> dict[str, str]:
    return {"message": message, "code": code}


async def _routable_node(model: LLM) -> Node | None:
    nodes = await Node.filter(model=model, state=NodeState.RUNNING, healthy=True)
    return min(nodes, key=lambda n: (n.queue_depth + n.running_requests, n.id), default=None)


async def _ask_boot(model: str) -> None:
    """Enqueue ``boot_model`` unless a boot of this model is already under way."""
    from dramatiq_actors.lifecycle import boot_lock, boot_model

    rt = runtime()
    if await rt.store.client.set(boot_lock(model), "job", nx=True, ex=rt.settings.boot_timeout):
        await asyncio.to_thread(boot_model.send, model)


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
