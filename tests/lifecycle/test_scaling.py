"""The scaler against moto's EC2 over HTTP: scale out under load and in when it falls,
capacity refusals that try the next instance type, spot with an on-demand floor, and a
spot interruption that drains its node and launches the replacement."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from simnode.testing import free_port, start_simnode
from tests.lifecycle.conftest import MODEL, Cluster, open_cluster
from tests.support.ec2_gate import Ec2Gate, ec2_gate
from tests.support.moto import MotoServer


@pytest.fixture
def gate(moto: MotoServer) -> Iterator[Ec2Gate]:
    with ec2_gate(moto.url) as made:
        yield made


@pytest.fixture
def gated(tmp_path, redis_url: str, moto: MotoServer, gate: Ec2Gate) -> Iterator[Cluster]:
    """A cluster whose EC2 calls go through the gate (one try each: no backoff)."""
    with open_cluster(tmp_path, redis_url, moto, **gate.env, PORTAL_EC2_ATTEMPTS="1") as made:
        yield made


def policy(cluster: Cluster, *args: str) -> dict:
    return cluster.portal.cli_json("models", "policy", MODEL, *args, "--json")


def wait_for(check, timeout: float = 30, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {check}")
        time.sleep(every)


def serve_launched(cluster: Cluster, node_id: int, *args: str) -> None:
    """What vLLM coming up on a launched instance looks like here: a simnode once moto
    says the instance runs, at an address the node row is pointed to."""
    row = cluster.node(node_id)
    port = free_port()
    wait_for(lambda: cluster.moto.state(row["instance_id"]) == "running")
    cluster.nodes.append(start_simnode("--model", MODEL, *args, port=port))
    cluster.portal.cli("nodes", "add", "--model", MODEL, "--url", f"http://127.0.0.1:{port}",
                       "--instance-id", row["instance_id"])


async def _streams(cluster: Cluster, key: str, count: int, tokens: int) -> list[int]:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=60,
                                 headers={"authorization": f"Bearer {key}"}) as client:
        async def one(i: int) -> int:
            response = await client.post("/v1/chat/completions", json={
                "model": MODEL, "max_tokens": tokens, "ignore_eos": True,
                "messages": [{"role": "user", "content": f"load {i}"}]})
            return response.status_code
        return await asyncio.gather(*(one(i) for i in range(count)))


def test_load_boots_a_second_node_and_its_fall_drains_one(cluster: Cluster) -> None:
    policy(cluster, "--max-nodes", "2", "--target-load", "1", "--scale-out-after", "1",
           "--scale-in-after", "3", "--idle-ttl", "0", "--node-slots", "8")
    first, second = cluster.moto.run_node(MODEL), cluster.moto.run_node(MODEL, stopped=True)
    first_port, second_port = free_port(), free_port()
    first_id = cluster.register(first, first_port)
    second_id = cluster.register(second, second_port)
    cluster.nodes.append(start_simnode("--model", MODEL, "--tokens-per-second", "10",
                                       port=first_port))
    cluster.simnode_when_running(second, second_port, "--tokens-per-second", "10")
    cluster.portal.spawn("scheduler", "scheduler")  # syncs, checks health, scales
    cluster.wait_node(first_id, state="running", healthy=True, timeout=15)
    cluster.wait_node(second_id, state="stopped", timeout=15)
    _, key = cluster.portal.create_key("10")

    # Four calls of about 8 s on one node: a load of 4 over a target of 1.
    statuses = asyncio.run(_streams(cluster, key, 4, 80))
    assert statuses == [200] * 4
    row = cluster.wait_node(second_id, state="running", healthy=True, timeout=30)
    assert cluster.moto.state(second) == "running"
    assert row["note"] == "" and cluster.node(first_id)["state"] == "running"
    status = policy(cluster)["scaling_status"]
    assert status  # the scaler says what it did last

    # No load: after 3 s below the target one node is drained and stopped, the dearer
    # (the same price: the newer), and the other stays.
    wait_for(lambda: any(cluster.node(n)["state"] == "stopped" for n in (first_id, second_id)),
             timeout=40)
    states = sorted(cluster.node(n)["state"] for n in (first_id, second_id))
    assert states == ["running", "stopped"]
    time.sleep(3)  # more rounds change nothing: min 0, but the idle TTL is off
    assert sorted(cluster.node(n)["state"] for n in (first_id, second_id)) == states


def test_a_model_quiet_for_longer_than_twice_its_boot_stops_before_its_idle_ttl(
        cluster: Cluster) -> None:
    policy(cluster, "--idle-ttl", "1800", "--node-slots", "8")
    cluster.sql("UPDATE llm_models SET boot_seconds = 2 WHERE name = ?", MODEL)  # measured
    instance = cluster.moto.run_node(MODEL)
    port = free_port()
    node_id = cluster.register(instance, port)
    cluster.nodes.append(start_simnode("--model", MODEL, port=port))
    cluster.portal.spawn("scheduler", "scheduler")  # decides every second
    cluster.wait_node(node_id, state="running", healthy=True, timeout=15)
    _, key = cluster.portal.create_key("10")

    # Six quiet seconds, then a call: a spell of three boots, as the scaler saw it.
    time.sleep(6)
    assert cluster.node(node_id)["state"] == "running"  # no habit known yet: kept
    assert asyncio.run(_streams(cluster, key, 1, 4)) == [200]
    # Quiet again for a boot's time: the node goes, 30 minutes before its idle TTL would
    # have stopped it; the scaler's log says why.
    cluster.wait_node(node_id, state="stopped", timeout=30)
    assert cluster.moto.state(instance) == "stopped"
    assert "its quiet spells last about" in (cluster.portal.root / "worker.log").read_text()


def test_work_for_a_cold_model_launches_from_its_plan_trying_the_next_type(
        gated: Cluster, gate: Ec2Gate) -> None:
    image = gated.moto.image()
    policy(gated, "--max-nodes", "1", "--instance-type", "g5.xlarge", "--instance-type",
           "g6.xlarge", "--image-id", image)  # no subnet: the default one
    gate.scarce = {"g5.xlarge"}
    gated.portal.spawn("scheduler", "scheduler")
    _, key = gated.portal.create_key("10")
    headers = {"authorization": f"Bearer {key}"}
    job = httpx.post(gated.url + "/v1/jobs", headers=headers, json={
        "model": MODEL, "max_tokens": 5,
        "messages": [{"role": "user", "content": "queued while a node is launched"}]}).json()
    assert job["status"] == "queued", job

    nodes = wait_for(lambda: gated.admin("GET", "/nodes").json()["data"], timeout=30)
    (node,) = nodes
    assert node["instance_type"] == "g6.xlarge" and not node["spot"]
    assert "g5.xlarge: InsufficientInstanceCapacity" in node["note"], node
    assert gate.refused == ["g5.xlarge"]
    instance = gated.moto.ec2().describe_instances(InstanceIds=[node["instance_id"]])
    assert instance["Reservations"][0]["Instances"][0]["InstanceType"] == "g6.xlarge"

    serve_launched(gated, node["id"])
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        job = httpx.get(gated.url + f"/v1/jobs/{job['id']}?wait=5", headers=headers,
                        timeout=10).json()
    assert job["status"] == "succeeded", job  # queued while warming, answered once up


def test_every_type_refused_is_said_and_nothing_is_launched(
        gated: Cluster, gate: Ec2Gate) -> None:
    policy(gated, "--max-nodes", "1", "--instance-type", "g5.xlarge", "--image-id",
           gated.moto.image())
    gate.scarce = {"g5.xlarge"}
    gated.portal.spawn("scheduler", "scheduler")
    _, key = gated.portal.create_key("10")
    httpx.post(gated.url + "/v1/jobs", headers={"authorization": f"Bearer {key}"}, json={
        "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    status = wait_for(lambda: "no capacity" in policy(gated)["scaling_status"]
                      and policy(gated)["scaling_status"], timeout=30)
    assert "g5.xlarge: InsufficientInstanceCapacity" in status
    assert gated.admin("GET", "/nodes").json()["data"] == []


def test_a_spot_launch_falls_back_to_on_demand_when_spot_is_scarce(
        gated: Cluster, gate: Ec2Gate) -> None:
    gate.scarce = {"spot"}
    answer = gated.admin("POST", "/nodes", json={
        "model": MODEL, "instance_type": "g5.xlarge", "image_id": gated.moto.image(),
        "spot": True})
    assert answer.status_code == 202, answer.text
    (node,) = wait_for(lambda: gated.admin("GET", "/nodes").json()["data"], timeout=30)
    assert not node["spot"] and "g5.xlarge (spot): InsufficientInstanceCapacity" in node["note"]


def test_a_spot_interruption_drains_the_node_and_launches_its_replacement(
        cluster: Cluster) -> None:
    image = cluster.moto.image()
    policy(cluster, "--max-nodes", "3", "--spot", "--on-demand-floor", "1",
           "--instance-type", "g5.xlarge", "--image-id", image)
    # The floor: one on-demand node serving.
    floor = cluster.moto.run_node(MODEL)
    floor_port = free_port()
    floor_id = cluster.register(floor, floor_port)
    cluster.nodes.append(start_simnode("--model", MODEL, port=floor_port))
    cluster.portal.spawn("scheduler", "scheduler")
    cluster.wait_node(floor_id, state="running", healthy=True, timeout=15)
    # A spot node above it, launched as an operator would.
    cluster.portal.cli("nodes", "launch", "--model", MODEL, "--instance-type", "g5.xlarge",
                       "--image-id", image, "--spot")
    spot = wait_for(lambda: [n for n in cluster.admin("GET", "/nodes").json()["data"]
                             if n["spot"]], timeout=30)[0]
    lifecycle = cluster.moto.ec2().describe_instances(InstanceIds=[spot["instance_id"]])
    assert lifecycle["Reservations"][0]["Instances"][0]["InstanceLifecycle"] == "spot"
    serve_launched(cluster, spot["id"])
    cluster.wait_node(spot["id"], state="running", healthy=True, timeout=30)

    event = {"version": "0", "source": "aws.ec2", "region": "us-east-1",
             "detail-type": "EC2 Spot Instance Interruption Warning",
             "detail": {"instance-id": spot["instance_id"], "instance-action": "terminate"}}
    answer = cluster.admin("POST", "/fleet/events", json=event)
    assert answer.status_code == 202 and answer.json()["handled"], answer.text
    assert cluster.admin("POST", "/fleet/events", json=event).status_code == 202  # again
    # Out of routing at once, then gone; a replacement above the floor is spot again.
    gone = cluster.wait_node(spot["id"], state="terminated", timeout=40)
    assert gone["note"].startswith("interrupted: spot interruption notice"), gone
    assert cluster.moto.state(spot["instance_id"]) in ("terminated", "shutting-down")
    replacements = [n for n in cluster.admin("GET", "/nodes").json()["data"]
                    if "replaces node" in n["note"]]
    assert len(replacements) == 1, replacements  # heard twice, replaced once
    assert replacements[0]["spot"] and f"replaces node {spot['id']}" in replacements[0]["note"]
    assert cluster.node(floor_id)["state"] == "running"
    # Events that are not interruptions, or name no node, change nothing.
    other = cluster.admin("POST", "/fleet/events", json={"detail-type": "EC2 Instance "
                          "State-change Notification", "detail": {"instance-id": "i-1"}})
    assert other.status_code == 200 and not other.json()["handled"]
    unknown = cluster.admin("POST", "/fleet/events", json={**event, "detail": {
        "instance-id": "i-00000000"}})
    assert unknown.status_code == 200 and not unknown.json()["handled"]
    bad = cluster.admin("POST", "/fleet/events", json={**event, "detail": {}})
    assert bad.status_code == 400


def test_the_policy_is_checked_by_the_cli_and_the_admin_api(cluster: Cluster) -> None:
    refused = cluster.portal.cli("models", "policy", MODEL, "--min-nodes", "3",
                                 "--max-nodes", "2", check=False)
    assert refused.returncode != 0 and "min_nodes" in refused.stderr
    answer = cluster.admin("PATCH", f"/models/{MODEL}/policy", json={"target_load": "high"})
    assert answer.status_code == 400 and "target_load" in answer.json()["error"]["message"]
    answer = cluster.admin("PATCH", f"/models/{MODEL}/policy",
                           json={"max_nodes": 4, "launch": {"instance_types": ["g6.xlarge"]}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["max_nodes"] == 4
    assert cluster.admin("GET", f"/models/{MODEL}/policy").json()["launch"] == {
        "instance_types": ["g6.xlarge"]}
    assert cluster.admin("GET", "/models/nope/policy").status_code == 404
    assert httpx.get(cluster.url + f"/admin/models/{MODEL}/policy").status_code == 401
