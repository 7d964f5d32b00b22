"""``POST /v1/jobs`` and ``GET /v1/jobs/{id}``: inference that waits for its node.

A job takes the body of a chat completion (``"endpoint": "completions"`` for the
other endpoint, ``"deadline"`` in seconds) and is accepted at once, whatever the
state of the model's nodes. Its worst-case cost is reserved at once, so a job
never runs on credit the key does not have; ``run_job`` settles it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge.db.models import Job
from edge.errors import InvalidRequest, ModelNotFound, NotFound
from edge.identity.auth import authenticate, credentials
from edge.jobs.store import JOB_ID, job_view, new_job_id
from edge.jsonbody import json_object
from edge.metering.call import MeteredCall
from edge.metering.outcome import Outcome
from edge.metering.request_spec import Endpoint, RequestSpec, check_fits, parse_request
from edge.tasks import enqueue

if TYPE_CHECKING:
    from edge.context import PortalContext
    from edge.fleet.registry import ModelInfo
    from edge.identity.keys import KeyRecord

__all__ = ["bp"]

log = logging.getLogger(__name__)

bp = Blueprint("jobs", url_prefix="/v1")

#: Longest long-poll, seconds.
MAX_WAIT = 60.0


@bp.post("/jobs")
async def submit(request: Request):
    portal = request.app.ctx.portal
    settings = portal.settings
    key = await authenticate(portal, credentials(request.headers))
    body = json_object(request.body)
    endpoint_name = body.pop("endpoint", "chat")
    if endpoint_name not in ("chat", "completions"):
        raise InvalidRequest("'endpoint' must be 'chat' or 'completions'.", param="endpoint")
    endpoint = Endpoint(endpoint_name)
    deadline = body.pop("deadline", settings.job_deadline)
    if isinstance(deadline, bool) or not isinstance(deadline, int) \
            or not 1 <= deadline <= settings.job_max_deadline:
        raise InvalidRequest(f"'deadline' must be a number of seconds from 1 to "
                             f"{settings.job_max_deadline}.", param="deadline")
    if body.get("stream"):
        raise InvalidRequest("Jobs are not streamed; poll GET /v1/jobs/{id} for the answer.",
                             param="stream")
    raw = json.dumps(body, separators=(",", ":")).encode()
    spec = parse_request(raw, endpoint)
    model = portal.registry.model(spec.model)
    if model is None:
        raise ModelNotFound(f"The model '{spec.model}' does not exist or is not enabled.",
                            param="model")
    check_fits(spec, model.context_length)
    # Reserving, recording and enqueueing run to the end even if the client goes
    # away meanwhile: a job must never exist without its credit, nor credit stay
    # held for a job that does not exist.
    job = await asyncio.shield(asyncio.ensure_future(_make_job(
        portal, key, model, spec, raw, body, deadline)))
    return json_response(job_view(job), status=202)


async def _make_job(portal: PortalContext, key: KeyRecord, model: ModelInfo,
                    spec: RequestSpec, raw: bytes, body: dict, deadline: int) -> Job:
    settings = portal.settings
    job_id = new_job_id()
    endpoint = spec.endpoint
    # The job's metered call is made by run_job; its credit is held now, until the
    # deadline, by the same reservation as every other call's.
    call = MeteredCall(portal.metering, model=model, spec=spec, body=raw,
                       request_id="req_" + job_id.removeprefix("job_"),
                       endpoint=f"job-{endpoint.value}", settles=False)
    reservation = await call.reserve(
        key, ttl_ms=int((deadline + settings.upstream_timeout + 60) * 1000))
    try:
        job = await Job.create(id=job_id, key_id=key.id, model=model.name,
                               endpoint=endpoint.value, body=body,
                               request_id=reservation.request_id,
                               deadline_at=datetime.now(UTC) + timedelta(seconds=deadline))
    except Exception:
        await call.finish(Outcome.FAILED)
        raise
    # If this fails, the sweeper enqueues the job later: it is already recorded.
    try:
        await enqueue(settings, "run_job", job.id)
    except Exception:
        log.exception("could not enqueue %s; the sweeper will", job.id)
    return job


@bp.get("/jobs/<job_id:str>")
async def status(request: Request, job_id: str):
    portal = request.app.ctx.portal
    key = await authenticate(portal, credentials(request.headers))
    wait = _wait_seconds(request.args.get("wait"))
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(f"No job '{job_id[:64]}' for this key.", param="id")
    future = portal.job_waiters.register(job_id) if wait else None
    try:
        job = await Job.get_or_none(id=job_id, key_id=key.id)
        if job is None:
            raise NotFound(f"No job '{job_id}' for this key.", param="id")
        if future is not None and not job.status.terminal:
            await portal.job_waiters.wait(future, wait)
            await job.refresh_from_db()
    finally:
        if future is not None:
            portal.job_waiters.discard(job_id, future)
    return json_response(job_view(job))


def _wait_seconds(raw: str | None) -> float:
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise InvalidRequest("'wait' must be a number of seconds.", param="wait") from None
    if not 0 <= seconds <= MAX_WAIT or seconds != seconds:
        raise InvalidRequest(f"'wait' must be between 0 and {MAX_WAIT:.0f}.", param="wait")
    return seconds
