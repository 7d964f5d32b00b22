"""One metered call for the API, chat and jobs, through real processes.

Two nodes serve the model; the first refuses one call with vLLM's 503 (simnode's
fault injection) and is tried first, being the lower id at equal load. Each
caller — an API call (whole and streamed), a chat reply, a job — must succeed on
the second node, be charged once, leave the refusing node marked down, and show
in the request, token and spend series; a node failing mid-reply in chat is
recorded as a node failure (502), not as a client's cancel.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simnode.testing import SimnodeProcess, free_port, start_simnode
from tests.support.chat import ChatClient
from tests.support.portal import PortalServer
from tests.support.services import sql_query

MODEL = "retry-model"
COOL_DOWN = 1.5  # seconds a refusing node is skipped (PORTAL_NODE_COOL_DOWN)
_asked = itertools.count()


def body() -> dict:
    """A request whose prompt no earlier one shares, so that it goes to the least loaded
    node, not to the one its prefix is remembered on (cache-affine routing)."""
    return {"model": MODEL, "messages": [{"role": "user", "content": f"hi {next(_asked)}"}],
            "max_tokens": 5}


class Fleet:
    def __init__(self, portal: PortalServer, refusing: SimnodeProcess, healthy: SimnodeProcess,
                 ids: tuple[int, int], metrics_port: int) -> None:
        self.portal = portal
        self.refusing, self.healthy = refusing, healthy
        self.refusing_id, self.healthy_id = ids
        self.metrics_port = metrics_port
        self.key_id, self.key = portal.create_key("10")

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def refuse_next(self, status: int = 503) -> None:
        """The refusing node answers ``status`` once, after its cool-down from the last."""
        time.sleep(COOL_DOWN + 0.2)
        response = httpx.post(self.refusing.url + "/sim/faults",
                              json={"fail_status": status, "fail_count": 1})
        assert response.status_code == 200, response.text

    def set_faults(self, **faults: object) -> None:
        for node in (self.refusing, self.healthy):
            assert httpx.post(node.url + "/sim/faults", json=faults).status_code == 200

    def refusal_used(self) -> bool:
        faults = httpx.get(self.refusing.url + "/sim/faults").json()
        return faults["fail_count"] == 0

    def sql(self, query: str, *params: object) -> list[tuple]:
        return sql_query(f"sqlite://{self.portal.root / 'data' / 'portal.sqlite3'}", query,
                         *params)

    def usage(self, request_id: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql("SELECT node_id, status, cancelled, cost, endpoint FROM usage_log "
                            "WHERE request_id=?", request_id)
            if rows:
                node, status, cancelled, cost, endpoint = rows[0]
                return {"node": node, "status": status, "cancelled": bool(cancelled),
                        "cost": cost, "endpoint": endpoint}
            time.sleep(0.05)
        raise TimeoutError(f"no usage row for {request_id}")

    def balance(self) -> int:
        response = httpx.get(self.portal.url + "/v1/key", headers=self.headers)
        return response.json()["data"]["balance_micros"]

    def books_balance(self) -> None:
        """SQL's balance is the sum of the key's ledger, and every usage row is in it."""
        deadline = time.monotonic() + 10
        while True:
            (balance,), = self.sql("SELECT balance FROM accounts WHERE id=?", self.key_id)
            (ledger,), = self.sql("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account_id=?",
                                  self.key_id)
            (spent,), = self.sql("SELECT COALESCE(SUM(cost), 0) FROM usage_log WHERE key_id=?",
                                 self.key_id)
            if balance == ledger == 10_000_000 - spent and balance == self.balance():
                return
            if time.monotonic() > deadline:
                raise AssertionError((balance, ledger, spent, self.balance()))
            time.sleep(0.1)


def series(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("retries")
    metrics_port = free_port()
    with start_simnode("--model", MODEL) as refusing, \
            start_simnode("--model", MODEL, "--tokens-per-second", "200") as healthy:
        portal = PortalServer(root, redis_url, workers=1, env={
            "PORTAL_NODE_COOL_DOWN": str(COOL_DOWN),
            "PORTAL_WORKER_METRICS_PORT": str(metrics_port)})
        portal.cli("migrate")
        portal.add_model(MODEL)
        ids = (portal.add_node(MODEL, refusing.url), portal.add_node(MODEL, healthy.url))
        with portal:
            portal.start_worker(processes=1, threads=2)
            yield Fleet(portal, refusing, healthy, ids, metrics_port)


@pytest.mark.parametrize("stream", [False, True])
def test_an_api_call_refused_by_one_node_is_answered_by_another_and_charged_once(
        fleet: Fleet, stream: bool) -> None:
    fleet.refuse_next()
    before = fleet.balance()
    response = httpx.post(fleet.portal.url + "/v1/chat/completions", headers=fleet.headers,
                          json={**body(), "stream": stream}, timeout=30)
    assert response.status_code == 200, response.text
    assert fleet.refusal_used()  # the first node was tried, and refused
    usage = fleet.usage(response.headers["x-request-id"])
    assert usage["node"] == fleet.healthy_id and usage["status"] == 200
    assert usage["cost"] > 0 and fleet.balance() == before - usage["cost"]
    # Marked down: while it cools down, calls go to the other node without trying it.
    again = httpx.post(fleet.portal.url + "/v1/chat/completions", headers=fleet.headers,
                       json=body(), timeout=30)
    assert fleet.usage(again.headers["x-request-id"])["node"] == fleet.healthy_id
    fleet.books_balance()


async def test_a_chat_reply_refused_by_one_node_is_answered_by_another(fleet: Fleet) -> None:
    await asyncio.to_thread(fleet.refuse_next)
    before = fleet.balance()
    client = await ChatClient.connect(fleet.portal.url, "retried", fleet.key)
    try:
        await client.send(type="message", text="Hello?", model=MODEL,
                          params={"max_tokens": 5})
        done = await client.wait_for("done", timeout=30)
    finally:
        await client.close()
    assert done["status"] == "done" and done["cost_micros"] > 0, done
    assert await asyncio.to_thread(fleet.refusal_used)
    (request_id,), = fleet.sql("SELECT request_id FROM chat_messages WHERE id=?",
                               done["reply_id"])
    usage = await asyncio.to_thread(fleet.usage, request_id)
    assert usage == {"node": fleet.healthy_id, "status": 200, "cancelled": False,
                     "cost": done["cost_micros"], "endpoint": "chat-room"}
    assert fleet.balance() == before - done["cost_micros"]


def test_a_job_refused_by_one_node_is_answered_by_another(fleet: Fleet) -> None:
    fleet.refuse_next()
    before = fleet.balance()
    job = httpx.post(fleet.portal.url + "/v1/jobs", headers=fleet.headers, json=body()).json()
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running") or "cost_micros" not in job:
        assert time.monotonic() < deadline, job
        job = httpx.get(fleet.portal.url + f"/v1/jobs/{job['id']}?wait=5",
                        headers=fleet.headers, timeout=10).json()
    assert job["status"] == "succeeded", job
    assert fleet.refusal_used()
    (request_id, node_id), = fleet.sql("SELECT request_id, node_id FROM jobs WHERE id=?",
                                       job["id"])
    assert node_id == fleet.healthy_id
    usage = fleet.usage(request_id)
    assert usage["node"] == fleet.healthy_id and usage["status"] == 200
    assert usage["cost"] == job["cost_micros"] > 0
    assert fleet.balance() == before - job["cost_micros"]
    fleet.books_balance()


async def test_a_node_failing_mid_reply_is_a_node_failure_in_the_usage_log(
        fleet: Fleet) -> None:
    await asyncio.to_thread(fleet.refuse_next)  # let the first node cool down
    await asyncio.to_thread(fleet.set_faults, fail_after=2, fail_status=None)
    try:
        client = await ChatClient.connect(fleet.portal.url, "broken", fleet.key)
        try:
            await client.send(type="message", text="Tell me more.", model=MODEL,
                              params={"max_tokens": 20})
            done = await client.wait_for("done", timeout=30)
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(fleet.set_faults, fail_after=None)
    assert done["status"] == "failed", done
    assert done["usage"]["completion_tokens"] == 2  # what the room received, charged
    (request_id,), = fleet.sql("SELECT request_id FROM chat_messages WHERE id=?",
                               done["reply_id"])
    usage = await asyncio.to_thread(fleet.usage, request_id)
    assert usage["status"] == 502 and not usage["cancelled"], usage
    assert usage["cost"] == done["cost_micros"] > 0


def test_chat_replies_and_jobs_are_in_the_request_token_and_spend_series(
        fleet: Fleet) -> None:
    edge = httpx.get(fleet.portal.url + "/metrics").text
    assert series(edge, "portal_requests_total", endpoint="chat-room", model=MODEL,
                  status="200") >= 1
    assert series(edge, "portal_requests_total", endpoint="chat-room", status="502") >= 1
    assert series(edge, "portal_requests_total", endpoint="chat", status="200") >= 2
    assert series(edge, "portal_upstream_errors_total", node=str(fleet.refusing_id),
                  kind="503") >= 3
    assert series(edge, "portal_tokens_total", model=MODEL, kind="completion") > 0
    assert series(edge, "portal_spend_micro_dollars_total", model=MODEL) > 0
    worker = httpx.get(f"http://127.0.0.1:{fleet.metrics_port}/metrics").text

    assert series(worker, "portal_requests_total", endpoint="job-chat", model=MODEL,
                  status="200") >= 1
    assert series(worker, "portal_upstream_errors_total", node=str(fleet.refusing_id),
                  kind="503") >= 1
    assert series(worker, "portal_spend_micro_dollars_total", model=MODEL) > 0
