"""The scaler: one decision per model at a time, carried out by the lifecycle actors.

``scale_fleet`` runs on the scheduler's interval. For each model it takes the
model's scaling lock (another run deciding for the same model makes this one pass),
reads what the fleet shows (:func:`observe`), asks :func:`edge.fleet.scaling.plan`
what to do, and sends the one lifecycle actor that does it: ``boot_node``,
``scale_out_model`` or ``drain_node``. Those are idempotent and lock their node, so
a decision carried out twice does no harm; the decision's memory (how long the load
has been over or under the target) lives in Redis between runs.

``replace_node`` answers EC2's spot interruption notice (and its rebalance
recommendation): the node leaves routing at once, a replacement is launched, and the
node is drained in the two minutes EC2 gives before it takes the instance back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from datetime import UTC, datetime

import dramatiq
from redis.exceptions import LockError

from dramatiq_actors.broker import QUEUE_LIFECYCLE, QUEUE_MAINTENANCE
from dramatiq_actors.fleet import hourly_price
from dramatiq_actors.lifecycle import (
    _drain,
    _locked,
    boot_node,
    drain_node,
    launch,
    scale_out_model,
    set_scaling_status,
)
from dramatiq_actors.runtime import runtime
from edge.db.models import LLM, Job, JobStatus, Node, NodeState
from edge.fleet.nodes import busy_node_ids, update_node
from edge.fleet.scaling import Decision, Memory, NodeView, Observation, Policy, plan
from edge.fleet.slots import open_calls, waiting_calls
from edge.store import keys

__all__ = ["observe", "replace_node", "scale_fleet", "scale_model"]

log = logging.getLogger(__name__)

#: Seconds a decision's memory is kept without a new decision (then it starts afresh).
MEMORY_TTL = 3600
#: Seconds EC2 gives between a spot interruption notice and taking the instance.
INTERRUPTION_NOTICE = 120
#: What a decision leaves for the next, each a number of seconds or a time stamp.
_MEMORY_FIELDS = tuple(field.name for field in dataclasses.fields(Memory))


@dramatiq.actor(queue_name=QUEUE_MAINTENANCE, time_limit=120_000, max_retries=0)
async def scale_fleet() -> None:
    """Decide for every model: scale out, scale in, or stop nodes idle past their TTL."""
    for llm in await LLM.all():
        try:
            await scale_model(llm)
        except Exception:  # one model's failure does not hold back the others
            log.exception("scaling %s failed", llm.name)


async def scale_model(llm: LLM) -> Decision | None:
    """Decide for ``llm`` and send what carries the decision out (None: another process
    is deciding for it right now)."""
    rt = runtime()
    lock = rt.store.client.lock(keys.scale_lock(rt.store.ns, llm.name), timeout=60,
                                blocking=False)
    if not await lock.acquire():
        return None
    try:
        seen = await observe(llm)
        memory = await _recall(llm.name)
        decision = plan(Policy.of(llm, rt.settings.idle_ttl), seen, memory, time.time())
        await _carry_out(llm, decision)
        await _remember(llm.name, memory)
        return decision
    finally:
        try:
            await lock.release()
        except LockError:
            pass


async def observe(llm: LLM) -> Observation:
    """What the scaler knows of ``llm``'s fleet now: SQL's nodes, Redis's open calls."""
    store = runtime().store
    nodes = await Node.filter(model=llm).exclude(state=NodeState.TERMINATED)
    opened = await open_calls(store, [node.id for node in nodes])
    busy = await busy_node_ids(store)
    now = datetime.now(UTC)
    stamps = [n.last_used_at for n in nodes] + [
        n.state_changed_at for n in nodes if n.state is NodeState.RUNNING]
    last = max((stamp for stamp in stamps if stamp), default=None)
    return Observation(
        nodes=[NodeView(
            id=n.id, state=str(n.state), healthy=n.healthy,
            booting=n.boot_requested_at is not None, static=n.static, spot=n.spot,
            hourly_cost=n.hourly_cost or hourly_price(n.instance_type, spot=n.spot),
            in_flight=opened[n.id], waiting=n.queue_depth,
            busy=n.id in busy or n.running_requests > 0) for n in nodes],
        waiting_at_edge=await waiting_calls(store, llm.name),
        queued_jobs=await Job.filter(model=llm.name, status=JobStatus.QUEUED).count(),
        idle_for=(now - last).total_seconds() if last else math.inf)


async def _carry_out(llm: LLM, decision: Decision) -> None:
    if decision.action != "hold":
        log.info("scaler, %s: %s", llm.name, decision.reason)
    if decision.action == "boot" and decision.node_id is not None:
        await asyncio.to_thread(boot_node.send, decision.node_id)
    elif decision.action == "launch":
        await asyncio.to_thread(scale_out_model.send, llm.name, decision.spot)
    elif decision.action == "drain" and decision.node_id is not None:
        await asyncio.to_thread(drain_node.send, decision.node_id)
    await set_scaling_status(llm, decision.reason)


async def _recall(model: str) -> Memory:
    store = runtime().store
    raw = await store.client.hgetall(keys.scale_memory(store.ns, model))
    values = {_text(k): float(v) for k, v in raw.items() if v}
    return Memory(**{name: values.get(name) for name in _MEMORY_FIELDS})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _remember(model: str, memory: Memory) -> None:
    store = runtime().store
    key = keys.scale_memory(store.ns, model)
    fields = {name: getattr(memory, name) for name in _MEMORY_FIELDS}
    async with store.client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        for name, value in fields.items():
            if value is not None:
                pipe.hset(key, name, repr(value))
        pipe.expire(key, MEMORY_TTL)
        await pipe.execute()


@dramatiq.actor(queue_name=QUEUE_LIFECYCLE, time_limit=1_800_000, max_retries=3)
async def replace_node(node_id: int, reason: str) -> None:
    """Take a node EC2 is taking back out of routing, launch its replacement, drain it.

    A replacement is launched like the scaler's (the model's plan, spot above its
    floor); a model without a launch plan boots a stopped node instead, if it has one.
    """
    rt = runtime()
    async with _locked(node_id) as node:
        if node is None or node.state in (NodeState.STOPPED, NodeState.TERMINATED):
            return
        if node.state is NodeState.DRAINING and node.note.startswith("interrupted"):
            return  # heard already (EventBridge delivers at least once)
        await update_node(node, rt.store, state=NodeState.DRAINING,
                          note=f"interrupted: {reason}"[:500])
        llm = await LLM.get(id=node.model_id)
        policy = Policy.of(llm, rt.settings.idle_ttl)
        if policy.launch.usable:
            others = await Node.filter(model=llm, state__in=[
                NodeState.RUNNING, NodeState.PENDING]).exclude(id=node.id)
            on_demand = sum(1 for n in others if not n.spot)
            spot = policy.spot and on_demand >= policy.on_demand_floor
            ids = await launch(llm, policy.launch, spot=spot,
                               note=f"replaces node {node.id} ({reason})")
            log.info("node %s interrupted (%s); replacement: %s", node.id, reason, ids)
            for new_id in ids:
                await asyncio.to_thread(boot_node.send, new_id)  # watch it come up
        else:
            stopped = await Node.filter(model=llm, state=NodeState.STOPPED,
                                        instance_id__not_isnull=True).order_by(
                                            "hourly_cost", "id").first()
            if stopped is not None:
                await asyncio.to_thread(boot_node.send, stopped.id)
            else:
                await set_scaling_status(llm, f"node {node.id} interrupted; no launch plan "
                                              "and no stopped node to replace it")
        await _drain(node, INTERRUPTION_NOTICE - 10)

