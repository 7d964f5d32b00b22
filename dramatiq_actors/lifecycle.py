"""Node lifecycle actors: launch, boot, stop, reboot, terminate, drain, boot a model.

Each actor reads the node's current state first and does only what is still
missing, so running it twice, or after a crash half-way, is harmless; what a
crash leaves behind is corrected by the next ``sync_nodes``. Booting watches the
node until it answers ``/health`` (every half second) so that requests waiting
for it go as soon as it can serve, and records how long the model takes to boot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import dramatiq
from redis.exceptions import LockError

from dramatiq_actors.broker import QUEUE_LIFECYCLE
from dramatiq_actors.fleet import FleetError, Instance, LaunchSpec, fleet_for, hourly_price
from dramatiq_actors.runtime import runtime
from edge.db.models import LLM, Node, NodeState
from edge.fleet.nodes import EC2_STATES, busy_node_ids, learn_contexts, probe_many, update_node
from edge.fleet.scaling import LaunchPlan
from edge.store import keys

__all__ = ["boot_model", "boot_node", "drain_node", "launch", "launch_node", "reboot_node",
           "scale_out_model", "set_scaling_status", "stop_node", "terminate_node"]

log = logging.getLogger(__name__)

#: Seconds between two looks at a booting instance in EC2.
EC2_POLL = 1.0
#: Seconds between two health probes of a booting node.
HEALTH_POLL = 0.25
#: Retries of a lifecycle actor (each with exponential backoff).
RETRIES: dict[str, Any] = dict(max_retries=5, min_backoff=1_000, max_backoff=30_000)


def fleet():
    settings = runtime().settings
    return fleet_for(tuple(settings.regions), settings.ec2_attempts)


def boot_lock(model: str) -> str:
    """The key of a boot request of ``model`` (:mod:`edge.fleet.boots`)."""
    return keys.boot_request(runtime().store.ns, model)


def _region(node: Node) -> str:
    return node.region or runtime().settings.regions[0]


@contextlib.asynccontextmanager
async def _locked(node_id: int) -> AsyncIterator[Node | None]:
    """One action at a time on a node, whatever worker runs it; yields the node, fresh.

    Without it a reboot still watching its node could mark it running again just
    after a stop took it down.
    """
    rt = runtime()
    hold = max(rt.settings.boot_timeout, rt.settings.upstream_timeout) + 600
    lock = rt.store.client.lock(keys.node_lock(rt.store.ns, node_id), timeout=hold,
                                blocking_timeout=rt.settings.boot_timeout + 60)
    if not await lock.acquire():
        raise TimeoutError(f"node {node_id} is busy with another action")
    try:
        yield await _node(node_id)
    finally:
        with contextlib.suppress(LockError):
            await lock.release()


async def _node(node_id: int) -> Node | None:
    return await Node.get_or_none(id=node_id)


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=3_600_000, **RETRIES)
async def launch_node(model: str, instance_type: str, *, region: str = "", image_id: str = "",
                      launch_template: str = "", subnet_id: str = "",
                      security_group_ids: list[str] | None = None, key_name: str = "",
                      disk_gb: int = 0, count: int = 1, spot: bool = False) -> None:
    """Run new instances for ``model`` and register them as nodes (an operator's launch)."""
    llm = await LLM.get(name=model)
    plan = LaunchPlan(instance_types=(instance_type,), subnets=(subnet_id,) if subnet_id
                      else (), image_id=image_id, launch_template=launch_template,
                      security_group_ids=tuple(security_group_ids or ()), key_name=key_name,
                      disk_gb=disk_gb, region=region)
    ids = await launch(llm, plan, spot=spot, count=count)
    await asyncio.gather(*(_watch_boot(node_id) for node_id in ids))


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=3_600_000, max_retries=0)
async def scale_out_model(model: str, spot: bool = False) -> None:
    """Launch one more node of ``model`` from its launch plan (the scaler's decision).

    Not retried: a launch EC2 refused everywhere is the next decision's to try again.
    """
    llm = await LLM.get_or_none(name=model)
    if llm is None:
        return
    ids = await launch(llm, LaunchPlan.parse(llm.launch), spot=spot)
    await asyncio.gather(*(_watch_boot(node_id) for node_id in ids))


async def launch(llm: LLM, plan: LaunchPlan, *, spot: bool = False, count: int = 1,
                 note: str = "") -> list[int]:
    """Run ``count`` instances of ``llm`` from the first instance type and subnet of
    ``plan`` that EC2 has capacity for (spot first when asked, then on-demand), and
    register them as pending nodes; their ids ([] when EC2 refused them all, which the
    model's ``scaling_status`` then says).

    Raises:
      FleetError: EC2 failed for another reason than capacity or quota.
    """
    rt = runtime()
    region = plan.region or rt.settings.regions[0]
    refusals: list[str] = []
    for market in ((True, False) if spot else (False,)):
        for instance_type in plan.instance_types:
            for subnet in plan.subnets or ("",):
                where = instance_type + (f" in {subnet}" if subnet else "") + \
                    (" (spot)" if market else "")
                existing = await Node.filter(model=llm).count()
                spec = LaunchSpec(
                    model=llm.name, instance_type=instance_type, region=region,
                    image_id=plan.image_id, launch_template=plan.launch_template,
                    subnet_id=subnet, security_group_ids=plan.security_group_ids,
                    key_name=plan.key_name, disk_gb=plan.disk_gb, spot=market,
                    name=f"{rt.settings.node_name_prefix}-{llm.name}-{existing + 1}")
                try:
                    instances = await asyncio.to_thread(fleet().launch, spec, count)
                except FleetError as exc:
                    if not exc.capacity:
                        raise
                    log.warning("EC2 refused %s for %s: %s", where, llm.name, exc.code)
                    refusals.append(f"{where}: {exc.code}")
                    continue
                said = "; ".join(filter(None, [note, f"launched as {where}" + (
                    f" after {'; '.join(refusals)}" if refusals else "")]))
                ids = [await _register_launched(llm, instance, spec, said)
                       for instance in instances]
                await set_scaling_status(llm, said)
                await rt.store.publish("nodes")
                return ids
    await set_scaling_status(llm, "no capacity: " + "; ".join(refusals) if refusals
                             else "no instance type to launch")
    log.error("no node launched for %s: %s", llm.name, "; ".join(refusals))
    return []


async def _register_launched(llm: LLM, instance: Instance, spec: LaunchSpec,
                             note: str) -> int:
    rt = runtime()
    node = await Node.create(
        model=llm, instance_id=instance.id, region=spec.region,
        instance_type=spec.instance_type,
        state=EC2_STATES.get(instance.state, NodeState.PENDING), healthy=False,
        private_ip=instance.private_ip, public_ip=instance.public_ip,
        url=f"http://{instance.private_ip}:{rt.settings.node_port}"
        if instance.private_ip else "", spot=spec.spot, note=note,
        hourly_cost=hourly_price(spec.instance_type, spot=spec.spot),
        boot_requested_at=datetime.now(UTC))
    log.info("launched %s for %s as node %s (%s)", instance.id, llm.name, node.id, note)
    return node.id


async def set_scaling_status(llm: LLM, status: str) -> None:
    """Say what the scaler (or a launch) last did or could not do for ``llm``."""
    status = status[:500]
    if llm.scaling_status != status:
        llm.scaling_status = status
        await llm.save(update_fields=["scaling_status"])


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=3_600_000, **RETRIES)
async def boot_node(node_id: int) -> None:
    """Start a stopped node and watch it until it serves."""
    async with _locked(node_id) as node:
        if node is not None:
            await _boot(node)


async def _boot(node: Node) -> None:
    store = runtime().store
    if node.state is NodeState.TERMINATED:
        log.warning("node %s is terminated; launch a new one instead", node.id)
        return
    if node.static:
        # Nothing to start: an operator runs it. Back in service once it answers.
        if node.state is not NodeState.RUNNING or not node.healthy:
            await update_node(node, store, state=NodeState.RUNNING, healthy=False,
                              health_failures=0, boot_requested_at=datetime.now(UTC))
            await _watch_boot(node.id)
        return
    if node.state is NodeState.RUNNING and node.healthy:
        return
    if node.state in (NodeState.STOPPED, NodeState.STOPPING, NodeState.DRAINING):
        if node.state is NodeState.STOPPING:
            await _wait_ec2(node, "stopped")  # EC2 refuses to start a stopping instance
        await asyncio.to_thread(fleet().start, _region(node), node.instance_id)
        await update_node(node, store, state=NodeState.PENDING, healthy=False,
                          health_failures=0, boot_requested_at=datetime.now(UTC))
    elif node.boot_requested_at is None:
        await update_node(node, store, boot_requested_at=datetime.now(UTC))
    await _watch_boot(node.id)


async def _wait_ec2(node: Node, wanted: str, timeout: float = 300.0) -> str:
    """Poll EC2 until the instance reaches ``wanted`` (or a final state); returns its state."""
    deadline = time.monotonic() + timeout
    while True:
        instance = await asyncio.to_thread(fleet().describe, _region(node), node.instance_id)
        state = instance.state if instance else "terminated"
        if state in (wanted, "terminated") or time.monotonic() > deadline:
            return state
        await asyncio.sleep(EC2_POLL)


async def _watch_boot(node_id: int) -> None:
    """From pending to serving: mark running when EC2 says so, healthy when vLLM answers."""
    rt = runtime()
    node = await _node(node_id)
    if node is None:
        return
    deadline = time.monotonic() + rt.settings.boot_timeout
    if not node.static:
        state = await _wait_ec2(node, "running", timeout=rt.settings.boot_timeout)
        instance = await asyncio.to_thread(fleet().describe, _region(node), node.instance_id)
        if state != "running" or instance is None:
            await update_node(node, rt.store, state=EC2_STATES.get(state, NodeState.STOPPED),
                              healthy=False)
            raise FleetError(f"node {node.id} did not reach running (it is {state})")
        from edge.fleet.nodes import node_url

        await update_node(node, rt.store, state=NodeState.RUNNING,
                          private_ip=instance.private_ip, public_ip=instance.public_ip,
                          url=node_url(node, instance.private_ip, rt.settings.node_port))
    while time.monotonic() < deadline:
        await node.refresh_from_db()
        if node.state is not NodeState.RUNNING:
            return  # stopped or drained meanwhile
        (probe,) = await probe_many([node], rt.settings.node_api_key, timeout=2.0)
        if probe.ok:
            await _record_boot(node)
            if await learn_contexts([node], [probe]):  # before it takes requests
                await rt.store.publish("models")
            await update_node(node, rt.store, healthy=True, health_failures=0,
                              queue_depth=probe.waiting, running_requests=probe.running)
            await rt.store.client.delete(boot_lock((await LLM.get(id=node.model_id)).name))
            return
        await asyncio.sleep(HEALTH_POLL)
    log.error("node %s did not become healthy within %ss", node.id, rt.settings.boot_timeout)
    raise TimeoutError(f"node {node.id} did not become healthy in time")


async def _record_boot(node: Node) -> None:
    """Keep a moving average of the model's boot time, for Retry-After."""
    if node.boot_requested_at is None:
        return
    seconds = (datetime.now(UTC) - node.boot_requested_at).total_seconds()
    llm = await LLM.get(id=node.model_id)
    llm.boot_seconds = seconds if llm.boot_seconds is None \
        else 0.7 * llm.boot_seconds + 0.3 * seconds
    await llm.save(update_fields=["boot_seconds"])
    await update_node(node, None, boot_requested_at=None)
    log.info("node %s booted in %.1fs", node.id, seconds)


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=600_000, **RETRIES)
async def stop_node(node_id: int) -> None:
    """Stop a node's instance; it leaves routing at once."""
    async with _locked(node_id) as node:
        if node is not None:
            await _stop(node)


async def _stop(node: Node) -> None:
    store = runtime().store
    if node.state in (NodeState.STOPPED, NodeState.TERMINATED):
        return
    if node.static:
        await update_node(node, store, state=NodeState.STOPPED, healthy=False)
        return
    if node.spot:  # a one-time spot instance cannot stop: it goes for good
        await asyncio.to_thread(fleet().terminate, _region(node), node.instance_id)
        await update_node(node, store, state=NodeState.TERMINATED, healthy=False)
        return
    await update_node(node, store, state=NodeState.STOPPING, healthy=False)
    await asyncio.to_thread(fleet().stop, _region(node), node.instance_id)
    state = await _wait_ec2(node, "stopped")
    await update_node(node, store, state=EC2_STATES.get(state, NodeState.STOPPING))


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=1_800_000, **RETRIES)
async def reboot_node(node_id: int) -> None:
    """Reboot a node's instance and watch it until it serves again."""
    async with _locked(node_id) as node:
        if node is None or node.state is not NodeState.RUNNING:
            return
        store = runtime().store
        if not node.static:
            await asyncio.to_thread(fleet().reboot, _region(node), node.instance_id)
        await update_node(node, store, healthy=False, health_failures=0,
                          boot_requested_at=datetime.now(UTC))
        await asyncio.sleep(HEALTH_POLL)
        await _watch_boot(node.id)


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=600_000, **RETRIES)
async def terminate_node(node_id: int) -> None:
    """Terminate a node's instance (for good)."""
    async with _locked(node_id) as node:
        if node is None or node.state is NodeState.TERMINATED:
            return
        if not node.static:
            await asyncio.to_thread(fleet().terminate, _region(node), node.instance_id)
        await update_node(node, runtime().store, state=NodeState.TERMINATED, healthy=False)


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=7_200_000, **RETRIES)
async def drain_node(node_id: int, timeout: float = 0) -> None:
    """Take a node out of routing, wait for its requests to finish, then stop it."""
    async with _locked(node_id) as node:
        await _drain(node, timeout)


async def _drain(node: Node | None, timeout: float) -> None:
    rt = runtime()
    if node is None or node.state in (NodeState.STOPPED, NodeState.TERMINATED):
        return
    await update_node(node, rt.store, state=NodeState.DRAINING)
    deadline = time.monotonic() + (timeout or rt.settings.upstream_timeout + 60)
    while time.monotonic() < deadline:
        busy = node.id in await busy_node_ids(rt.store)
        (probe,) = await probe_many([node], rt.settings.node_api_key)
        if not busy and (not probe.ok or probe.running + probe.waiting == 0):
            break
        await asyncio.sleep(1.0)
    await node.refresh_from_db()
    if node.state is NodeState.DRAINING:
        await _stop(node)


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=3_600_000, **RETRIES)
async def boot_model(model: str) -> None:
    """Boot the cheapest stopped node of ``model``, unless one is up or on its way.

    A burst of requests for a cold model enqueues this many times (the edge
    deduplicates, and so does this check): one node boots, not fifty.
    """
    rt = runtime()
    llm = await LLM.get_or_none(name=model)
    if llm is None:
        return
    nodes = await Node.filter(model=llm).exclude(state=NodeState.TERMINATED)
    if any(n.state is NodeState.RUNNING and n.healthy for n in nodes):
        await rt.store.client.delete(boot_lock(model))
        return
    if any(n.state in (NodeState.RUNNING, NodeState.PENDING) for n in nodes):
        booting = [n for n in nodes if n.state is NodeState.PENDING or
                   (n.state is NodeState.RUNNING and not n.healthy)]
        for node in booting:  # make sure someone watches it
            await _watch_boot(node.id)
        return
    # Static nodes are the operator's: one they stopped stays stopped until they boot it.
    stopped = [n for n in nodes if n.state is NodeState.STOPPED and not n.static]
    if not stopped:
        log.warning("model %s has no stopped node to boot", model)
        await rt.store.client.delete(boot_lock(model))
        return
    cheapest = min(stopped, key=lambda n: (n.hourly_cost or hourly_price(n.instance_type), n.id))
    log.info("booting node %s for model %s", cheapest.id, model)
    try:
        async with _locked(cheapest.id) as locked:
            if locked is not None:
                await _boot(locked)
    except Exception:
        await rt.store.client.delete(boot_lock(model))
        raise
