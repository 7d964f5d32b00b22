"""Workers killed mid-job, idle nodes stopped, unhealthy nodes out of routing."""

from __future__ import annotations

import re
import threading
import time

import httpx

from simnode.testing import free_port, start_simnode
from tests.lifecycle.conftest import MODEL, Cluster

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Take your time."}],
        "max_tokens": 30, "ignore_eos": True}


def served(node) -> int:
    """Requests a simnode has finished (its own Prometheus counter)."""
    text = httpx.get(node.url + "/metrics").text
    return int(sum(float(v) for v in re.findall(r"vllm:request_success_total\{[^}]*\} (\S+)",
                                                 text)))


def test_a_worker_killed_mid_job_loses_nothing_and_charges_once(cluster: Cluster) -> None:
    node = start_simnode("--model", MODEL, "--tokens-per-second", "10")
    cluster.nodes.append(node)
    cluster.portal.cli("nodes", "add", "--model", MODEL, "--url", node.url)
    key_id, key = cluster.portal.create_key("1")
    headers = {"authorization": f"Bearer {key}"}
    before = httpx.get(cluster.url + "/v1/key", headers=headers).json()["data"]["balance_micros"]
    job = httpx.post(cluster.url + "/v1/jobs", json=BODY, headers=headers).json()

    deadline = time.monotonic() + 20
    while httpx.get(cluster.url + f"/v1/jobs/{job['id']}",
                    headers=headers).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the node is generating for it now
    cluster.portal.kill("worker")

    cluster.portal.start_worker("worker2")
    cluster.portal.spawn("scheduler", "scheduler")  # its sweep finds the orphaned job
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(cluster.url + f"/v1/jobs/{job['id']}?wait=5", headers=headers,
                        timeout=10).json()
        if job["status"] == "succeeded" and "cost_micros" in job:
            break
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["result"]["usage"]["completion_tokens"] == 30

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not cluster.sql(
            "SELECT 1 FROM ledger WHERE account_id=? AND kind='usage'", key_id):
        time.sleep(0.1)
    charges = cluster.sql("SELECT amount FROM ledger WHERE account_id=? AND kind='usage'", key_id)
    assert charges == [(-job["cost_micros"],)]
    after = httpx.get(cluster.url + "/v1/key", headers=headers).json()["data"]["balance_micros"]
    assert after == before - job["cost_micros"]
    (usage_rows,), = cluster.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=?", key_id)
    assert usage_rows == 1


def test_autostop_stops_the_idle_model_and_spares_the_busy_one(cluster: Cluster) -> None:
    cluster.portal.cli("models", "add", "busy", "--input-price", "1", "--output-price", "1",
                       "--idle-ttl", "2")
    cluster.portal.cli("models", "add", MODEL, "--input-price", "0.5", "--output-price", "1.5",
                       "--idle-ttl", "2")
    idle_instance = cluster.moto.run_node(MODEL)
    busy_instance = cluster.moto.run_node("busy")
    idle_port, busy_port = free_port(), free_port()
    cluster.nodes.append(start_simnode("--model", MODEL, port=idle_port))
    cluster.nodes.append(start_simnode("--model", "busy", "--tokens-per-second", "4",
                                       port=busy_port))
    idle_id = cluster.register(idle_instance, idle_port)
    busy_id = cluster.portal.cli_json(
        "nodes", "add", "--model", "busy", "--url", f"http://127.0.0.1:{busy_port}",
        "--instance-id", busy_instance, "--instance-type", "g5.xlarge")["id"]
    cluster.portal.cli("nodes", "sync")  # EC2 says they run
    cluster.wait_node(idle_id, state="running")
    cluster.wait_node(busy_id, state="running")
    cluster.portal.cli("nodes", "health")
    cluster.wait_node(idle_id, healthy=True)
    cluster.wait_node(busy_id, healthy=True)
    _key_id, key = cluster.portal.create_key("1")

    finished = threading.Event()
    statuses: list[int] = []

    def long_request() -> None:
        statuses.append(httpx.post(cluster.url + "/v1/chat/completions",
                                   json={**BODY, "model": "busy", "max_tokens": 36},
                                   headers={"authorization": f"Bearer {key}"},
                                   timeout=60).status_code)
        finished.set()

    threading.Thread(target=long_request, daemon=True).start()
    cluster.portal.spawn("scheduler", "scheduler")
    cluster.wait_node(idle_id, state="stopped", timeout=30)
    assert cluster.moto.state(idle_instance) == "stopped"
    assert not finished.is_set()  # the busy model's request is still going
    assert cluster.node(busy_id)["state"] == "running"
    assert cluster.moto.state(busy_instance) == "running"
    assert finished.wait(30) and statuses == [200]  # it was served to the end


def test_unhealthy_nodes_leave_routing_and_come_back(cluster: Cluster) -> None:
    first = start_simnode("--model", MODEL)
    second = start_simnode("--model", MODEL)
    cluster.nodes += [first, second]
    first_id = cluster.portal.cli_json("nodes", "add", "--model", MODEL, "--url",
                                       first.url)["id"]
    cluster.portal.cli_json("nodes", "add", "--model", MODEL, "--url", second.url)
    _key_id, key = cluster.portal.create_key("5")
    headers = {"authorization": f"Bearer {key}"}
    body = {**BODY, "max_tokens": 2}

    def send(count: int) -> list[int]:
        return [httpx.post(cluster.url + "/v1/chat/completions", json=body,
                           headers=headers).status_code for _ in range(count)]

    time.sleep(0.3)
    assert send(10) == [200] * 10
    httpx.post(first.url + "/sim/faults", json={"health_status": 503})
    cluster.portal.cli("nodes", "health")
    cluster.wait_node(first_id, healthy=False, timeout=15)
    time.sleep(0.5)
    before = served(first)
    assert send(20) == [200] * 20
    assert served(first) == before  # nothing went to the unhealthy node

    httpx.post(second.url + "/sim/faults", json={"health_status": 503})
    httpx.post(first.url + "/sim/faults", json={"health_status": 200})
    cluster.portal.cli("nodes", "health")
    cluster.wait_node(first_id, healthy=True, timeout=15)
    time.sleep(1.0)
    before = served(first)
    assert send(10) == [200] * 10
    assert served(first) == before + 10  # the recovered node took the traffic back


def test_autostop_keeps_min_warm_nodes_and_stops_the_dearest(cluster: Cluster) -> None:
    cluster.portal.cli("models", "add", MODEL, "--input-price", "0.5", "--output-price", "1.5",
                       "--idle-ttl", "1", "--min-warm", "1")
    big, small = cluster.moto.run_node(MODEL, "g5.12xlarge"), cluster.moto.run_node(MODEL)
    big_id = cluster.register(big, free_port(), "g5.12xlarge")
    small_id = cluster.register(small, free_port(), "g5.xlarge")
    cluster.portal.cli("nodes", "sync")
    cluster.wait_node(big_id, state="running")
    cluster.wait_node(small_id, state="running")
    cluster.portal.spawn("scheduler", "scheduler")
    cluster.wait_node(big_id, state="stopped", timeout=30)
    assert cluster.moto.state(big) == "stopped"
    time.sleep(2)  # more rounds of the scheduler change nothing
    assert cluster.node(small_id)["state"] == "running"
    assert cluster.moto.state(small) == "running"


def test_a_node_serving_a_longer_context_bounds_jobs_then_raises_the_catalogue(
        cluster: Cluster) -> None:
    """A catalogue that says less context than a node serves: a job may not ask for
    more than the catalogue's context, and the health check corrects the catalogue."""
    short = "m-short"
    cluster.portal.add_model(short, served_name=MODEL, context=40)
    node = start_simnode("--model", MODEL, "--max-model-len", "4096")
    cluster.nodes.append(node)
    cluster.portal.add_node(short, node.url)
    assert cluster.sql("SELECT context_length FROM llm_models WHERE name=?",
                       short) == [(4096,)]  # adding the node asked it
    cluster.portal.add_model(short, served_name=MODEL, context=40)  # an operator's edit
    key_id, key = cluster.portal.create_key("0.01")
    headers = {"authorization": f"Bearer {key}"}
    time.sleep(0.5)  # the edge workers hear of the edit
    refused = httpx.post(cluster.url + "/v1/jobs", headers=headers,
                         json={**BODY, "model": short, "max_tokens": 500})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    job = httpx.post(cluster.url + "/v1/jobs", headers=headers,
                     json={**BODY, "model": short, "max_tokens": 40}).json()
    job = httpx.get(cluster.url + f"/v1/jobs/{job['id']}?wait=20", headers=headers,
                    timeout=30).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["usage"]["completion_tokens"] == 40

    cluster.portal.cli("nodes", "health")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and cluster.sql(
            "SELECT context_length FROM llm_models WHERE name=?", short) != [(4096,)]:
        time.sleep(0.1)
    assert cluster.sql("SELECT context_length FROM llm_models WHERE name=?", short) == [(4096,)]
    listed = httpx.get(cluster.url + f"/v1/models/{short}").json()
    assert listed["context_length"] == 4096, listed
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not cluster.sql(
            "SELECT 1 FROM ledger WHERE account_id=? AND kind='usage'", key_id):
        time.sleep(0.1)
    # The job answers "succeeded" as soon as its result is stored; its charge is settled
    # just after: read it again once the ledger has it.
    settled = httpx.get(cluster.url + f"/v1/jobs/{job['id']}", headers=headers).json()
    assert settled["cost_micros"] > 0, settled
    assert cluster.sql("SELECT amount FROM ledger WHERE account_id=? AND kind='usage'",
                       key_id) == [(-settled["cost_micros"],)]


def test_jobs_waiting_for_a_node_do_not_starve_its_boot(cluster: Cluster) -> None:
    """More jobs wait for a stopped node than the worker has threads: the boot still
    runs (a waiting job gives its thread back), and every job is answered."""
    node = start_simnode("--model", MODEL)
    cluster.nodes.append(node)
    node_id = cluster.portal.add_node(MODEL, node.url)
    cluster.portal.kill("worker")
    cluster.portal.start_worker("few-threads", threads=2)
    cluster.portal.cli("nodes", "stop", str(node_id), "--wait", "20")
    _key_id, key = cluster.portal.create_key("1")
    headers = {"authorization": f"Bearer {key}"}
    jobs = [httpx.post(cluster.url + "/v1/jobs", headers=headers,
                       json={**BODY, "max_tokens": 3, "deadline": 120}).json()
            for _ in range(6)]
    assert all(job["status"] == "queued" for job in jobs), jobs
    time.sleep(1.0)  # the worker's two threads now hold waiting jobs

    booted = cluster.portal.cli("nodes", "boot", str(node_id), "--wait", "30", check=False)

    assert booted.returncode == 0, booted.stdout + booted.stderr
    for job in jobs:
        done = httpx.get(cluster.url + f"/v1/jobs/{job['id']}?wait=30", headers=headers,
                         timeout=40).json()
        assert done["status"] == "succeeded", done
        assert done["result"]["usage"]["completion_tokens"] == 3
