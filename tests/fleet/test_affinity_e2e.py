"""Cache-affine routing end to end: a chat room's replies stay on one node, over a
portal of two workers, until that node is full or down; then the room moves, and stays
where it moved. The nodes are simnodes with a prefix cache, whose hit counters show
what the affinity is for."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simnode.testing import SimnodeProcess, free_port, start_simnode
from tests.support.chat import ChatClient
from tests.support.portal import PortalServer
from tests.support.services import sql_query

MODEL = "affine"
_said = itertools.count()


class Setup:
    def __init__(self, portal: PortalServer, nodes: dict[int, SimnodeProcess],
                 ports: dict[int, int], key: str) -> None:
        self.portal, self.nodes, self.ports, self.key = portal, nodes, ports, key

    def sql(self, query: str, *params: object) -> list[tuple]:
        return sql_query(f"sqlite://{self.portal.root / 'data' / 'portal.sqlite3'}", query,
                         *params)

    async def reply_node(self, room: str) -> int:
        """Ask in ``room`` (on a fresh socket: either worker) and name the node that replied."""
        client = await ChatClient.connect(self.portal.url, room, self.key)
        try:
            await client.send(type="message", text=f"and then? {next(_said)}", model=MODEL,
                              params={"max_tokens": 4})
            done = await client.wait_for("done", timeout=60)
        finally:
            await client.close()
        assert done["status"] == "done", done
        (request_id,), = self.sql("SELECT request_id FROM chat_messages WHERE id=?",
                                  done["reply_id"])
        for _ in range(100):
            rows = self.sql("SELECT node_id FROM usage_log WHERE request_id=?", request_id)
            if rows:
                return int(rows[0][0])
            await asyncio.sleep(0.05)
        raise AssertionError(f"no usage row for {request_id}")

    def running(self, node_id: int) -> int:
        text = httpx.get(self.nodes[node_id].url + "/metrics").text
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("vllm:num_requests_running{")))

    def hits(self, node_id: int) -> float:
        text = httpx.get(self.nodes[node_id].url + "/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("vllm:prefix_cache_hits_total{"))


@pytest.fixture
def setup(tmp_path: Path, redis_url: str) -> Iterator[Setup]:
    ports = [free_port(), free_port()]
    simnodes = [start_simnode("--model", MODEL, "--tokens-per-second", "50", port=port)
                for port in ports]
    try:
        portal = PortalServer(tmp_path, redis_url, workers=2,
                              env={"PORTAL_NODE_COOL_DOWN": "30"})
        portal.cli("migrate")
        portal.add_model(MODEL)
        ids = [portal.add_node(MODEL, node.url) for node in simnodes]
        portal.cli("models", "policy", MODEL, "--node-slots", "1")
        _, key = portal.create_key("10")
        with portal:
            yield Setup(portal, dict(zip(ids, simnodes, strict=True)),
                        dict(zip(ids, ports, strict=True)), key)
    finally:
        for node in simnodes:
            node.stop()


async def _long_call(setup: Setup, client: httpx.AsyncClient) -> asyncio.Task:
    """A three-second API call, running once this returns."""
    task = asyncio.create_task(client.post("/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 150, "ignore_eos": True,
        "messages": [{"role": "user", "content": f"elsewhere {next(_said)}"}]}))
    await asyncio.sleep(0.5)
    return task


async def test_a_room_stays_on_its_node_until_it_is_full_or_down_then_moves(setup) -> None:
    home = await setup.reply_node("kept")
    assert [await setup.reply_node("kept") for _ in range(3)] == [home] * 3
    assert setup.hits(home) > 0  # the room's history was in that node's cache
    other = next(n for n in setup.nodes if n != home)

    # Full: the home node runs one call at a time (node_slots 1) and has one.
    async with httpx.AsyncClient(base_url=setup.portal.url, timeout=60, headers={
            "authorization": f"Bearer {setup.key}"}) as client:
        calls = [await _long_call(setup, client)]
        if setup.running(home) == 0:  # it went to the other node: the next fills home
            calls.append(await _long_call(setup, client))
        assert setup.running(home) == 1
        moved = await setup.reply_node("kept")  # waits for a slot if both are full
        answers = await asyncio.gather(*calls)
    assert all(a.status_code == 200 for a in answers)
    assert moved == other
    # It stays where it moved: the prefix now lives there.
    assert await setup.reply_node("kept") == other

    # Down: the room goes back to the node that is up.
    setup.nodes[other].stop()
    assert await setup.reply_node("kept") == home
    assert await setup.reply_node("kept") == home
