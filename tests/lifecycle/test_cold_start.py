"""Cold models: a burst boots one node; a queued job waits for it and is charged once."""

from __future__ import annotations

import asyncio
import time

import httpx

from simnode.testing import free_port
from simnode.tokenizer import chat_prompt_tokens
from tests.lifecycle.conftest import MODEL, Cluster
from tests.support.standard import expected_cost

MESSAGES = [{"role": "user", "content": "Wake up, please."}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8}


def test_a_burst_on_a_cold_model_boots_exactly_one_node(cluster: Cluster) -> None:
    kinds = ("g5.12xlarge", "g5.xlarge", "g5.2xlarge")
    instances = [cluster.moto.run_node(MODEL, kind, stopped=True) for kind in kinds]
    for instance, kind in zip(instances, kinds, strict=True):
        cluster.register(instance, free_port(), kind)
    _key_id, key = cluster.portal.create_key("5")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/v1/chat/completions", json=BODY,
                            headers={"authorization": f"Bearer {key}"}) for _ in range(100)))

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {503}
    assert {r.json()["error"]["code"] for r in responses} == {"model_warming"}
    assert all("is warming up" in r.json()["error"]["message"] for r in responses)
    assert all(int(r.headers["retry-after"]) > 0 for r in responses)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = {i: cluster.moto.state(i) for i in instances}
        if "running" in states.values():
            break
        time.sleep(0.2)
    time.sleep(2)  # give a second boot, if there were one, the time to happen
    states = {i: cluster.moto.state(i) for i in instances}
    assert list(states.values()).count("running") == 1, states
    assert states[instances[1]] == "running"  # the cheapest stopped node, g5.xlarge
    assert cluster.portal.log().count("Traceback") == 0


def test_a_job_waits_for_its_node_and_is_charged_once(cluster: Cluster) -> None:
    instance = cluster.moto.run_node(MODEL, stopped=True)
    port = free_port()
    node_id = cluster.register(instance, port)
    cluster.simnode_when_running(instance, port, "--startup-delay", "1")
    key_id, key = cluster.portal.create_key("1")
    headers = {"authorization": f"Bearer {key}"}
    before = httpx.get(cluster.url + "/v1/key", headers=headers).json()["data"]["balance_micros"]

    submitted = httpx.post(cluster.url + "/v1/jobs", json={**BODY, "deadline": 120},
                           headers=headers)
    assert submitted.status_code == 202
    job = submitted.json()
    assert job["status"] == "queued" and job["id"].startswith("job_")
    held = httpx.get(cluster.url + "/v1/key", headers=headers).json()["data"]["balance_micros"]
    assert held < before  # reserved at enqueue

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(cluster.url + f"/v1/jobs/{job['id']}?wait=10", headers=headers,
                        timeout=20).json()
        if job["status"] not in ("queued", "running"):
            break
    assert job["status"] == "succeeded", job
    assert job["result"]["usage"]["completion_tokens"] == 8
    assert job["result"]["model"] == MODEL
    cost = expected_cost(chat_prompt_tokens(MESSAGES), 8)
    deadline = time.monotonic() + 10
    while "cost_micros" not in job and time.monotonic() < deadline:
        job = httpx.get(cluster.url + f"/v1/jobs/{job['id']}", headers=headers).json()
    assert job["cost_micros"] == cost
    after = httpx.get(cluster.url + "/v1/key", headers=headers).json()["data"]["balance_micros"]
    assert after == before - cost
    assert cluster.node(node_id)["state"] == "running"

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not cluster.sql(
            "SELECT 1 FROM ledger WHERE account_id=? AND kind='usage'", key_id):
        time.sleep(0.1)
    ledger = cluster.sql("SELECT amount, reference FROM ledger WHERE account_id=? AND kind='usage'",
                         key_id)
    assert ledger == [(-cost, "usage:req_" + job["id"].removeprefix("job_"))]
    # The model's boot time was measured, for the next Retry-After.
    (boot_seconds,), = cluster.sql("SELECT boot_seconds FROM llm_models WHERE name=?", MODEL)
    assert boot_seconds is not None and boot_seconds > 0.9


def test_jobs_belong_to_their_key(cluster: Cluster) -> None:
    _a, alice = cluster.portal.create_key("1")
    _b, bob = cluster.portal.create_key("1")
    job = httpx.post(cluster.url + "/v1/jobs", json=BODY,
                     headers={"authorization": f"Bearer {alice}"}).json()
    peek = httpx.get(cluster.url + f"/v1/jobs/{job['id']}",
                     headers={"authorization": f"Bearer {bob}"})
    assert peek.status_code == 404
    assert httpx.get(cluster.url + f"/v1/jobs/{job['id']}",
                     headers={"authorization": f"Bearer {alice}"}).status_code == 200


def test_job_input_errors(cluster: Cluster) -> None:
    _key_id, key = cluster.portal.create_key("1")
    headers = {"authorization": f"Bearer {key}"}
    for body, param in (({**BODY, "deadline": 0}, "deadline"),
                        ({**BODY, "endpoint": "embeddings"}, "endpoint"),
                        ({**BODY, "stream": True}, "stream"),
                        ({**BODY, "model": "nope"}, "model")):
        response = httpx.post(cluster.url + "/v1/jobs", json=body, headers=headers)
        assert response.status_code in (400, 404)
        assert response.json()["error"]["param"] == param
    bad_wait = httpx.get(cluster.url + "/v1/jobs/job_x?wait=abc", headers=headers)
    assert bad_wait.status_code == 400


def test_a_job_past_its_deadline_expires_and_costs_nothing(cluster: Cluster) -> None:
    _key_id, key = cluster.portal.create_key("1")  # the model has no node at all
    headers = {"authorization": f"Bearer {key}"}
    job = httpx.post(cluster.url + "/v1/jobs", json={**BODY, "deadline": 2},
                     headers=headers).json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = httpx.get(cluster.url + f"/v1/jobs/{job['id']}?wait=5", headers=headers,
                        timeout=10).json()
        if job["status"] == "expired" and "cost_micros" in job:
            break
    assert job["status"] == "expired" and job["cost_micros"] == 0
    assert job["error"]["code"] == "job_expired"
    balance = httpx.get(cluster.url + "/v1/key", headers=headers).json()["data"]
    assert balance["balance_micros"] == 1_000_000


def test_a_job_whose_credit_vanished_fails_instead_of_running_free(cluster: Cluster) -> None:
    import redis

    from simnode.testing import start_simnode

    cluster.portal.stop_child("worker")
    with start_simnode("--model", MODEL) as node:
        cluster.portal.cli("nodes", "add", "--model", MODEL, "--url", node.url)
        _key_id, key = cluster.portal.create_key("1")
        headers = {"authorization": f"Bearer {key}"}
        job = httpx.post(cluster.url + "/v1/jobs", json=BODY, headers=headers).json()
        client = redis.Redis.from_url(cluster.portal.redis_url)
        request_id = "req_" + job["id"].removeprefix("job_")
        assert client.delete(f"{cluster.portal.namespace}:resv:{request_id}") == 1
        cluster.portal.start_worker("worker2")
        deadline = time.monotonic() + 30
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            job = httpx.get(cluster.url + f"/v1/jobs/{job['id']}?wait=5", headers=headers,
                            timeout=10).json()
        assert job["status"] == "failed" and job["error"]["code"] == "reservation_lost"
        assert served_requests(node) == 0


def served_requests(node) -> int:
    import re

    text = httpx.get(node.url + "/metrics").text
    return int(sum(float(v) for v in re.findall(
        r"vllm:request_success_total\{[^}]*\} (\S+)", text)))
