"""The scaling rule, decision by decision: :func:`edge.fleet.scaling.plan` on what a fleet
shows (no I/O; the scaler and the simulator both run it)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from edge.fleet.scaling import (
    ACT_GRACE,
    LaunchPlan,
    Memory,
    NodeView,
    Observation,
    Policy,
    plan,
    policy_changes,
    sparse,
)

LAUNCH = LaunchPlan(instance_types=("g5.xlarge", "g6.xlarge"), image_id="ami-1")
POLICY = Policy(min_nodes=0, max_nodes=3, target_load=4, scale_out_after=30,
                scale_in_after=60, idle_ttl=600, launch=LAUNCH)


def running(node_id: int, in_flight: int = 0, **kwargs: object) -> NodeView:
    return NodeView(id=node_id, state="running", in_flight=in_flight,
                    hourly_cost=kwargs.pop("hourly_cost", 1_000_000), **kwargs)  # type: ignore[arg-type]


def decide(policy: Policy, nodes: list[NodeView], memory: Memory, now: float,
           **seen: object) -> str:
    decision = plan(policy, Observation(nodes=nodes, **seen), memory, now)  # type: ignore[arg-type]
    return decision.action + (f":{decision.node_id}" if decision.node_id else "") + (
        ":spot" if decision.spot else "")


def test_load_over_the_target_for_long_enough_adds_one_node() -> None:
    memory = Memory()
    busy = [running(1, in_flight=9)]
    assert decide(POLICY, busy, memory, 0) == "hold"  # over since now
    assert decide(POLICY, busy, memory, 29) == "hold"
    assert decide(POLICY, busy, memory, 30) == "launch"
    # The decision is being carried out: nothing more for a while, even over the target.
    assert decide(POLICY, busy, memory, 31) == "hold"
    # The node on its way is capacity: 7 calls over two nodes are under the target.
    coming = [running(1, in_flight=7), NodeView(id=2, state="pending")]
    assert decide(POLICY, coming, memory, 30 + ACT_GRACE + 100) == "hold"
    assert memory.above_since is None


def test_while_nodes_are_on_their_way_more_come_if_the_load_still_needs_them() -> None:
    memory = Memory()
    # 9 calls, one node serving and one booting: 4.5 per node, still over 4.
    coming = [running(1, in_flight=9), NodeView(id=2, state="pending")]
    assert decide(POLICY, coming, memory, 0) == "hold"  # over since now
    assert decide(POLICY, coming, memory, 30) == "launch"  # a third, not after the boot
    more = [*coming, NodeView(id=3, state="pending")]  # 3 per node: enough
    assert decide(POLICY, more, memory, 30 + ACT_GRACE + 100) == "hold"
    # Booting nodes count toward max_nodes too.
    full = [running(1, in_flight=20), NodeView(id=2, state="pending"),
            NodeView(id=3, state="pending")]
    assert decide(POLICY, full, Memory(above_since=0), 1000) == "hold"


def test_a_burst_shorter_than_the_window_adds_nothing() -> None:
    memory = Memory()
    assert decide(POLICY, [running(1, 9)], memory, 0) == "hold"
    assert decide(POLICY, [running(1, 2)], memory, 20) == "hold"  # back under: clock reset
    assert decide(POLICY, [running(1, 9)], memory, 40) == "hold"
    assert decide(POLICY, [running(1, 9)], memory, 69) == "hold"
    assert decide(POLICY, [running(1, 9)], memory, 70) == "launch"


def test_a_stopped_node_is_booted_before_one_is_launched_the_cheapest_first() -> None:
    nodes = [running(1, 9), NodeView(id=2, state="stopped", hourly_cost=5),
             NodeView(id=3, state="stopped", hourly_cost=2),
             NodeView(id=4, state="stopped", hourly_cost=1, static=True)]
    memory = Memory(above_since=0)
    assert decide(POLICY, nodes, memory, 100) == "boot:3"


def test_max_nodes_bounds_scaling_out() -> None:
    nodes = [running(1, 20), running(2, 20), running(3, 20)]
    assert decide(POLICY, nodes, Memory(above_since=0), 1000) == "hold"


def test_work_waiting_in_the_edge_and_queued_jobs_count_as_load() -> None:
    memory = Memory(above_since=0)
    assert decide(POLICY, [running(1, 2)], memory, 100, waiting_at_edge=2,
                  queued_jobs=1) == "launch"  # 2 + 2 + 1 = 5 over 4


def test_the_waiting_metric_reads_the_nodes_queues() -> None:
    policy = dataclasses.replace(POLICY, load_metric="waiting")
    assert decide(policy, [running(1, in_flight=50, waiting=1)], Memory(above_since=0),
                  100) == "hold"
    assert decide(policy, [running(1, in_flight=50, waiting=5)], Memory(above_since=0),
                  100) == "launch"


def test_a_cold_model_with_work_gets_a_node_at_once() -> None:
    stopped = [NodeView(id=1, state="stopped")]
    assert decide(POLICY, stopped, Memory(), 0, waiting_at_edge=1) == "boot:1"
    assert decide(POLICY, [], Memory(), 0, queued_jobs=1) == "launch"


def test_min_nodes_are_kept_up_and_started() -> None:
    policy = Policy(min_nodes=2, max_nodes=3, launch=LAUNCH)
    assert decide(policy, [running(1)], Memory(), 0) == "launch"
    assert decide(policy, [running(1), running(2)], Memory(), 10_000,
                  idle_for=math.inf) == "hold"


def test_a_model_without_a_launch_plan_or_stopped_node_holds_and_says_why() -> None:
    policy = Policy(max_nodes=3, target_load=4, scale_out_after=0)
    decision = plan(policy, Observation(nodes=[running(1, 9)]), Memory(above_since=0), 10)
    assert decision.action == "hold"
    assert "launch plan" in decision.reason


def test_load_that_fits_one_node_fewer_drains_the_dearest_idle_node_after_the_window() -> None:
    nodes = [running(1, 1, hourly_cost=1), running(2, 0, hourly_cost=9),
             running(3, 0, hourly_cost=5)]
    memory = Memory()
    assert decide(POLICY, nodes, memory, 0) == "hold"  # 1 <= 0.8 * 4 * 2: fits, clock starts
    assert decide(POLICY, nodes, memory, 59) == "hold"
    assert decide(POLICY, nodes, memory, 60) == "drain:2"


def test_a_node_with_work_is_never_drained() -> None:
    nodes = [running(1, 1, busy=True), running(2, 1)]
    decision = plan(POLICY, Observation(nodes=nodes, idle_for=10_000), Memory(), 0)
    assert decision.action == "hold"
    nodes = [running(1, 0, busy=True), running(2, 0, waiting=1)]
    decision = plan(POLICY, Observation(nodes=nodes, idle_for=10_000), Memory(), 0)
    assert decision.action == "hold" and "every node has work" in decision.reason


def test_an_idle_model_stops_its_last_nodes_after_its_ttl_but_keeps_min_nodes() -> None:
    one = [running(1)]
    assert decide(POLICY, one, Memory(), 0, idle_for=599) == "hold"
    assert decide(POLICY, one, Memory(), 0, idle_for=600) == "drain:1"
    kept = Policy(min_nodes=1, max_nodes=3, idle_ttl=600, launch=LAUNCH)
    assert decide(kept, one, Memory(), 0, idle_for=10_000) == "hold"
    never = Policy(max_nodes=1, idle_ttl=0)
    assert decide(never, one, Memory(), 0, idle_for=10_000) == "hold"


def test_a_sparse_model_stops_after_a_boot_of_quiet_without_waiting_for_its_ttl() -> None:
    policy = dataclasses.replace(POLICY, idle_ttl=1800, boot_seconds=100)
    memory, one = Memory(), [running(1)]
    # A quiet spell of 250 s, seen as it goes; nothing says yet that the model is sparse.
    for now, idle in [(0, 0), (50, 50), (250, 250)]:
        assert decide(policy, one, memory, now, idle_for=idle) == "hold"
    assert decide(policy, one, memory, 260, idle_for=5) == "hold"  # a request ended it
    assert memory.quiet == 250  # over twice its boot
    assert decide(policy, one, memory, 300, idle_for=45) == "hold"  # quiet for less than a boot
    assert decide(policy, one, memory, 360, idle_for=105) == "drain:1"


def test_a_model_called_more_often_than_its_boot_keeps_its_node_until_its_ttl() -> None:
    policy = dataclasses.replace(POLICY, idle_ttl=600, boot_seconds=100)
    memory, one = Memory(), [running(1)]
    for look, idle in enumerate([3, 9, 1, 12, 4, 7, 2]):  # calls every few seconds
        assert decide(policy, one, memory, 15 * look, idle_for=idle) == "hold"
    assert memory.quiet is not None and memory.quiet < 15
    assert decide(policy, one, memory, 500, idle_for=400) == "hold"  # a lull, not a habit
    assert decide(policy, one, memory, 700, idle_for=600) == "drain:1"
    # Without a measured boot the rule has nothing to weigh; idle_ttl 0 still means never.
    assert not sparse(dataclasses.replace(policy, boot_seconds=0), Memory(quiet=10_000))
    never = dataclasses.replace(policy, idle_ttl=0)
    assert decide(never, one, Memory(quiet=10_000), 0, idle_for=10_000) == "hold"


def test_static_nodes_are_never_booted_nor_drained() -> None:
    static = [NodeView(id=1, state="running", static=True)]
    assert decide(POLICY, static, Memory(), 0, idle_for=10_000) == "hold"


def test_spot_is_used_above_the_on_demand_floor_and_the_floor_is_kept_on_scale_in() -> None:
    policy = Policy(max_nodes=5, target_load=4, scale_out_after=0, scale_in_after=0,
                    spot=True, on_demand_floor=1, launch=LAUNCH)
    assert decide(policy, [], Memory(), 0, queued_jobs=1) == "launch"  # the floor first
    assert decide(policy, [running(1, 9)], Memory(), 0) == "launch:spot"
    # Scaling in: the on-demand node is the dearest, but it is the floor: spot goes.
    nodes = [running(1, 0, hourly_cost=10), running(2, 0, spot=True, hourly_cost=3)]
    assert decide(policy, nodes, Memory(), 0, idle_for=0) == "drain:2"


def test_policy_changes_are_checked() -> None:
    assert policy_changes({"max_nodes": 4, "target_load": 2, "spot": True}) == {
        "max_nodes": 4, "target_load": 2.0, "spot": True}
    assert policy_changes({"launch": {"instance_types": ["g5.xlarge"], "image_id": "ami-1"}}) \
        == {"launch": {"instance_types": ["g5.xlarge"], "image_id": "ami-1"}}
    for bad, words in [({"max_nodes": -1}, "max_nodes"), ({"max_nodes": True}, "max_nodes"),
                       ({"target_load": "x"}, "target_load"), ({"colour": 1}, "colour"),
                       ({"load_metric": "gpu"}, "load_metric"), ({"spot": 1}, "spot"),
                       ({"launch": {"instance_types": "g5"}}, "instance_types"),
                       ({"launch": {"nope": 1}}, "nope"), ({"launch": []}, "launch"),
                       ({"min_nodes": 3, "max_nodes": 2}, "min_nodes"),
                       ({"target_load": float("nan")}, "target_load")]:
        with pytest.raises(ValueError, match=words):
            policy_changes(bad)
