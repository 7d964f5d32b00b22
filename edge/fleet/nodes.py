"""Node records: state changes, health probes, and telling every worker about them.

Whoever changes a node (an actor, the admin API, the CLI) goes through
:func:`update_node`, which saves only what changed and publishes ``nodes`` so
that every edge worker reloads its routing table within a second.

Every save of a node also keeps its runs (:class:`~edge.db.models.NodeRun`, what GPU cost
is summed from) in line with it, through :func:`track_run`: a node created or saved in a
state of :data:`BILLED_STATES` has one open run, a node in any other state none. That is
a Tortoise ``post_save`` listener on ``Node``, registered when this module is imported,
so a node made by ``Node.create`` (``portal nodes add``, a launch, one found in EC2) or
saved whole counts as well as one changed by :func:`update_node`. A bulk update or
delete sends no signal: :func:`reconcile_runs` repairs what they leave behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
from tortoise.exceptions import IntegrityError
from tortoise.signals import post_save

from edge.db.models import LLM, Node, NodeRun, NodeState
from edge.store.replies import text

if TYPE_CHECKING:
    from edge.store.hotstore import HotStore

__all__ = ["BILLED_STATES", "EC2_STATES", "Probe", "busy_node_ids", "learn_contexts", "node_url",
           "probe_many", "probe_node", "reconcile_runs", "track_run", "update_node"]

log = logging.getLogger(__name__)

#: EC2 instance state → node state.
EC2_STATES = {
    "pending": NodeState.PENDING,
    "running": NodeState.RUNNING,
    "stopping": NodeState.STOPPING,
    "stopped": NodeState.STOPPED,
    "shutting-down": NodeState.TERMINATED,
    "terminated": NodeState.TERMINATED,
}

#: Node states whose time is paid for. EC2 bills an instance while it is ``running``, not
#: while it is ``pending``, ``stopping`` (unless it hibernates, which nodes never do),
#: ``stopped`` or gone; the node is ``running`` from then on, vLLM loading included, and
#: ``draining`` is a running instance finishing its calls. A static node is paid for in
#: the same states: from when it is added as ``running`` until it is marked stopped.
BILLED_STATES = frozenset({NodeState.RUNNING, NodeState.DRAINING})
#: What a run copies from its node: a change of one ends the run and starts the next.
RUN_FIELDS = ("model_id", "instance_type", "spot", "hourly_cost")
#: Fields whose save may change the node's run (``model`` as Tortoise may name it).
_RUN_CHANGES = frozenset({"state", "model", *RUN_FIELDS})


def now() -> datetime:
    return datetime.now(UTC)


async def update_node(node: Node, store: HotStore | None, **changes: Any) -> bool:
    """Apply ``changes`` to ``node``; save and publish when something changed.

    A change of ``state`` also stamps ``state_changed_at``, and opens or closes the
    node's run then (:func:`track_run`). Returns whether anything changed.
    """
    changed = {k: v for k, v in changes.items() if getattr(node, k) != v}
    if not changed:
        return False
    if "state" in changed:
        changed["state_changed_at"] = now()
        log.info("node %s: %s -> %s", node.id, node.state, changed["state"])
    for field, value in changed.items():
        setattr(node, field, value)
    await node.save(update_fields=list(changed))
    if store is not None:
        await store.publish("nodes")
    return True


async def track_run(node: Node, at: datetime) -> None:
    """Give ``node`` the one open run its state and costs call for, as of ``at``.

    An open run that no longer matches the node (it left :data:`BILLED_STATES`, or one of
    :data:`RUN_FIELDS` changed) ends at ``at`` (never before it started); a billed node
    without a matching run gets one starting at ``at``. Two processes opening the same
    node's run at once cannot both succeed: ``open_node_id`` is unique.
    """
    run = await NodeRun.get_or_none(open_node_id=node.id)
    billed = node.state in BILLED_STATES
    if run is not None:
        if billed and all(getattr(run, f) == getattr(node, f) for f in RUN_FIELDS):
            return
        await _close_run(run, at)
    if billed:
        try:
            await NodeRun.create(node_id=node.id, open_node_id=node.id, started_at=at,
                                 **{f: getattr(node, f) for f in RUN_FIELDS})
        except IntegrityError:
            log.info("node %s: its run was opened by another process", node.id)


async def _close_run(run: NodeRun, at: datetime) -> int:
    """End an open run at ``at`` (its start, if ``at`` is earlier); 1 if this closed it."""
    return await NodeRun.filter(id=run.id, open_node_id__not_isnull=True).update(
        ended_at=max(at, run.started_at), open_node_id=None)


@post_save(Node)
async def _node_saved(_sender: type[Node], node: Node, created: bool, _using_db: Any,
                      update_fields: list[str] | None) -> None:
    """Keep the saved node's run in line (a save of other fields changes nothing)."""
    if created:
        await track_run(node, node.created_at)
    elif update_fields is None or _RUN_CHANGES.intersection(update_fields):
        stamped = update_fields is not None and "state_changed_at" in update_fields
        await track_run(node, node.state_changed_at if stamped and node.state_changed_at
                        else now())


async def reconcile_runs(at: datetime) -> int:
    """Repair the runs that saves did not keep: after a bulk update or delete of nodes.

    The open run of a node no longer billed ends when the node's state changed, if that
    was stamped after the run began (and before ``at``), else at ``at``; so does the run of
    a node that is gone. Every billed node then gets :func:`track_run` at ``at``. Returns
    how many runs it ended.
    """
    nodes = {node.id: node for node in await Node.all()}
    ended = 0
    for run in await NodeRun.filter(open_node_id__not_isnull=True):
        node = nodes.get(run.node_id)
        if node is None or node.state not in BILLED_STATES:
            left = node.state_changed_at if node is not None else None
            ended += await _close_run(run, left if left is not None and
                                      run.started_at < left < at else at)
    for node in nodes.values():
        if node.state in BILLED_STATES:
            await track_run(node, at)
    return ended


def node_url(node: Node, private_ip: str, port: int) -> str:
    """The URL a node should have given its (possibly new) private address.

    An operator-given URL that does not point at the instance's old address (a
    load balancer, a tunnel, a test's simnode) is kept as it is.
    """
    if not private_ip:
        return node.url
    if not node.url:
        return f"http://{private_ip}:{port}"
    host = urlparse(node.url).hostname
    if host and host == node.private_ip and host != private_ip:
        return node.url.replace(host, private_ip, 1)
    return node.url


@dataclasses.dataclass(frozen=True)
class Probe:
    ok: bool
    running: int = 0
    waiting: int = 0
    error: str = ""
    context: int = 0  # the max_model_len the node reports for the model, 0 if none


async def probe_node(client: httpx.AsyncClient, node: Node, served_name: str,
                     api_key: str = "") -> Probe:
    """Ask a node if it can serve: ``/health``, ``/v1/models`` lists the model, ``/metrics``."""
    if not node.url:
        return Probe(False, error="no URL")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        health = await client.get(node.url + "/health")
        if health.status_code != 200:
            return Probe(False, error=f"/health answered {health.status_code}")
        models = await client.get(node.url + "/v1/models", headers=headers)
        cards = {m.get("id"): m for m in models.json().get("data", [])} \
            if models.status_code == 200 else {}
        if served_name not in cards:
            return Probe(False, error=f"/v1/models does not list {served_name!r}")
        context = cards[served_name].get("max_model_len")
        running = waiting = 0
        metrics = await client.get(node.url + "/metrics")
        if metrics.status_code == 200:
            running, waiting = _queue_gauges(metrics.text)
        return Probe(True, running=running, waiting=waiting,
                     context=context if type(context) is int and context > 0 else 0)
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return Probe(False, error=f"{type(exc).__name__}: {exc}")


def _queue_gauges(text: str) -> tuple[int, int]:
    """Sum vLLM's running and waiting gauges over their label sets."""
    totals = {"vllm:num_requests_running": 0.0, "vllm:num_requests_waiting": 0.0}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            try:
                totals[name] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                pass
    return int(totals["vllm:num_requests_running"]), int(totals["vllm:num_requests_waiting"])


async def busy_node_ids(store: HotStore) -> set[int]:
    """Nodes that have a request in flight, from the open credit reservations."""
    client = store.client
    request_ids = await client.zrange(store.open_reservations, 0, -1)
    if not request_ids:
        return set()
    async with client.pipeline(transaction=False) as pipe:
        for request_id in request_ids:
            pipe.hget(store.reservation(text(request_id)), "node")
        nodes = await pipe.execute()
    return {int(n) for n in nodes if n}


async def served_name_of(node: Node) -> str:
    model = await LLM.get(id=node.model_id)
    return model.served_name


async def probe_many(nodes: list[Node], api_key: str, timeout: float = 3.0) -> list[Probe]:
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        served = {m.id: m.served_name for m in await LLM.filter(
            id__in={n.model_id for n in nodes})}
        return await asyncio.gather(*(probe_node(client, n, served[n.model_id], api_key)
                                      for n in nodes))


async def learn_contexts(nodes: list[Node], probes: list[Probe]) -> bool:
    """Raise a model's context to the longest its nodes report serving.

    Reservations hold at most the catalogue's context per answer; a node started
    with a longer ``--max-model-len`` could otherwise write past what was held.
    """
    longest: dict[int, int] = {}
    for node, probe in zip(nodes, probes, strict=True):
        if probe.ok and probe.context:
            longest[node.model_id] = max(longest.get(node.model_id, 0), probe.context)
    raised = False
    for model in await LLM.filter(id__in=list(longest)):
        if longest[model.id] > model.context_length:
            log.warning("model %s: a node serves %s tokens of context, the catalogue said %s; "
                        "raised", model.name, longest[model.id], model.context_length)
            await LLM.filter(id=model.id, context_length__lt=longest[model.id]).update(
                context_length=longest[model.id])
            raised = True
    return raised
