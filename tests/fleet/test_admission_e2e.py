"""Admission control end to end: a portal of two worker processes in front of one slow
simnode whose model takes two calls at once. The node never runs more than its slots,
over both workers; a call that finds it full waits in the edge, then gets 429 with
``Retry-After`` within its bound; every slot comes back, a client that went away
included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from simnode.testing import SimnodeProcess, start_simnode
from tests.support.chat import ChatClient
from tests.support.portal import PortalServer

MODEL = "admitted"
SLOTS = 2
WAIT = 1.5  # PORTAL_ADMISSION_WAIT


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory,
          redis_url: str) -> Iterator[tuple[PortalServer, SimnodeProcess, str]]:
    root: Path = tmp_path_factory.mktemp("admission")
    with start_simnode("--model", MODEL, "--tokens-per-second", "20") as node:
        portal = PortalServer(root, redis_url, workers=2,
                              env={"PORTAL_ADMISSION_WAIT": str(WAIT)})
        portal.cli("migrate")
        portal.add_model(MODEL)
        portal.add_node(MODEL, node.url)
        portal.cli("models", "policy", MODEL, "--node-slots", str(SLOTS))
        _, key = portal.create_key("10")
        with portal:
            yield portal, node, key


def open_slots(portal: PortalServer) -> int:
    client = redis.Redis.from_url(portal.redis_url)
    try:
        return sum(client.zcard(key) for key in client.scan_iter(f"{portal.namespace}:slots:*"))
    finally:
        client.close()


def settled(portal: PortalServer, timeout: float = 10) -> None:
    """Wait until no slot is held (the edge hears of a hang-up, then gives it back)."""
    deadline = time.monotonic() + timeout
    while open_slots(portal) and time.monotonic() < deadline:
        time.sleep(0.05)


def node_load(node: SimnodeProcess) -> int:
    text = httpx.get(node.url + "/metrics").text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(("vllm:num_requests_running{",
                                       "vllm:num_requests_waiting{"))))


async def test_a_node_runs_its_slots_and_the_rest_wait_then_hear_429(setup) -> None:
    portal, node, key = setup
    headers = {"authorization": f"Bearer {key}"}
    peak = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                text = (await client.get(node.url + "/metrics")).text
                load = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith(("vllm:num_requests_running{",
                                               "vllm:num_requests_waiting{")))
                peak = max(peak, int(load))
                await asyncio.sleep(0.02)

    async def ask(client: httpx.AsyncClient, i: int) -> tuple[int, float, httpx.Response]:
        started = time.monotonic()
        response = await client.post("/v1/chat/completions", json={
            "model": MODEL, "max_tokens": 20,
            "messages": [{"role": "user", "content": f"question {i}"}]})
        return response.status_code, time.monotonic() - started, response

    watcher = asyncio.create_task(watch())
    # Fresh connections, so that both workers take calls (the kernel spreads them).
    clients = [httpx.AsyncClient(base_url=portal.url, headers=headers, timeout=60)
               for _ in range(8)]
    try:
        results = await asyncio.gather(*(ask(c, i) for i, c in enumerate(clients)))
    finally:
        stop.set()
        await watcher
        await asyncio.gather(*(c.aclose() for c in clients))
    statuses = sorted(status for status, _, _ in results)
    # Each call takes about a second (20 tokens at 20/s): in 1.5 s of waiting, two
    # rounds of two get through; the rest are refused.
    assert statuses.count(200) >= SLOTS, statuses
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses, statuses
    assert peak <= SLOTS, peak  # never more on the node than its slots, over both workers
    for status, elapsed, response in results:
        if status == 429:
            body = response.json()["error"]
            assert body["code"] == "nodes_busy" and body["type"] == "rate_limit_error"
            assert int(response.headers["retry-after"]) >= 1
            assert elapsed < WAIT + 1.0, elapsed  # waited its bound, not longer
    assert open_slots(portal) == 0  # every slot came back


async def test_a_client_that_goes_away_gives_its_slot_back(setup) -> None:
    portal, node, key = setup
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=portal.url, headers=headers, timeout=30) as client:
        async with client.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "max_tokens": 200, "stream": True,
                "messages": [{"role": "user", "content": "a long story"}]}) as response:
            assert response.status_code == 200
            async for _ in response.aiter_lines():
                break  # the first piece, then hang up
        await asyncio.to_thread(settled, portal)
    assert open_slots(portal) == 0
    assert node_load(node) <= SLOTS


async def test_a_chat_reply_says_busy_and_waits_for_a_slot(setup) -> None:
    portal, _, key = setup
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=portal.url, headers=headers, timeout=60) as client:
        long_calls = [asyncio.create_task(client.post("/v1/chat/completions", json={
            "model": MODEL, "max_tokens": 40, "ignore_eos": True,
            "messages": [{"role": "user", "content": f"hold {i}"}]})) for i in range(SLOTS)]
        await asyncio.sleep(0.5)  # both slots are taken: the node is full
        room = await ChatClient.connect(portal.url, "busy-room", key)
        try:
            await room.send(type="message", text="anyone free?", model=MODEL,
                            params={"max_tokens": 4})
            busy = await room.wait_for("status", timeout=15, kind="busy")
            assert MODEL in busy["message"]
            done = await room.wait_for("done", timeout=60)  # once a long call ends
        finally:
            await room.close()
        answers = await asyncio.gather(*long_calls)
    assert [a.status_code for a in answers] == [200] * SLOTS
    assert done["status"] == "done" and done["cost_micros"] > 0, done
    await asyncio.to_thread(settled, portal)
    assert open_slots(portal) == 0
