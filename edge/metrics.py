"""Prometheus metrics, summed over every worker process, and what a scrape reads.

``portal serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
the workers start, so each worker writes its samples to shared files and
``/metrics`` on any worker reports the whole server.

Counters and the in-flight gauge are updated where things happen. The gauges of
:class:`Readings` are not: they are computed when ``/metrics`` is scraped
(``edge/api/readings.py`` reads the worker's routing table and does a few bounded
Redis and SQL reads), and rendered by :class:`ReadingsCollector`. They describe the
whole installation (shared Redis and SQL), so every portal host reports the same
values: aggregate them with ``max``, not ``sum``. ``monitoring/`` holds the alert
rules and the dashboard built on these series; ``docs/monitoring.md`` explains them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "ADMISSION_REFUSED",
    "ADMISSION_WAITS",
    "CONTENT_TYPE_LATEST",
    "HEALS",
    "INFLIGHT",
    "JOB_STATES",
    "NODE_STATES",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SPEND",
    "SPOOL_REPLAYS",
    "TOKENS",
    "UPSTREAM_ERRORS",
    "WEBHOOKS",
    "NodeReading",
    "Readings",
    "ReadingsCollector",
    "families",
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
ADMISSION_WAITS = Counter("portal_admission_waits_total", "Calls that found every node of "
                          "their model full and waited in the edge for a slot.", ["model"])
ADMISSION_REFUSED = Counter("portal_admission_refused_total", "Calls refused (429 or 503) "
                            "after waiting for a slot in vain.", ["model"])
#: ``outcome``: ``handled`` (applied), ``duplicate`` (applied before), ``refused`` (bad
#: signature or malformed: 400, never retried) or ``failed`` (5xx: the sender retries).
WEBHOOKS = Counter("portal_webhooks_total", "Webhook deliveries received, by what became "
                   "of them.", ["provider", "outcome"])


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


#: States a node is counted in by ``portal_nodes`` (every one, zero included):
#: ``edge.db.models.NodeState``'s, with ``unhealthy`` for a running node that fails
#: its health checks (``Registry.node_states``).
NODE_STATES = ("pending", "running", "unhealthy", "draining", "stopping", "stopped",
               "terminated")
#: Job states ``portal_jobs`` reports (the unfinished ones, zero included).
JOB_STATES = ("queued", "running")


@dataclasses.dataclass(slots=True, frozen=True)
class NodeReading:
    """One node as this worker's routing table holds it."""

    node: str  # its id
    model: str  # the portal model's name
    state: str  # edge.db.models.NodeState
    healthy: bool
    queue_depth: int  # vllm:num_requests_waiting, as the health check last read it


@dataclasses.dataclass(slots=True, kw_only=True)
class Readings:
    """What one scrape read. ``None``: not read (its Redis or SQL did not answer in
    time), and its series is left out rather than reported as zero."""

    #: Every model of the catalogue, so that a model without nodes reports zeros.
    models: Sequence[str] = ()
    nodes: Sequence[NodeReading] = ()
    redis_up: bool | None = None
    database_up: bool | None = None
    #: The hot store reflects SQL (``edge.billing.heal``); None where nothing watches it.
    hot_store_ready: bool | None = None
    #: Ledger stream entries not yet written to SQL, and the age of the oldest, seconds.
    ledger_backlog: int | None = None
    ledger_backlog_age: float | None = None
    #: Open credit reservations, and how far the earliest deadline is past, seconds.
    reservations_open: int | None = None
    reservations_overdue: float | None = None
    #: Unfinished jobs by state (:data:`JOB_STATES`), and the oldest queued one's age.
    jobs: Mapping[str, int] | None = None
    jobs_oldest_queued_age: float | None = None
    #: The sum of every account's balance in SQL (credit owed to customers), micro-dollars.
    balances: int | None = None


def _gauge(name: str, documentation: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, documentation, value=value)


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


class ReadingsCollector(Collector):
    """The gauges of one scrape's :class:`Readings`, in Prometheus's families."""

    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        r = self.readings
        counts = {(model, state): 0 for model in r.models for state in NODE_STATES}
        healthy = GaugeMetricFamily(
            "portal_node_healthy", "1 when a running node passes its health checks, else 0 "
            "(running nodes only).", labels=["node", "model"])
        queue = GaugeMetricFamily(
            "portal_node_queue_depth", "Requests waiting on a node (vllm:num_requests_waiting "
            "as the portal's health check last read it).", labels=["node", "model"])
        for node in r.nodes:
            state = "unhealthy" if node.state == "running" and not node.healthy else node.state
            counts[node.model, state] = counts.get((node.model, state), 0) + 1
            if node.state == "running":
                healthy.add_metric([node.node, node.model], float(node.healthy))
                queue.add_metric([node.node, node.model], node.queue_depth)
        nodes = GaugeMetricFamily(
            "portal_nodes", "Nodes of a model in each state (unhealthy: running, failing its "
            "health checks).", labels=["model", "state"])
        for (model, state), count in sorted(counts.items()):
            nodes.add_metric([model, state], count)
        yield from (nodes, healthy, queue)
        yield from _gauge("portal_redis_up", "1 when Redis answered this scrape's ping.",
                          _flag(r.redis_up))
        yield from _gauge("portal_database_up", "1 when SQL answered this scrape's query.",
                          _flag(r.database_up))
        yield from _gauge("portal_hot_store_ready", "1 when the hot store (Redis) reflects "
                          "SQL; 0 while it heals.", _flag(r.hot_store_ready))
        yield from _gauge("portal_ledger_backlog_entries", "Ledger stream entries not yet "
                          "written to SQL.", r.ledger_backlog)
        yield from _gauge("portal_ledger_backlog_age_seconds", "Age of the oldest ledger "
                          "entry not yet written to SQL (0: none).", r.ledger_backlog_age)
        yield from _gauge("portal_reservations_open", "Open credit reservations.",
                          r.reservations_open)
        yield from _gauge("portal_reservations_overdue_seconds", "Seconds the earliest "
                          "deadline of an open reservation is past (0: none is).",
                          r.reservations_overdue)
        if r.jobs is not None:
            jobs = GaugeMetricFamily("portal_jobs", "Unfinished queued inference jobs, by "
                                     "state.", labels=["state"])
            for state in JOB_STATES:
                jobs.add_metric([state], r.jobs.get(state, 0))
            yield jobs
        yield from _gauge("portal_jobs_oldest_queued_age_seconds", "Age of the oldest queued "
                          "job (0: none).", r.jobs_oldest_queued_age)
        yield from _gauge("portal_balances_micro_dollars", "Credit of every account in SQL, "
                          "summed (what customers may still spend), micro-dollars.", r.balances)


class _Forward(Collector):
    """The samples of another registry (this process's own, outside multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def _registry(readings: Readings | None = None) -> CollectorRegistry:
    """Every process's series of this server, and ``readings``' gauges."""
    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Forward(REGISTRY))
    if readings is not None:
        registry.register(ReadingsCollector(readings))
    return registry


def render(readings: Readings | None = None) -> bytes:
    """The exposition text for every process of this server, and ``readings``' gauges."""
    return generate_latest(_registry(readings))


def families() -> Iterable[Metric]:
    """The series of every process of this server, as :func:`render` writes them out."""
    return _registry().collect()
