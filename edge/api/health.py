"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, HTTPResponse, Request, json
from tortoise.connection import get_connection

from edge import metrics
from edge.api.readings import take_readings

__all__ = ["bp"]

bp = Blueprint("health")

#: Seconds each dependency gets to answer a readiness probe.
PROBE_TIMEOUT = 2.0


@bp.get("/healthz")
async def healthz(request: Request):
    return json({"status": "ok"})


@bp.get("/readyz")
async def readyz(request: Request):
    portal = request.app.ctx.portal
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await portal.store.client.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await get_connection("default").execute_query("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    watch = portal.watch
    if watch is not None:
        checks["hot_store"] = "ok" if watch.ready else f"not ready: {watch.reason}"
    ready = all(value == "ok" for value in checks.values())
    return json({"status": "ready" if ready else "not ready", "checks": checks},
                status=200 if ready else 503)


@bp.get("/metrics")
async def prometheus(request: Request):
    """Every process's counters, and the gauges read now (``edge/api/readings.py``)."""
    readings = await take_readings(request.app.ctx.portal)
    return HTTPResponse(metrics.render(readings), content_type=metrics.CONTENT_TYPE_LATEST)
