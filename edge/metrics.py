"""Prometheus metrics, summed over every worker process.

``portal serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
the workers start, so each worker writes its samples to shared files and
``/metrics`` on any worker reports the whole server.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "HEALS",
    "INFLIGHT",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SPEND",
    "SPOOL_REPLAYS",
    "TOKENS",
    "UPSTREAM_ERRORS",
    "render",
    "request_series",
]

REQUESTS = Counter("portal_requests_total", "API requests answered.",
                   ["endpoint", "model", "status"])
REQUEST_SECONDS = Histogram(
    "portal_request_duration_seconds", "Time to answer an API request (streams: to the end).",
    ["endpoint", "model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
TOKENS = Counter("portal_tokens_total", "Tokens billed.", ["model", "kind"])
SPEND = Counter("portal_spend_micro_dollars_total", "Micro-dollars charged.", ["model"])
INFLIGHT = Gauge("portal_node_inflight_requests", "Requests open on a node.", ["node"],
                 multiprocess_mode="livesum")
HEALS = Counter("portal_hot_store_heals_total",
                "Times the hot store (Redis) was rebuilt from SQL after losing or "
                "going back in time.")
SPOOL_REPLAYS = Counter("portal_spool_replays_total",
                        "Settlements Redis lost that were charged again from a spool.")
UPSTREAM_ERRORS = Counter("portal_upstream_errors_total", "Failed calls to GPU nodes.",
                          ["node", "kind"])


@dataclasses.dataclass(slots=True, frozen=True)
class RequestSeries:
    """The labelled children one kind of request updates (looked up once, not per call)."""

    requests: Any
    seconds: Any
    prompt_tokens: Any
    completion_tokens: Any
    spend: Any


@functools.cache
def request_series(endpoint: str, model: str, status: int) -> RequestSeries:
    return RequestSeries(
        requests=REQUESTS.labels(endpoint, model, str(status)),
        seconds=REQUEST_SECONDS.labels(endpoint, model),
        prompt_tokens=TOKENS.labels(model, "prompt"),
        completion_tokens=TOKENS.labels(model, "completion"),
        spend=SPEND.labels(model),
    )


def render() -> bytes:
    """The exposition text for every process of this server."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
    return generate_latest()
