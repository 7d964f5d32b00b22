"""Launch, boot, stop, reboot, terminate, drain and sync: real actors on moto's EC2."""

from __future__ import annotations

import time

import httpx

from simnode.testing import free_port, start_simnode
from tests.lifecycle.conftest import ADMIN, MODEL, Cluster


def test_admin_api_needs_the_token(cluster: Cluster) -> None:
    assert httpx.get(cluster.url + "/admin/nodes").status_code == 401
    wrong = httpx.get(cluster.url + "/admin/nodes", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_admin_token"
    assert cluster.admin("GET", "/nodes").status_code == 200
    assert ADMIN not in cluster.portal.log()


def test_launch_registers_tagged_instances(cluster: Cluster) -> None:
    answer = cluster.admin("POST", "/nodes", json={
        "model": MODEL, "instance_type": "g5.xlarge", "image_id": cluster.moto.image(),
        "count": 2})
    assert answer.status_code == 202
    deadline = time.monotonic() + 30
    nodes = []
    while time.monotonic() < deadline and len(nodes) < 2:
        nodes = cluster.admin("GET", "/nodes").json()["data"]
        time.sleep(0.2)
    assert len(nodes) == 2
    reservations = cluster.moto.ec2().describe_instances(
        Filters=[{"Name": "tag:role", "Values": ["vllm_node"]}])["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert {i["InstanceId"] for i in instances} == {n["instance_id"] for n in nodes}
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags["role"] == "vllm_node" and tags["model"] == MODEL
        assert tags["Name"].startswith(f"vllm-{MODEL}-")
    for node in nodes:
        node = cluster.wait_node(node["id"], state="running")  # vLLM itself never answers here
        assert node["hourly_cost"] == "1.006000" and not node["healthy"]
        assert node["url"].startswith("http://10.")  # from its private address


def test_boot_stop_reboot_terminate_a_node(cluster: Cluster) -> None:
    instance = cluster.moto.run_node(MODEL, stopped=True)
    port = free_port()
    node_id = cluster.register(instance, port)
    assert cluster.node(node_id)["state"] == "stopped"

    cluster.simnode_when_running(instance, port)
    assert cluster.admin("POST", f"/nodes/{node_id}/boot").status_code == 202
    row = cluster.wait_node(node_id, state="running", healthy=True)
    assert cluster.moto.state(instance) == "running"
    assert row["uptime_seconds"] >= 0

    cluster.portal.cli("nodes", "reboot", str(node_id), "--wait", "30")
    assert cluster.wait_node(node_id, state="running", healthy=True)

    cluster.portal.cli("nodes", "stop", str(node_id), "--wait", "30")
    assert cluster.moto.state(instance) == "stopped"
    assert cluster.node(node_id)["healthy"] is False

    cluster.portal.cli("nodes", "terminate", str(node_id), "--wait", "30")
    assert cluster.moto.state(instance) == "terminated"


def test_sync_registers_updates_and_retires(cluster: Cluster) -> None:
    known = cluster.moto.run_node(MODEL)
    known_id = cluster.register(known, free_port())
    cluster.moto.ec2().stop_instances(InstanceIds=[known])  # behind the portal's back
    stranger = cluster.moto.run_node(MODEL)
    unknown_model = cluster.moto.run_node("not-in-the-catalogue")
    cluster.portal.cli("nodes", "sync")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = {n["instance_id"]: n for n in cluster.admin("GET", "/nodes").json()["data"]}
        if stranger in rows and rows[known]["state"] == "stopped":
            break
        time.sleep(0.2)
    assert rows[known]["id"] == known_id and rows[known]["state"] == "stopped"
    assert rows[stranger]["model"] == MODEL and rows[stranger]["state"] == "running"
    assert unknown_model not in rows

    cluster.moto.ec2().terminate_instances(InstanceIds=[stranger])
    cluster.portal.cli("nodes", "sync")
    cluster.wait_node(rows[stranger]["id"], state="terminated")


def test_drain_waits_for_requests_then_stops(cluster: Cluster) -> None:
    with start_simnode("--model", MODEL, "--tokens-per-second", "20") as simnode:
        static = cluster.portal.cli_json("nodes", "add", "--model", MODEL, "--url",
                                         simnode.url)["id"]
        _key_id, key = cluster.portal.create_key("1")
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 40, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", cluster.url + "/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {key}"}, timeout=30) as stream:
            lines = stream.iter_lines()
            next(line for line in lines if '"content":"' in line)
            assert cluster.admin("POST", f"/nodes/{static}/drain").status_code == 202
            cluster.wait_node(static, state="draining", timeout=10)
            # A new request finds no node while the stream is still going:
            refused = httpx.post(cluster.url + "/v1/chat/completions",
                                 json={**body, "stream": False},
                                 headers={"authorization": f"Bearer {key}"})
            assert refused.status_code == 503
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"  # the drained request finished
        cluster.wait_node(static, state="stopped", timeout=20)
