"""The routing table's figures per node from the catalogue (:meth:`Registry.reload`): the
slots a node takes and how many open calls it keeps a conversation's prefix under."""

from __future__ import annotations

from edge.db.models import LLM
from edge.fleet.registry import keep_for
from tests.support.inprocess import InProcessPortal


async def test_a_node_keeps_prefixes_under_its_model_s_target_load(
        inprocess_portal: InProcessPortal) -> None:
    portal = inprocess_portal
    row = await portal.add_model("kept")
    first = await portal.add_node("kept", "http://127.0.0.1:9")
    registry = portal.ctx.registry

    def nodes() -> dict[int, tuple[int, int]]:
        return {n.id: (n.slots, n.keep) for n in registry.nodes[row.id]}

    default_slots = registry.default_slots
    assert nodes() == {first: (default_slots, 8)}  # the catalogue's default target, 8
    await LLM.filter(id=row.id).update(target_load=5.5, node_slots=12)
    await registry.reload()
    second = await portal.add_node("kept", "http://127.0.0.1:10")
    assert nodes() == {first: (12, 5), second: (12, 5)}
    # A target on vLLM's queue says nothing of open calls: the bound alone decides.
    await LLM.filter(id=row.id).update(load_metric="waiting")
    await registry.reload()
    assert nodes() == {first: (12, 0), second: (12, 0)}
    assert keep_for(0.5, "in_flight") == 0
