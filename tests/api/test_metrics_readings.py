"""``/metrics``: the gauges read at scrape time (``edge/api/readings.py``) and the webhook
counter, on the in-process portal; a scrape whose Redis and SQL hang still answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge import metrics
from edge.api import readings
from edge.db.models import Job, JobStatus, Node
from edge.fleet.registry import Registry
from tests.support.fake_stripe import event_payload, sign
from tests.support.inprocess import InProcessPortal, NodeDouble

WEBHOOK_SECRET = "whsec_test_metrics"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[name, tuple(sorted(labels.items()))]


async def scrape(portal: InProcessPortal) -> Samples:
    response = await portal.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


@pytest.mark.portal_settings(stripe_webhook_secret=WEBHOOK_SECRET)
async def test_scrape_reads_nodes_jobs_ledger_and_money(
        inprocess_portal: InProcessPortal,
        node_doubles: Callable[..., Awaitable[NodeDouble]]) -> None:
    portal = inprocess_portal
    await portal.add_model("m1", served_name="sim-m1")
    await portal.add_model("idle")  # no node at all: zeros
    healthy = await portal.add_node("m1", await node_doubles("sim-m1"))
    sick = await portal.add_node("m1", "http://127.0.0.1:9", healthy=False)
    await portal.add_node("m1", "http://127.0.0.1:9", state="stopped")
    await Node.filter(id=healthy).update(queue_depth=7)
    await portal.ctx.registry.reload()
    key_id, key = await portal.create_key("10")
    for _ in range(2):
        assert (await portal.chat(key, "m1", max_tokens=4)).status_code == 200
    await Job.create(id="job_" + "0" * 24, key_id=key_id, model="m1", body={},
                     request_id="metrics-test-job", deadline_at=datetime.now(UTC)
                     + timedelta(hours=1), status=JobStatus.QUEUED)
    await Job.filter(id="job_" + "0" * 24).update(
        created_at=datetime.now(UTC) - timedelta(seconds=90))

    found = await scrape(portal)
    assert value(found, "portal_nodes", model="m1", state="running") == 1
    assert value(found, "portal_nodes", model="m1", state="unhealthy") == 1
    assert value(found, "portal_nodes", model="m1", state="stopped") == 1
    assert value(found, "portal_nodes", model="m1", state="pending") == 0
    assert all(value(found, "portal_nodes", model="idle", state=state) == 0
               for state in metrics.NODE_STATES)
    assert value(found, "portal_node_healthy", node=str(healthy), model="m1") == 1
    assert value(found, "portal_node_healthy", node=str(sick), model="m1") == 0
    assert value(found, "portal_node_queue_depth", node=str(healthy), model="m1") == 7
    assert not [k for k in found if k[0] == "portal_node_healthy" and ("node", "3") in k[1]]
    assert value(found, "portal_redis_up") == 1
    assert value(found, "portal_database_up") == 1
    assert value(found, "portal_hot_store_ready") == 1
    # Two settlements and nothing drained yet: both entries wait for SQL.
    assert value(found, "portal_ledger_backlog_entries") == 2
    assert 0 <= value(found, "portal_ledger_backlog_age_seconds") < 30
    assert value(found, "portal_reservations_open") == 0
    assert value(found, "portal_reservations_overdue_seconds") == 0
    assert value(found, "portal_jobs", state="queued") == 1
    assert value(found, "portal_jobs", state="running") == 0
    assert 85 < value(found, "portal_jobs_oldest_queued_age_seconds") < 300
    # The counters of the calls are there too.
    assert value(found, "portal_requests_total", endpoint="chat", model="m1",
                 status="200") >= 2

    await portal.drain_ledger()
    spent = (await portal.sql("SELECT SUM(balance) FROM accounts"))[0][0]
    found = await scrape(portal)
    assert value(found, "portal_ledger_backlog_entries") == 0
    assert value(found, "portal_ledger_backlog_age_seconds") == 0
    assert value(found, "portal_balances_micro_dollars") == spent
    assert 0 < spent < 10_000_000  # the calls were charged


@pytest.mark.portal_settings(stripe_webhook_secret=WEBHOOK_SECRET)
async def test_webhook_deliveries_are_counted_by_outcome(
        inprocess_portal: InProcessPortal) -> None:
    portal = inprocess_portal

    def count(outcome: str) -> float:
        return metrics.WEBHOOKS.labels("stripe", outcome)._value.get()

    before = {outcome: count(outcome) for outcome in ("handled", "duplicate", "refused")}
    payload = event_payload("customer.created", {"id": "cus_1", "object": "customer"})
    headers = {"content-type": "application/json"}
    for _ in range(2):
        signed = await portal.client.post("/webhooks/stripe", content=payload, headers={
            **headers, "stripe-signature": sign(payload, WEBHOOK_SECRET)})
        assert signed.status_code == 200, signed.text
    forged = await portal.client.post("/webhooks/stripe", content=payload, headers={
        **headers, "stripe-signature": sign(payload, "whsec_someone_else")})
    assert forged.status_code == 400
    assert count("handled") - before["handled"] == 1
    assert count("duplicate") - before["duplicate"] == 1
    assert count("refused") - before["refused"] == 1
    found = await scrape(portal)
    assert value(found, "portal_webhooks_total", provider="stripe", outcome="refused") >= 1


class _Hanging:
    """A Redis client whose every command waits forever (a Redis that stopped answering)."""

    def __getattr__(self, name: str) -> Any:
        if name == "pipeline":
            return lambda **kwargs: self
        if name in ("time", "xlen", "xrange", "zcard", "zrange"):
            return lambda *args, **kwargs: None
        return self._forever

    async def _forever(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    async def __aenter__(self) -> _Hanging:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    execute = _forever


async def test_a_scrape_answers_within_its_bound_when_redis_and_sql_hang(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No database opened and a Redis that never answers: every read gives up in time,
    the up gauges say 0, and the series that could not be read are left out."""
    monkeypatch.setattr(readings, "READ_TIMEOUT", 0.2)

    async def hang() -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(readings, "queue_counts", hang)
    monkeypatch.setattr(readings, "outstanding_balances", hang)
    monkeypatch.setattr(readings, "_ping_database", hang)
    registry = Registry()
    registry.models = {"m": SimpleNamespace(id=1, name="m")}  # type: ignore[dict-item]
    registry.nodes = {1: [SimpleNamespace(id=5, state="running", healthy=True,  # type: ignore[list-item]
                                          queue_depth=3)]}
    store = SimpleNamespace(client=_Hanging(), ledger_stream="l", open_reservations="r")
    portal = SimpleNamespace(registry=registry, store=store, watch=None)
    started = time.monotonic()
    taken = await readings.take_readings(portal)  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.0
    found = samples(metrics.render(taken).decode())
    assert value(found, "portal_redis_up") == 0
    assert value(found, "portal_database_up") == 0
    assert value(found, "portal_nodes", model="m", state="running") == 1
    assert value(found, "portal_node_queue_depth", node="5", model="m") == 3
    names = {name for name, _ in found}
    for absent in ("portal_ledger_backlog_entries", "portal_jobs", "portal_reservations_open",
                   "portal_balances_micro_dollars", "portal_hot_store_ready"):
        assert absent not in names
