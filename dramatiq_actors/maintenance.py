"""Periodic actors: keep node rows true to EC2, check their health.

Scaling, stopping idle nodes included, is :mod:`dramatiq_actors.scaling`'s.

The scheduler (``portal scheduler``) enqueues them on an interval; each is
idempotent and bounded, so overlapping or repeated runs are harmless.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import dramatiq

from dramatiq_actors.broker import QUEUE_MAINTENANCE
from dramatiq_actors.fleet import Instance, aws_configured, hourly_price
from dramatiq_actors.lifecycle import fleet
from dramatiq_actors.runtime import runtime
from edge.db.models import LLM, Node, NodeState
from edge.fleet.nodes import (
    EC2_STATES,
    learn_contexts,
    node_url,
    probe_many,
    update_node,
)

__all__ = ["check_health", "sync_nodes"]

log = logging.getLogger(__name__)

#: Dramatiq's retry options of these actors (backoffs in milliseconds).
RETRIES: dict[str, Any] = dict(max_retries=3, min_backoff=2_000, max_backoff=20_000)


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, time_limit=300_000, **RETRIES)
async def sync_nodes() -> None:
    """Bring node rows in line with EC2: states, addresses, new and vanished instances."""
    await sync()


async def sync() -> dict[str, int]:
    rt = runtime()
    if not await asyncio.to_thread(aws_configured) and not await Node.filter(
            instance_id__not_isnull=True).exists():
        return {}  # no AWS here (development, static nodes only): nothing to sync
    instances = await asyncio.to_thread(lambda: list(fleet().instances()))
    seen: set[str] = set()
    counts = {"registered": 0, "updated": 0, "terminated": 0}
    models = {m.name: m for m in await LLM.all()}
    for instance in instances:
        seen.add(instance.id)
        node = await Node.get_or_none(instance_id=instance.id)
        if node is None:
            node = await _register(instance, models, rt.settings.node_port)
            counts["registered"] += node is not None
            continue
        if await update_node(node, None, **_wanted(node, instance, rt.settings.node_port)):
            counts["updated"] += 1
    regions = set(rt.settings.regions)
    gone = Node.filter(instance_id__not_isnull=True, region__in=regions).exclude(
        state=NodeState.TERMINATED)
    for node in await gone:
        if node.instance_id not in seen:
            await update_node(node, None, state=NodeState.TERMINATED, healthy=False)
            counts["terminated"] += 1
    if any(counts.values()):
        await rt.store.publish("nodes")
    if any(counts.values()):
        log.info("sync_nodes: %s", counts)
    return counts


def _wanted(node: Node, instance: Instance, port: int) -> dict[str, object]:
    state = EC2_STATES.get(instance.state, NodeState.STOPPED)
    wanted: dict[str, object] = {"private_ip": instance.private_ip,
                                 "public_ip": instance.public_ip,
                                 "url": node_url(node, instance.private_ip, port),
                                 "region": instance.region,
                                 "instance_type": instance.instance_type}
    if not node.hourly_cost:
        wanted["hourly_cost"] = hourly_price(instance.instance_type)
    if node.state is NodeState.DRAINING and state is NodeState.RUNNING:
        return wanted  # draining is ours to end
    if node.state is NodeState.PENDING and state is NodeState.RUNNING:
        state = NodeState.RUNNING  # up, but healthy only once vLLM answers
    wanted["state"] = state
    if state is not NodeState.RUNNING:
        wanted["healthy"] = False
    return wanted


async def _register(instance: Instance, models: dict[str, LLM], port: int) -> Node | None:
    model = models.get(instance.model)
    if model is None:
        log.warning("instance %s serves unknown model %r; not registered", instance.id,
                    instance.model)
        return None
    if instance.state in ("terminated", "shutting-down"):
        return None
    log.info("registering instance %s found in EC2 for %s", instance.id, model.name)
    return await Node.create(
        model=model, instance_id=instance.id, region=instance.region,
        instance_type=instance.instance_type,
        state=EC2_STATES.get(instance.state, NodeState.STOPPED), healthy=False,
        private_ip=instance.private_ip, public_ip=instance.public_ip,
        url=f"http://{instance.private_ip}:{port}" if instance.private_ip else "",
        hourly_cost=hourly_price(instance.instance_type))


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, time_limit=120_000, **RETRIES)
async def check_health() -> None:
    """Probe running nodes; unhealthy ones leave routing, recovered ones return."""
    await probe_running()


async def probe_running() -> dict[str, int]:
    rt = runtime()
    nodes = await Node.filter(state__in=[NodeState.RUNNING, NodeState.DRAINING])
    if not nodes:
        return {"healthy": 0, "unhealthy": 0}
    probes = await probe_many(nodes, rt.settings.node_api_key)
    threshold = rt.settings.health_fail_threshold
    changed = False
    healthy = 0
    stamp = datetime.now(UTC)
    for node, probe in zip(nodes, probes, strict=True):
        if probe.ok:
            healthy += 1
            # A queue beside a full batch tells the batch's size: what admission control
            # lets onto the node when its model sets no node_slots.
            learned = {"learned_slots": probe.running} \
                if probe.waiting > 0 and probe.running > 0 else {}
            changed |= await update_node(node, None, healthy=True, health_failures=0,
                                         queue_depth=probe.waiting,
                                         running_requests=probe.running, **learned)
        else:
            failures = node.health_failures + 1
            still = node.healthy and failures < threshold
            if node.healthy and not still:
                log.warning("node %s is unhealthy: %s", node.id, probe.error)
            changed |= await update_node(node, None, healthy=still, health_failures=failures)
        node.last_health_at = stamp
        await node.save(update_fields=["last_health_at"])
    if changed:
        await rt.store.publish("nodes")
    if await learn_contexts(nodes, probes):
        await rt.store.publish("models")
    return {"healthy": healthy, "unhealthy": len(nodes) - healthy}
