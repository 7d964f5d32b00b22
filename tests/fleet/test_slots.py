"""Admission slots and cache-affine routing on a real Redis: limits held over several
processes' worth of :class:`Slots`, leases that free a dead holder's slots, and a
prefix kept on its node until that node is full, past its bound or over its keep."""

from __future__ import annotations

import asyncio

import pytest

from edge.fleet.registry import NodeInfo
from edge.fleet.slots import Slots, open_calls, waiting_calls
from edge.store import keys
from edge.store.hotstore import HotStore


def node(node_id: int, slots: int = 2, keep: int = 0) -> NodeInfo:
    return NodeInfo(id=node_id, model_id=1, url=f"http://n{node_id}", state="running",
                    healthy=True, slots=slots, keep=keep)


@pytest.fixture
def two_workers(store: HotStore) -> tuple[Slots, Slots]:
    """Two processes' slot keepers on one Redis."""
    return Slots(store, lease=30), Slots(store, lease=30)


async def test_a_node_takes_its_limit_over_every_worker(two_workers, store) -> None:
    one, other = two_workers
    a = node(1, slots=3)
    taken = [await one.take([a], "r1"), await other.take([a], "r2"), await one.take([a], "r3")]
    assert taken == [a, a, a]
    assert await other.take([a], "r4") is None  # full, whichever worker asks
    assert await open_calls(store, [1]) == {1: 3}
    other.give("r2")
    await other.drain()
    assert await open_calls(store, [1]) == {1: 2}
    assert await one.take([a], "r5") is a
    # Given back once: a second give of the same call changes nothing.
    other.give("r2")
    await other.drain()
    assert await open_calls(store, [1]) == {1: 3}


async def test_a_full_node_sends_the_call_to_the_next_with_room(two_workers, store) -> None:
    one, _ = two_workers
    a, b = node(1, slots=1), node(2, slots=1)
    assert await one.take([a, b], "r1") is a
    assert await one.take([a, b], "r2") is b
    assert await one.take([a, b], "r3") is None
    assert await open_calls(store, [1, 2]) == {1: 1, 2: 1}


async def test_the_least_loaded_over_every_worker_wins_ties_go_to_the_callers_order(
        two_workers) -> None:
    one, other = two_workers
    a, b = node(1, slots=10), node(2, slots=10)
    assert await other.take([a], "elsewhere-1") is a  # another worker's call on a
    assert await one.take([a, b], "r1") is b  # a has one open call somewhere: b is freer
    assert await one.take([a, b], "r2") is a  # one each: the caller's order decides


async def test_a_dead_workers_slots_free_themselves_when_their_lease_ends(store) -> None:
    dead = Slots(store, lease=0.3)  # its process will never give them back
    a = node(1, slots=1)
    assert await dead.take([a], "r1") is a
    alive = Slots(store, lease=30)
    assert await alive.take([a], "r2") is None
    await asyncio.sleep(0.4)
    assert await alive.take([a], "r2") is a


async def test_renewing_keeps_a_long_call_s_slot(store) -> None:
    keeper = Slots(store, lease=0.4)
    a = node(1, slots=1)
    assert await keeper.take([a], "long") is a
    for _ in range(4):
        await asyncio.sleep(0.2)
        await keeper.renew()
    assert await Slots(store, lease=30).take([a], "other") is None  # still held at 0.8 s
    assert await open_calls(store, [1]) == {1: 1}


async def test_a_prefix_stays_on_its_node_until_its_load_is_past_the_bound(store) -> None:
    slots = Slots(store, lease=30, affinity_ttl=60)
    a, b, c = node(1, slots=8), node(2, slots=8), node(3, slots=8)
    first = await slots.take([a, b, c], "r1", affinity=77)
    assert first is a  # not seen before: the least loaded, ties by the caller's order
    # Later calls of the prefix follow it, even when the caller ranks others first,
    # while a's open calls stay within ceil((open + 1) x 1.25 / 3) + 1.
    assert await slots.take([c, b, a], "r2", affinity=77) is a  # 1 open: bound 2
    assert await slots.take([c, b, a], "r3", affinity=77) is a  # 2 open: bound 3
    assert await open_calls(store, [1, 2, 3]) == {1: 3, 2: 0, 3: 0}
    # 3 open, all on a: the bound is 3, a is at it: the call goes to the least loaded.
    moved = await slots.take([c, b, a], "r4", affinity=77)
    assert moved is c
    # The prefix moved with it: its next call follows it to c.
    assert await slots.take([b, a, c], "r5", affinity=77) is c
    assert await store.client.get(keys.affinity(store.ns, 1, 77)) == b"3"
    # Another prefix is its own: it goes to the least loaded, b.
    assert await slots.take([a, b, c], "other", affinity=78) is b


async def test_a_prefix_keeps_its_node_under_its_keep_however_many_nodes_join(store) -> None:
    slots = Slots(store, lease=30, affinity_ttl=60)
    a = node(1, slots=8, keep=6)  # the model's target load per node is 6
    assert [await slots.take([a], f"r{i}", affinity=5) for i in range(4)] == [a] * 4
    # Two nodes join, empty. With 4 open on a, the bound alone, ceil(5 x 1.25 / 3) + 1,
    # would be 4 and send the prefix to a node that does not hold it; a is under its
    # keep, so it stays there up to 6 open.
    b, c = node(2, slots=8, keep=6), node(3, slots=8, keep=6)
    assert await slots.take([b, c, a], "r4", affinity=5) is a
    assert await slots.take([b, c, a], "r5", affinity=5) is a
    assert await open_calls(store, [1, 2, 3]) == {1: 6, 2: 0, 3: 0}
    # At its keep the bound decides again (4 for 7 calls over 3 nodes): the prefix moves.
    assert await slots.take([b, c, a], "r6", affinity=5) is b
    assert await slots.take([c, a, b], "r7", affinity=5) is b


async def test_a_full_affine_node_is_passed_over(store) -> None:
    slots = Slots(store, lease=30, affinity_ttl=60)
    a, b = node(1, slots=1), node(2, slots=5)
    assert await slots.take([a, b], "r1", affinity=5) is a
    assert await slots.take([a, b], "r2", affinity=5) is b  # a is at its limit


async def test_without_an_affinity_ttl_calls_go_to_the_least_loaded(store) -> None:
    slots = Slots(store, lease=30, affinity_ttl=0)
    a, b = node(1, slots=4), node(2, slots=4)
    assert await slots.take([a, b], "r1", affinity=9) is a
    assert await slots.take([a, b], "r2", affinity=9) is b
    assert await store.client.exists(keys.affinity(store.ns, 1, 9)) == 0


async def test_calls_held_back_are_counted_until_they_go_or_give_up(store) -> None:
    one, other = Slots(store), Slots(store)
    loop = asyncio.get_running_loop()
    await one.hold_back("m", "w1", loop.time() + 30)
    await other.hold_back("m", "w2", loop.time() + 0.2)
    assert await waiting_calls(store, "m") == 2
    await asyncio.sleep(0.3)  # w2's bound passed (its process may have died meanwhile)
    assert await waiting_calls(store, "m") == 1
    one.let_go("w1")
    await one.drain()
    assert await waiting_calls(store, "m") == 0
