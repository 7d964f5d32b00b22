"""A day of traffic on a simulated fleet: what each scaling policy costs and serves.

    python bench/fleet.py [--short] [--seed 7] [--boot 180] [--hours 24]
                          [--idle-ttl 300] [--scale-in-after 120] [--target-load 6]

Replays a seeded day (a diurnal curve with bursts; three models of different
popularity; chat rooms whose histories grow turn by turn, and one-off API calls) on
an accelerated clock, against the portal's own scheduling code:

- the scaling rule, :func:`edge.fleet.scaling.plan`, every 15 simulated seconds per
  model, on what the scaler would observe (open calls from the slots in Redis, calls
  waiting in the edge, the time since the model's last request);
- admission and routing, :class:`edge.fleet.slots.Slots` (``take_slot.lua`` on a
  real Redis: slots per node, cache-affine routing with bounded loads) over
  :meth:`edge.fleet.registry.Registry.ranked`;
- EC2 through :class:`dramatiq_actors.fleet.Fleet` (boto3) against moto, each boot or
  launch taking ``--boot`` simulated seconds before the node serves.

Nodes are simulated: ``SLOTS`` calls at once, a prefill of the prompt's uncached
tokens at ``PREFILL`` tokens/s (an LRU of the conversations whose prefix it holds),
then ``DECODE`` tokens/s. A call finding its model's nodes full waits in the edge up
to ``ADMISSION_WAIT`` s, or up to ``COLD_WAIT`` s for a node of a cold model (a
client sending ``X-Portal-Wait``); then it is refused.

Printed per policy, one row each: node-hours billed (on-demand, spot); idle
GPU-hours as a share of node-hours, idle being a node up and able to serve (running
or draining) with no call running on it (a node running one call is not idle); the
booting share beside it (billed from the boot or launch until it serves: not idle,
since it cannot serve yet, but paid for, so a policy that trades idle time for
boots shows it); calls served, waited (p50/p99 of the waits), refused, lost (cut by
a stop: none should be), cold starts; and the chat calls' prefix-cache hit rate:
the share of chat calls that found an earlier prefix of their conversation in the
KV cache of the node they went to (the tokens' share, as vLLM's
``prefix_cache_hits / prefix_cache_queries`` counts it, is in the JSON, with the
misses by cause: a conversation's first call, one evicted from the node it went to
last, one sent to another node). The JSON also has the idle share on a model's only
node up (the price of keeping a model warm at all, which no scale-in removes) and
each model's own figures. ``--short`` replays the two busiest hours, from 13:00,
with a burst (under a minute).

A node's cache holds what that node served: a conversation's prefix up to the
prompt and answer of its last call there (an older one, if its later turns went
elsewhere, hits only up to it), least recently used conversations evicted first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import heapq
import itertools
import json
import math
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from moto import mock_aws

from dramatiq_actors.fleet import Fleet, LaunchSpec, hourly_price
from edge.fleet.affinity import room_affinity
from edge.fleet.registry import ModelInfo, NodeInfo, Registry, keep_for
from edge.fleet.scaling import LaunchPlan, Memory, NodeView, Observation, Policy, plan
from edge.fleet.slots import Slots
from edge.store.hotstore import HotStore, connect_redis
from tests.support.services import redis_service

SLOTS = 8  # calls a node runs at once
PREFILL = 4000.0  # prompt tokens per second
DECODE = 40.0  # generated tokens per second per call
CACHE_ROOMS = 12  # conversations whose prefix one node's KV cache holds (8k tokens each)
NEW_ROOM = 0.15  # share of chat turns that open a new conversation
ADMISSION_WAIT = 10.0
COLD_WAIT = 600.0
TICK = 15.0  # seconds between two scaling decisions
INSTANCE = "g5.xlarge"
#: The policies compared, in the order printed.
POLICIES = ("always-on at peak", "idle TTL, one node", "autoscaler", "autoscaler, least-loaded")
#: Models: share of the traffic, share of it that is chat, conversations open at once.
MODELS = {"big": (0.6, 0.6, 40), "mid": (0.3, 0.5, 20), "small": (0.1, 0.3, 8)}


@dataclasses.dataclass
class Call:
    model: str
    arrived: float
    prompt: int
    output: int
    room: str | None
    cold: bool = False
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclasses.dataclass
class SimNode:
    info: NodeInfo
    instance_id: str
    spot: bool
    billed_from: float
    ready_at: float
    state: str = "pending"  # pending, running, draining, stopped
    busy_since: float | None = None
    busy: float = 0.0  # seconds with a call running
    booting: float = 0.0  # seconds billed before it could serve
    #: Conversations whose prefix its KV cache holds, least recently used first, with
    #: the tokens held (the prompt and answer of the conversation's last call here).
    cache: collections.OrderedDict[str, int] = dataclasses.field(
        default_factory=collections.OrderedDict)
    billed: float = 0.0


def traffic(seed: int, hours: float, start: float = 8.0) -> list[Call]:
    """A seeded day from ``start`` o'clock: a diurnal rate (low at 3:00, high at 15:00)
    with a burst of triple rate for 10 minutes every four hours; chat turns in rooms
    with growing histories, and one-off API calls."""
    rng = random.Random(seed)
    bursts = [rng.uniform(0, hours * 3600) for _ in range(max(1, int(6 * hours / 24)))]
    peak = 3.0  # calls per second at the busiest hour
    calls: list[Call] = []
    turns: dict[str, int] = collections.defaultdict(int)
    active: dict[str, list[str]] = {model: [] for model in MODELS}
    opened = itertools.count()
    t = 0.0
    while True:
        hour = (t / 3600 + start) % 24
        rate = peak * (0.08 + 0.92 * (0.5 - 0.5 * math.cos((hour - 3) / 24 * 2 * math.pi)) ** 2)
        if any(b <= t < b + 600 for b in bursts):
            rate *= 3
        t += rng.expovariate(rate)
        if t >= hours * 3600:
            return calls
        model = rng.choices(list(MODELS), [m[0] for m in MODELS.values()])[0]
        _, chat_share, rooms = MODELS[model]
        if rng.random() < chat_share:
            # A turn of one of the model's open conversations, or the first of a new one.
            open_rooms = active[model]
            if not open_rooms or rng.random() < NEW_ROOM:
                open_rooms.append(f"{model}-{next(opened)}")
                if len(open_rooms) > rooms:
                    open_rooms.pop(0)  # its people went away
            room = rng.choice(open_rooms)
            turns[room] += 1
            prompt = min(8000, 400 + 350 * turns[room])
            calls.append(Call(model, t, prompt, rng.randint(80, 300), room))
        else:
            calls.append(Call(model, t, rng.randint(200, 1500), rng.randint(20, 400), None))


@dataclasses.dataclass
class ModelResult:
    """One model's share of a policy's figures."""

    node_hours: float = 0.0
    idle_hours: float = 0.0
    alone_idle_hours: float = 0.0  # of which with no other node of the model up
    boot_hours: float = 0.0
    chat: int = 0
    chat_hits: int = 0

    def row(self) -> dict[str, Any]:
        return {"node_hours": round(self.node_hours, 1), "idle_hours": round(self.idle_hours, 1),
                "alone_idle_hours": round(self.alone_idle_hours, 1),
                "boot_hours": round(self.boot_hours, 1),
                "chat_prefix_hit_pct": round(100 * self.chat_hits / self.chat, 1)
                if self.chat else 0.0}


@dataclasses.dataclass
class Result:
    policy: str
    on_demand_hours: float = 0.0
    spot_hours: float = 0.0
    idle_hours: float = 0.0
    boot_hours: float = 0.0
    served: int = 0
    refused: int = 0
    lost: int = 0
    cold_starts: int = 0
    waits: list[float] = dataclasses.field(default_factory=list)
    cold_waits: list[float] = dataclasses.field(default_factory=list)
    chat: int = 0
    chat_hits: int = 0
    chat_tokens: int = 0  # prompt tokens of chat calls
    chat_cached_tokens: int = 0  # of which found in the node's cache
    chat_misses: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter)
    cost_usd: float = 0.0
    models: dict[str, ModelResult] = dataclasses.field(
        default_factory=lambda: {model: ModelResult() for model in MODELS})

    def row(self) -> dict[str, Any]:
        billed = self.on_demand_hours + self.spot_hours
        ordered = sorted(self.waits)
        cold = sorted(self.cold_waits)

        def pct(values: list[float], q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else 0.0

        return {"policy": self.policy, "node_hours_on_demand": round(self.on_demand_hours, 1),
                "node_hours_spot": round(self.spot_hours, 1),
                "idle_share_pct": round(100 * self.idle_hours / billed, 1) if billed else 0.0,
                "alone_idle_share_pct": round(100 * sum(
                    m.alone_idle_hours for m in self.models.values()) / billed, 1)
                if billed else 0.0,
                "boot_share_pct": round(100 * self.boot_hours / billed, 1) if billed else 0.0,
                "gpu_cost_usd": round(self.cost_usd, 2), "served": self.served,
                "waited": len(ordered), "wait_p50_s": pct(ordered, 0.5),
                "wait_p99_s": pct(ordered, 0.99), "cold_wait_p99_s": pct(cold, 0.99),
                "refused": self.refused, "lost": self.lost, "cold_starts": self.cold_starts,
                "chat_prefix_hit_pct": round(100 * self.chat_hits / self.chat, 1)
                if self.chat else 0.0,
                "chat_prefix_token_hit_pct": round(
                    100 * self.chat_cached_tokens / self.chat_tokens, 1) if self.chat_tokens
                else 0.0,
                # Chat calls that missed, as a share of all chat calls, by cause.
                "chat_miss_pct": {why: round(100 * self.chat_misses[why] / self.chat, 1)
                                  if self.chat else 0.0
                                  for why in ("first", "evicted", "elsewhere")},
                "models": {model: figures.row() for model, figures in self.models.items()}}


class Simulation:
    """One policy over the day: the scaler's rule, the slots in Redis, EC2 in moto."""

    def __init__(self, name: str, policies: dict[str, Policy], store: HotStore,
                 fleet: Fleet, boot: float, affinity_ttl: float) -> None:
        self.result = Result(name)
        self.policies, self.boot, self.fleet = policies, boot, fleet
        self.store = store
        self.slots = Slots(store, lease=3600, affinity_ttl=affinity_ttl)
        self.registry = Registry(default_slots=SLOTS)
        self.models = {name: ModelInfo(id=i + 1, name=name, served_name=name, input_price=0,
                                       output_price=0, context_length=16384, enabled=True,
                                       boot_seconds=boot, created=0)
                       for i, name in enumerate(MODELS)}
        self.registry.models = dict(self.models)
        self.nodes: dict[str, list[SimNode]] = {m: [] for m in MODELS}
        self.memory = {m: Memory() for m in MODELS}
        self.queue: dict[str, collections.deque[Call]] = {m: collections.deque() for m in MODELS}
        self.last_call = {m: -math.inf for m in MODELS}
        self.accounted = {m: 0.0 for m in MODELS}  # idle counted up to then
        self.served_on: dict[str, SimNode] = {}  # conversation -> node of its last call
        self.events: list[tuple[float, int, str, Any]] = []
        self.counter = itertools.count()
        self.ids = itertools.count(1)
        self.now = 0.0

    # -- the fleet ------------------------------------------------------------------------
    def at(self, when: float, kind: str, payload: Any) -> None:
        heapq.heappush(self.events, (when, next(self.counter), kind, payload))

    def launch(self, model: str, spot: bool, ready_now: bool = False) -> None:
        self.account(model)
        (instance,) = self.fleet.launch(LaunchSpec(model=model, instance_type=INSTANCE,
                                                   region="us-east-1", image_id=IMAGE,
                                                   spot=spot))
        policy = self.policies.get(model, Policy())  # a catalogue row's, if it has none
        info = NodeInfo(id=next(self.ids), model_id=self.models[model].id, url="", state="pending",
                        healthy=False, slots=SLOTS,
                        keep=keep_for(policy.target_load, policy.load_metric))
        node = SimNode(info, instance.id, spot, billed_from=self.now,
                       ready_at=self.now if ready_now else self.now + self.boot)
        self.nodes[model].append(node)
        self.registry.nodes.setdefault(info.model_id, []).append(info)
        if ready_now:
            self.ready(node)
        else:
            self.count_cold_start(model, node)
            self.at(node.ready_at, "ready", (model, node))

    def boot_again(self, model: str, node: SimNode) -> None:
        self.account(model)
        self.fleet.start("us-east-1", node.instance_id)
        node.state, node.info.state, node.billed_from = "pending", "pending", self.now
        node.ready_at = self.now + self.boot
        self.count_cold_start(model, node)
        self.at(node.ready_at, "ready", (model, node))

    def count_cold_start(self, model: str, node: SimNode) -> None:
        """A boot is a cold start when the model has no other node serving or on its way
        (several booted at once for one cold model are one cold start)."""
        self.result.cold_starts += not any(n.state in ("pending", "running")
                                           for n in self.nodes[model] if n is not node)

    def model_policy(self, model: str) -> Policy | None:
        return self.policies.get(model)

    def boot_cold(self, model: str) -> None:
        """What the edge's boot request does for a cold model (``boot_model``): boot its
        cheapest stopped node at once, unless one is up or on its way; with none
        stopped, the scaler's next decision launches one."""
        nodes = self.nodes[model]
        if any(n.state in ("pending", "running") for n in nodes):
            return
        stopped = [n for n in nodes if n.state == "stopped"]
        if stopped:
            self.boot_again(model, stopped[0])

    def account(self, model: str) -> None:
        """Count the idle time of ``model``'s nodes since the last change (call it before
        each): on a node that is the model's only one up, the price of keeping the model
        warm at all; on one of several, capacity kept beyond the load."""
        elapsed, self.accounted[model] = self.now - self.accounted[model], self.now
        up = [n for n in self.nodes[model] if n.state in ("pending", "running", "draining")]
        if len(up) == 1 and up[0].state != "pending" and up[0].info.in_flight == 0:
            self.result.models[model].alone_idle_hours += elapsed / 3600

    def ready(self, node: SimNode) -> None:
        self.account(self.model_of(node))
        node.booting += self.now - node.billed_from if node.state == "pending" else 0.0
        node.state, node.info.state, node.info.healthy = "running", "running", True
        node.cache.clear()  # a booted node starts with an empty KV cache

    def model_of(self, node: SimNode) -> str:
        return next(model for model, info in self.models.items()
                    if info.id == node.info.model_id)

    def stop(self, node: SimNode) -> None:
        self.account(self.model_of(node))
        if node.spot:
            self.fleet.terminate("us-east-1", node.instance_id)
        else:
            self.fleet.stop("us-east-1", node.instance_id)
        self.bill(node)
        node.state = node.info.state = "terminated" if node.spot else "stopped"
        node.info.healthy = False

    def bill(self, node: SimNode) -> None:
        hours = (self.now - node.billed_from) / 3600
        node.billed += hours
        if node.spot:
            self.result.spot_hours += hours
        else:
            self.result.on_demand_hours += hours
        self.result.cost_usd += hours * hourly_price(INSTANCE, spot=node.spot) / 1e6
        node.billed_from = self.now

    # -- calls --------------------------------------------------------------------------
    async def arrive(self, call: Call) -> None:
        self.last_call[call.model] = call.arrived
        call.cold = not any(n.state == "running" for n in self.nodes[call.model])
        if call.cold and self.model_policy(call.model):
            self.boot_cold(call.model)
        if not await self.dispatch(call):
            self.queue[call.model].append(call)
            self.at(call.arrived + (COLD_WAIT if call.cold else ADMISSION_WAIT), "give_up", call)

    async def dispatch(self, call: Call) -> bool:
        model = self.models[call.model]
        candidates = self.registry.ranked(model)
        if not candidates:
            return False
        affinity = room_affinity(call.room) if call.room else None
        info = await self.slots.take(candidates, call.id, affinity)
        if info is None:
            return False
        node = next(n for n in self.nodes[call.model] if n.info is info)
        self.account(call.model)
        info.in_flight += 1
        if info.in_flight == 1:
            node.busy_since = self.now
        cached = 0
        if call.room:
            figures = self.result.models[call.model]
            self.result.chat += 1
            figures.chat += 1
            held = node.cache.pop(call.room, None)
            if held is not None:
                self.result.chat_hits += 1
                figures.chat_hits += 1
                cached = min(held, call.prompt - 1)  # vLLM computes the last token again
            else:  # why not: its first call, evicted where it went last, or sent elsewhere
                last = self.served_on.get(call.room)
                why = "first" if last is None else "evicted" if last is node else "elsewhere"
                self.result.chat_misses[why] += 1
            self.served_on[call.room] = node
            self.result.chat_tokens += call.prompt
            self.result.chat_cached_tokens += cached
            node.cache[call.room] = call.prompt + call.output
            while len(node.cache) > CACHE_ROOMS:
                node.cache.popitem(last=False)
        wait = self.now - call.arrived
        if wait > 0.001:
            self.result.waits.append(wait)
            if call.cold:
                self.result.cold_waits.append(wait)
        took = (call.prompt - cached) / PREFILL + call.output / DECODE
        self.at(self.now + took, "done", (call, node))
        return True

    async def done(self, call: Call, node: SimNode) -> None:
        self.slots.give(call.id)
        await self.slots.drain()  # the edge's waiters see the slot free once Redis does
        self.account(call.model)
        node.info.in_flight -= 1
        if node.info.in_flight == 0 and node.busy_since is not None:
            node.busy += self.now - node.busy_since
            node.busy_since = None
        if node.state in ("stopped", "terminated"):
            self.result.lost += 1
        else:
            self.result.served += 1
        await self.drain_queue(call.model)
        if node.state == "draining" and node.info.in_flight == 0:
            self.stop(node)

    async def drain_queue(self, model: str) -> None:
        queue = self.queue[model]
        while queue and await self.dispatch(queue[0]):
            queue.popleft()

    # -- the scaler ---------------------------------------------------------------------
    async def decide(self, model: str) -> None:
        policy = self.policies.get(model)
        if policy is None:
            return
        nodes = [n for n in self.nodes[model] if n.state != "terminated"]
        seen = Observation(
            nodes=[NodeView(id=n.info.id, state=n.state, healthy=n.info.healthy,
                            booting=n.state == "pending", spot=n.spot,
                            hourly_cost=hourly_price(INSTANCE, spot=n.spot),
                            in_flight=n.info.in_flight) for n in nodes],
            waiting_at_edge=len(self.queue[model]),
            idle_for=self.now - self.last_call[model])
        decision = plan(policy, seen, self.memory[model], self.now)
        if decision.action == "launch":
            self.launch(model, decision.spot)
        elif decision.action == "boot":
            node = next(n for n in nodes if n.info.id == decision.node_id)
            self.boot_again(model, node)
        elif decision.action == "drain":
            node = next(n for n in nodes if n.info.id == decision.node_id)
            node.state = node.info.state = "draining"
            if node.info.in_flight == 0:
                self.stop(node)

    async def run(self, calls: list[Call], hours: float) -> Result:
        for call in calls:
            self.at(call.arrived, "arrive", call)
        tick = 0.0
        while tick < hours * 3600:
            self.at(tick, "tick", None)
            tick += TICK
        while self.events:
            self.now, _, kind, payload = heapq.heappop(self.events)
            if kind == "arrive":
                await self.arrive(payload)
            elif kind == "done":
                await self.done(*payload)
            elif kind == "ready":
                model, node = payload
                if node.state == "pending":
                    self.ready(node)
                    await self.drain_queue(model)
            elif kind == "give_up":
                if payload in self.queue[payload.model]:
                    self.queue[payload.model].remove(payload)
                    self.result.refused += 1
            elif kind == "tick":
                for model in MODELS:
                    await self.decide(model)
        self.now = max(self.now, hours * 3600)
        for model, nodes in self.nodes.items():
            self.account(model)
            figures = self.result.models[model]
            for node in nodes:
                if node.state == "pending":  # still booting at the end
                    node.booting += self.now - node.billed_from
                if node.state in ("pending", "running", "draining"):
                    self.bill(node)
                if node.busy_since is not None:
                    node.busy += self.now - node.busy_since
                idle = max(0.0, node.billed - (node.busy + node.booting) / 3600)
                figures.node_hours += node.billed
                figures.idle_hours += idle
                figures.boot_hours += node.booting / 3600
                self.result.idle_hours += idle
                self.result.boot_hours += node.booting / 3600
        await self.slots.drain()
        return self.result


IMAGE = ""


async def simulate(args: argparse.Namespace, redis_url: str) -> list[dict[str, Any]]:
    global IMAGE
    hours = 2.0 if args.short else args.hours
    calls = traffic(args.seed, hours, start=13.0 if args.short else 8.0)
    fleet = Fleet(["us-east-1"])
    IMAGE = fleet.client("us-east-1").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    launch = LaunchPlan(instance_types=(INSTANCE,), image_id=IMAGE)
    peak = {"big": 6, "mid": 3, "small": 2}
    # Each model's boot time as the catalogue measures it (LLM.boot_seconds).
    autoscaler = {m: Policy(min_nodes=0, max_nodes=peak[m], target_load=args.target_load,
                            scale_out_after=30, scale_in_after=args.scale_in_after,
                            idle_ttl=args.idle_ttl, spot=True, on_demand_floor=1,
                            launch=launch, boot_seconds=args.boot) for m in MODELS}
    setups = [
        ("always-on at peak", {}, 3600.0, True),
        ("idle TTL, one node", {m: Policy(max_nodes=1, idle_ttl=1800, launch=launch,
                                          boot_seconds=args.boot)
                                for m in MODELS}, 3600.0, False),
        ("autoscaler", autoscaler, 3600.0, False),
        ("autoscaler, least-loaded", autoscaler, 0.0, False),
    ]
    if args.policy:
        setups = [setup for setup in setups if setup[0] in args.policy]
    rows = []
    for name, policies, affinity_ttl, always_on in setups:
        store = HotStore(connect_redis(redis_url), f"fleetsim{uuid.uuid4().hex[:8]}")
        started = time.perf_counter()
        sim = Simulation(name, policies, store, fleet, args.boot, affinity_ttl)
        for model in MODELS:
            if always_on:
                for _ in range(peak[model]):  # each model's own peak, on-demand, all day
                    sim.launch(model, spot=False, ready_now=True)
            else:  # one node provisioned and stopped, as playbooks/provision.yml leaves it
                sim.launch(model, spot=False, ready_now=True)
                sim.stop(sim.nodes[model][0])
        result = await sim.run(calls, hours)
        row = result.row()
        row["calls"] = len(calls)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(f"{name:28} idle {row['idle_share_pct']:5.1f}% of "
              f"{row['node_hours_on_demand'] + row['node_hours_spot']:6.1f} node-hours "
              f"(booting {row['boot_share_pct']:.1f}%; {row['node_hours_spot']:.1f} spot, "
              f"${row['gpu_cost_usd']:.0f}); served "
              f"{row['served']}, waited {row['waited']} (p50 {row['wait_p50_s']} s, p99 "
              f"{row['wait_p99_s']} s; cold p99 {row['cold_wait_p99_s']} s), refused "
              f"{row['refused']}, lost {row['lost']}, cold starts {row['cold_starts']}, "
              f"chat prefix hits {row['chat_prefix_hit_pct']}%", flush=True)
        keys = [k async for k in store.client.scan_iter(f"{store.ns}:*")]
        if keys:
            await store.client.delete(*keys)
        await store.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="two hours at a quarter rate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--boot", type=float, default=180.0,
                        help="simulated seconds from a boot or launch to serving")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--idle-ttl", type=float, default=300.0,
                        help="the autoscaler's idle TTL, seconds")
    parser.add_argument("--scale-in-after", type=float, default=120.0,
                        help="the autoscaler's scale_in_after, seconds")
    parser.add_argument("--target-load", type=float, default=SLOTS * 0.75,
                        help="the autoscaler's target_load, open calls per node")
    parser.add_argument("--policy", action="append", choices=POLICIES,
                        help="run only this policy (repeatable; default: all of them)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    with redis_service() as redis_url, mock_aws():
        rows = asyncio.run(simulate(args, redis_url))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
