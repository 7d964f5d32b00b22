"""Models and their nodes, held in each process's memory for routing.

Loaded from SQL at start-up, reloaded when a ``models`` or ``nodes`` event
arrives over pub/sub and, as a safety net, every few seconds. Choosing a node
is a loop over a short list: no I/O on the request path. Every caller of a node
(API, chat, jobs) picks through :meth:`Registry.pick` and counts its open calls
with :meth:`Registry.acquire` and :meth:`Registry.release`: one load formula,
one place that knows what a node is busy with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable

from edge import metrics

__all__ = ["ModelInfo", "NodeInfo", "Registry", "keep_for"]

#: Seconds a node that refused a call is skipped by this process.
PASSIVE_DOWN_SECONDS = 5.0


@dataclasses.dataclass(slots=True)
class ModelInfo:
    id: int
    name: str
    served_name: str
    input_price: int  # micro-dollars per 1M tokens
    output_price: int
    context_length: int
    enabled: bool
    boot_seconds: float | None
    created: int  # Unix seconds
    kind: str = "generate"  # what its nodes serve (edge.db.models.ModelKind)
    node_slots: int | None = None  # calls a node takes at once (None: learnt or default)


@dataclasses.dataclass(slots=True)
class NodeInfo:
    id: int
    model_id: int
    url: str
    state: str
    healthy: bool
    queue_depth: int = 0
    in_flight: int = 0  # requests this worker has open on the node
    down_until: float = 0.0  # monotonic time until which this worker skips it
    static: bool = False  # no EC2 instance: the portal never boots it on demand
    slots: int = 256  # calls it takes at once, over every worker (admission control)
    #: Open calls under which it keeps serving the prefixes it holds, however lightly
    #: the model's other nodes are loaded: the model's target load per node (0: only
    #: the bounded-load rule of ``take_slot.lua`` decides).
    keep: int = 0

    @property
    def routable(self) -> bool:
        return self.state == "running" and self.healthy and self.down_until <= time.monotonic()


class Registry:
    """The routing table of one worker."""

    def __init__(self, default_slots: int = 256) -> None:
        self.default_slots = default_slots  # a node's slots when nothing else says
        self.models: dict[str, ModelInfo] = {}
        self.nodes: dict[int, list[NodeInfo]] = {}
        self._reloaded = asyncio.Event()  # set, and replaced, by each reload

    async def wait_routable(self, model: ModelInfo, seconds: float) -> NodeInfo | None:
        """The node :meth:`pick` gives once one of ``model`` is routable, waiting up to
        ``seconds`` (None when none came up). Woken by each reload, and every second
        for a node whose cool-down ends."""
        deadline = time.monotonic() + seconds
        while (node := self.pick(model)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self._reloaded.wait(), min(left, 1.0))
            except TimeoutError:
                pass
        return node

    def model(self, name: str) -> ModelInfo | None:
        info = self.models.get(name)
        return info if info is not None and info.enabled else None

    def pick(self, model: ModelInfo, exclude: Iterable[int] = ()) -> NodeInfo | None:
        """The routable node of ``model`` with the least work, or None."""
        best: NodeInfo | None = None
        best_load = 0
        for node in self.nodes.get(model.id, ()):
            if not node.routable or node.id in exclude:
                continue
            load = node.in_flight + node.queue_depth
            if best is None or load < best_load:
                best, best_load = node, load
        return best

    def ranked(self, model: ModelInfo, exclude: Iterable[int] = ()) -> list[NodeInfo]:
        """The routable nodes of ``model``, the least loaded (here) first; which of them a
        call goes to is :class:`edge.fleet.slots.Slots`' choice."""
        nodes = [node for node in self.nodes.get(model.id, ())
                 if node.routable and node.id not in exclude]
        if len(nodes) > 1:
            nodes.sort(key=_load)
        return nodes

    def cooling(self, model: ModelInfo) -> float:
        """Seconds until a running node of ``model`` that refused a call is tried again
        (0: none is cooling down)."""
        now = time.monotonic()
        waits = [node.down_until - now for node in self.nodes.get(model.id, ())
                 if node.state == "running" and node.healthy and node.down_until > now]
        return min(waits, default=0.0)

    def scaling_out(self, model: ModelInfo) -> bool:
        """Is a node of ``model`` on its way (launched or booting, not serving yet)?"""
        return any(node.state == "pending" for node in self.nodes.get(model.id, ()))

    def can_boot(self, model: ModelInfo) -> bool:
        """Will a node of ``model`` come up without an operator: one booting or bootable?"""
        return any(node.state in ("pending", "running") or
                   (node.state == "stopped" and not node.static)
                   for node in self.nodes.get(model.id, ()))

    def node_states(self, model: ModelInfo) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes.get(model.id, ()):
            state = node.state
            if state == "running" and not node.healthy:
                state = "unhealthy"
            counts[state] = counts.get(state, 0) + 1
        return counts

    def mark_down(self, node: NodeInfo, seconds: float = PASSIVE_DOWN_SECONDS) -> None:
        """Skip ``node`` here for ``seconds``: it refused or failed a call."""
        node.down_until = max(node.down_until, time.monotonic() + seconds)

    @staticmethod
    def acquire(node: NodeInfo) -> None:
        """Count a call opened on ``node`` (its load, and the in-flight gauge)."""
        node.in_flight += 1
        metrics.INFLIGHT.labels(str(node.id)).inc()

    @staticmethod
    def release(node: NodeInfo) -> None:
        """Count a call on ``node`` closed; once per :meth:`acquire`."""
        node.in_flight -= 1
        metrics.INFLIGHT.labels(str(node.id)).dec()

    async def reload(self) -> None:
        """Replace the table with SQL's, keeping this worker's in-flight counters."""
        from edge.db.models import LLM, Node

        rows = await LLM.all()
        models = {
            row.name: ModelInfo(
                id=row.id, name=row.name, served_name=row.served_name,
                input_price=row.input_price, output_price=row.output_price,
                context_length=row.context_length, enabled=row.enabled,
                boot_seconds=row.boot_seconds, created=int(row.created_at.timestamp()),
                kind=str(row.kind), node_slots=row.node_slots)
            for row in rows
        }
        slots_of = {model.id: model.node_slots for model in models.values()}
        keep_of = {row.id: keep_for(row.target_load, row.load_metric) for row in rows}
        previous = {node.id: node for nodes in self.nodes.values() for node in nodes}
        nodes: dict[int, list[NodeInfo]] = {}
        for row in await Node.all():
            old = previous.get(row.id)
            info = NodeInfo(id=row.id, model_id=row.model_id, url=row.url.rstrip("/"),
                            state=str(row.state), healthy=row.healthy,
                            queue_depth=row.queue_depth, static=row.static,
                            slots=slots_of.get(row.model_id) or row.learned_slots
                            or self.default_slots, keep=keep_of.get(row.model_id, 0),
                            in_flight=old.in_flight if old else 0,
                            down_until=old.down_until if old else 0.0)
            if old is not None:
                old.url, old.state, old.healthy = info.url, info.state, info.healthy
                old.queue_depth, old.slots, old.keep = info.queue_depth, info.slots, info.keep
                info = old  # keep the object: open requests hold a reference to it
            nodes.setdefault(row.model_id, []).append(info)
        self.models = models
        self.nodes = nodes
        reloaded, self._reloaded = self._reloaded, asyncio.Event()
        reloaded.set()


def keep_for(target_load: float, load_metric: str) -> int:
    """:attr:`NodeInfo.keep` of a model's nodes: its target load per node when that
    counts open calls (a node under it is not overloaded by the policy's own measure,
    so a conversation need not leave it for a node added since); 0 when the target
    counts vLLM's queue instead."""
    return int(target_load) if load_metric == "in_flight" else 0


def _load(node: NodeInfo) -> int:
    return node.in_flight + node.queue_depth
