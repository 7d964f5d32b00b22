"""How many nodes a model should run: one decision from what its fleet shows now.

:func:`plan` does no I/O. The scaler (:mod:`dramatiq_actors.scaling`) feeds it what
SQL and Redis say and carries out its decision; the fleet simulator
(``bench/fleet.py``) feeds it a simulated day. Both therefore run the same rule:

- **Out.** When the load per node (calls open on the model's nodes, or waiting in
  their queues, plus calls waiting in the edge and queued jobs) stays above the
  target for ``scale_out_after`` seconds, one more node: a stopped one booted, or a
  new one launched (spot above the on-demand floor). A cold model with work, or a
  model under ``min_nodes``, gets one at once. Nodes on their way count as capacity
  already: another is added, a window later, only while the load per node would still
  be over the target with them (a burst that needs four nodes does not wait for three
  boots in a row).
- **In.** When the load would still be under 80 % of the target with one node fewer
  for ``scale_in_after`` seconds, or the model has had no request for its idle
  TTL, the dearest idle node is drained (never one with open calls or queued work,
  never below ``min_nodes``, never below the on-demand floor while spot remains).
- **To zero, sooner.** A model whose quiet spells (the time between its requests, as
  the scaler sees it) have lately lasted more than twice its measured boot time
  stops once it has been quiet for one boot time, without waiting for the idle TTL:
  keeping a node idle for longer than a boot costs more than the boot it saves,
  when the next request is likely that far off. A model called every minute with a
  three-minute boot keeps its node warm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["LOAD_METRICS", "POLICY_FIELDS", "Decision", "LaunchPlan", "Memory", "NodeView",
           "Observation", "Policy", "plan", "policy_changes", "policy_view", "sparse"]

#: What a model's load counts: calls open on its nodes, or calls in their own queues.
LOAD_METRICS = ("in_flight", "waiting")
#: Scaling in waits until the load fits this share of the target on one node fewer,
#: so that the node removed is not booted again at the next burst.
SCALE_IN_HEADROOM = 0.8
#: Seconds after a decision during which no other is taken: the actors carrying it
#: out need a moment before the fleet shows its effect (a node pending or draining).
ACT_GRACE = 20.0
#: A model is sparse, and stops once quiet for its boot time, when its quiet spells
#: last this many boot times (twice: the node it stops is then off, on average, for
#: at least as long as it takes to boot again).
SPARSE_GAPS = 2.0
#: Weight of the newest quiet spell in the model's running mean of them.
QUIET_WEIGHT = 0.3


@dataclasses.dataclass(frozen=True, slots=True)
class LaunchPlan:
    """How the scaler launches a node of a model (``LLM.launch``): instance types and
    subnets in order of preference (a capacity refusal tries the next), and what the
    instance is made of."""

    instance_types: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    image_id: str = ""
    launch_template: str = ""
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""
    disk_gb: int = 0
    region: str = ""

    @property
    def usable(self) -> bool:
        """Whether a node can be launched from it (a type, and an image or a template)."""
        return bool(self.instance_types and (self.image_id or self.launch_template))

    def as_json(self) -> dict[str, Any]:
        return {field.name: list(value) if isinstance(value, tuple) else value
                for field in dataclasses.fields(self)
                if (value := getattr(self, field.name))}

    @classmethod
    def parse(cls, raw: object) -> LaunchPlan:
        """A plan from its JSON (None: none).

        Raises:
          ValueError: a field of the wrong type, or an unknown one; the message names it.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError("'launch' must be an object")
        known = {field.name: field for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in known:
                raise ValueError(f"'launch' has no field '{name}'; it takes "
                                 f"{', '.join(sorted(known))}")
            if name in ("instance_types", "subnets", "security_group_ids"):
                if not isinstance(value, list) or not all(
                        isinstance(item, str) and item and len(item) <= 128 for item in value):
                    raise ValueError(f"'launch.{name}' must be a list of names")
                values[name] = tuple(value)
            elif name == "disk_gb":
                if isinstance(value, bool) or not isinstance(value, int) or \
                        not 0 <= value <= 65_536:
                    raise ValueError("'launch.disk_gb' must be a whole number of GB")
                values[name] = value
            else:
                if not isinstance(value, str) or len(value) > 256:
                    raise ValueError(f"'launch.{name}' must be a string")
                values[name] = value
        return cls(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """A model's scaling policy (its catalogue row's columns)."""

    min_nodes: int = 0
    max_nodes: int = 1
    target_load: float = 8.0
    load_metric: str = "in_flight"
    scale_out_after: float = 30.0
    scale_in_after: float = 300.0
    idle_ttl: float = 1800.0  # seconds without a request before the last nodes go; 0: never
    spot: bool = False
    on_demand_floor: int = 0
    launch: LaunchPlan = LaunchPlan()
    boot_seconds: float = 0.0  # measured (LLM.boot_seconds), not set; 0: not known yet

    @classmethod
    def of(cls, llm: Any, default_idle_ttl: float) -> Policy:
        """The policy of a catalogue row (:class:`edge.db.models.LLM`)."""
        return cls(min_nodes=llm.min_nodes, max_nodes=llm.max_nodes,
                   target_load=llm.target_load, load_metric=llm.load_metric,
                   scale_out_after=llm.scale_out_after, scale_in_after=llm.scale_in_after,
                   idle_ttl=default_idle_ttl if llm.idle_ttl is None else llm.idle_ttl,
                   spot=llm.spot, on_demand_floor=llm.on_demand_floor,
                   launch=LaunchPlan.parse(llm.launch), boot_seconds=llm.boot_seconds or 0.0)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeView:
    """What the scaler knows of one node."""

    id: int
    state: str  # edge.db.models.NodeState's value
    healthy: bool = True
    booting: bool = False  # a boot was asked and the node has not answered yet
    static: bool = False  # the operator's: never booted, stopped or drained by the scaler
    spot: bool = False
    hourly_cost: int = 0  # micro-dollars
    in_flight: int = 0  # calls open on it, over every edge worker
    waiting: int = 0  # vLLM's num_requests_waiting, last read
    busy: bool = False  # an open stream or a running job holds it

    @property
    def up(self) -> bool:
        return self.state in ("running", "pending")

    @property
    def coming(self) -> bool:
        """On its way to serving: capacity already counted, not yet there."""
        return self.state == "pending" or (self.state == "running" and not self.healthy
                                           and self.booting)

    @property
    def idle(self) -> bool:
        return not self.busy and self.in_flight == 0 and self.waiting == 0


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    nodes: Sequence[NodeView]
    waiting_at_edge: int = 0  # calls held in the edge for a slot or a node
    queued_jobs: int = 0
    idle_for: float = math.inf  # seconds since the model's last request or boot


@dataclasses.dataclass(slots=True)
class Memory:
    """What one decision leaves for the next (kept in Redis between scaler runs)."""

    above_since: float | None = None
    below_since: float | None = None
    acted_until: float | None = None  # a decision is being carried out until then
    quiet: float | None = None  # running mean of the model's quiet spells, seconds
    quiet_now: float | None = None  # how long it had been quiet at the last look


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["hold", "boot", "launch", "drain"]
    reason: str
    node_id: int | None = None  # the node booted or drained
    spot: bool = False  # a launch's market


#: The catalogue's policy columns an operator may set, with their types and bounds.
POLICY_FIELDS: dict[str, tuple[type, float, float]] = {
    "min_nodes": (int, 0, 1000), "max_nodes": (int, 0, 1000),
    "target_load": (float, 0.1, 100_000), "scale_out_after": (int, 0, 86_400),
    "scale_in_after": (int, 0, 86_400), "node_slots": (int, 1, 100_000),
    "on_demand_floor": (int, 0, 1000), "idle_ttl": (int, 0, 30 * 86_400),
}


def policy_changes(changes: Mapping[str, Any], current: Policy | None = None) -> dict[str, Any]:
    """The catalogue columns ``changes`` sets (the admin API's body, the CLI's flags),
    checked; ``current`` is the policy they apply to, for the checks across fields.

    ``node_slots`` and ``idle_ttl`` may be None (learnt, or the default).

    Raises:
      ValueError: a field unknown, of the wrong type or out of range; the message says.
    """
    known = (*POLICY_FIELDS, "load_metric", "spot", "launch")
    cleaned: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in known:
            raise ValueError(f"'{name}' is not a scaling setting; they are "
                             f"{', '.join(known)}")
        if name == "load_metric":
            if value not in LOAD_METRICS:
                raise ValueError(f"'load_metric' must be one of {', '.join(LOAD_METRICS)}")
        elif name == "spot":
            if not isinstance(value, bool):
                raise ValueError("'spot' must be true or false")
        elif name == "launch":
            value = LaunchPlan.parse(value).as_json() or None
        elif value is None and name in ("node_slots", "idle_ttl"):
            pass
        else:
            kind, low, high = POLICY_FIELDS[name]
            whole = isinstance(value, int) and not isinstance(value, bool)
            if not (whole or (kind is float and isinstance(value, float))) or \
                    not low <= value <= high or (isinstance(value, float) and
                                                 not math.isfinite(value)):
                what = "number" if kind is float else "whole number"
                raise ValueError(f"'{name}' must be a {what} from {low:g} to {high:g}")
            value = kind(value)
        cleaned[name] = value
    low = cleaned.get("min_nodes", current.min_nodes if current else 0)
    high = cleaned.get("max_nodes", current.max_nodes if current else 1)
    if low > high:
        raise ValueError(f"'min_nodes' ({low}) may not exceed 'max_nodes' ({high})")
    return cleaned


def policy_view(llm: Any) -> dict[str, Any]:
    """A catalogue row's scaling policy, as the admin API and the CLI show it."""
    view = {name: getattr(llm, name) for name in (*POLICY_FIELDS, "load_metric", "spot")}
    return {"model": llm.name, **view, "launch": llm.launch or {},
            "scaling_status": llm.scaling_status}


def demand(policy: Policy, seen: Observation) -> int:
    """The model's load: work on (or in front of) its nodes, per the policy's metric."""
    on_nodes = sum(n.waiting if policy.load_metric == "waiting" else n.in_flight
                   for n in seen.nodes if n.up)
    return on_nodes + seen.waiting_at_edge + seen.queued_jobs


def plan(policy: Policy, seen: Observation, memory: Memory, now: float) -> Decision:
    """The one thing to do for a model now; updates ``memory`` for the next call."""
    _note_quiet(seen, memory)
    if memory.acted_until is not None and now < memory.acted_until:
        return Decision("hold", "carrying out the last decision")
    memory.acted_until = None
    decision = _decide(policy, seen, memory, now)
    if decision.action != "hold":
        memory.acted_until = now + ACT_GRACE
    return decision


def _note_quiet(seen: Observation, memory: Memory) -> None:
    """Fold the quiet spell that ended since the last look (a request came: the model is
    quiet for less time than it was then) into the model's running mean of them.

    The scaler looks every few seconds, so a busy model's spells count as about that
    long; what matters is telling spells of minutes from spells of seconds.
    """
    before, memory.quiet_now = memory.quiet_now, (
        seen.idle_for if math.isfinite(seen.idle_for) else None)
    if before is None or memory.quiet_now is None or memory.quiet_now >= before:
        return
    memory.quiet = before if memory.quiet is None else (
        QUIET_WEIGHT * before + (1 - QUIET_WEIGHT) * memory.quiet)


def sparse(policy: Policy, memory: Memory) -> bool:
    """Does the model go longer between requests than it is worth keeping a node for?"""
    return policy.boot_seconds > 0 and memory.quiet is not None and \
        memory.quiet >= SPARSE_GAPS * policy.boot_seconds


def _decide(policy: Policy, seen: Observation, memory: Memory, now: float) -> Decision:
    active = [n for n in seen.nodes if n.up]
    work = demand(policy, seen)
    if not active and work:
        memory.above_since = memory.below_since = None
        return _scale_out(policy, seen, f"{work} waiting and no node up")
    if len(active) < policy.min_nodes:
        if any(n.coming for n in active):
            return Decision("hold", "a node is on its way")
        return _scale_out(policy, seen, f"{len(active)} up, min_nodes is {policy.min_nodes}")
    per_node = work / max(1, len(active))
    if per_node > policy.target_load:
        memory.below_since = None
        if memory.above_since is None:
            memory.above_since = now
        since = memory.above_since
        if len(active) >= policy.max_nodes:
            return Decision("hold", f"load {per_node:.1f} per node over the target "
                                    f"{policy.target_load:g}, at max_nodes {policy.max_nodes}")
        if now - since < policy.scale_out_after:
            return Decision("hold", f"load {per_node:.1f} per node over the target for "
                                    f"{now - since:.0f} of {policy.scale_out_after:g} s")
        memory.above_since = None
        return _scale_out(policy, seen, f"load {per_node:.1f} per node over the target "
                                        f"{policy.target_load:g} for {now - since:.0f} s")
    memory.above_since = None
    running = [n for n in active if n.state == "running" and not n.static]
    if len(active) <= policy.min_nodes or not running:
        memory.below_since = None
        return Decision("hold", "at min_nodes")
    if work == 0 and policy.idle_ttl > 0 and seen.idle_for >= policy.idle_ttl:
        memory.below_since = None
        return _scale_in(policy, active, f"no request for {seen.idle_for:.0f} s")
    if work == 0 and policy.idle_ttl > 0 and sparse(policy, memory) and \
            seen.idle_for >= policy.boot_seconds:
        memory.below_since = None
        return _scale_in(policy, active, f"no request for {seen.idle_for:.0f} s, and its "
                                         f"quiet spells last about {memory.quiet:.0f} s, "
                                         f"more than twice its boot of "
                                         f"{policy.boot_seconds:.0f} s")
    fits = len(active) > 1 and work <= SCALE_IN_HEADROOM * policy.target_load * (
        len(active) - 1)
    if not fits:
        memory.below_since = None
        return Decision("hold", f"load {per_node:.1f} per node")
    if memory.below_since is None:
        memory.below_since = now
    since = memory.below_since
    if now - since < policy.scale_in_after:
        return Decision("hold", f"load fits one node fewer for {now - since:.0f} of "
                                f"{policy.scale_in_after:g} s")
    memory.below_since = None
    return _scale_in(policy, active, f"load {work} fits {len(active) - 1} nodes for "
                                     f"{now - since:.0f} s")


def _scale_out(policy: Policy, seen: Observation, why: str) -> Decision:
    up = [n for n in seen.nodes if n.up]
    if len(up) >= policy.max_nodes:
        return Decision("hold", f"{why}; at max_nodes {policy.max_nodes}")
    stopped = [n for n in seen.nodes if n.state == "stopped" and not n.static]
    if stopped:
        cheapest = min(stopped, key=lambda n: (n.hourly_cost, n.id))
        return Decision("boot", f"{why}: booting node {cheapest.id}", node_id=cheapest.id)
    if not policy.launch.usable:
        return Decision("hold", f"{why}; no stopped node to boot, and the model has no "
                                "launch plan (instance types and an image or a template)")
    on_demand = sum(1 for n in up if not n.spot)
    spot = policy.spot and on_demand >= policy.on_demand_floor
    market = "spot" if spot else "on-demand"
    return Decision("launch", f"{why}: launching a {market} node", spot=spot)


def _scale_in(policy: Policy, active: list[NodeView], why: str) -> Decision:
    """Drain the dearest idle node, keeping the on-demand floor while there is spot."""
    on_demand = sum(1 for n in active if not n.spot)
    floor = min(policy.on_demand_floor, len(active) - 1)
    victims = [n for n in active if n.state == "running" and not n.static and n.idle
               and (n.spot or on_demand - 1 >= floor)]
    if not victims:
        return Decision("hold", f"{why}, but every node has work")
    victim = max(victims, key=lambda n: (n.hourly_cost, n.id))
    return Decision("drain", f"{why}: draining node {victim.id}", node_id=victim.id)
