"""playbooks/provision.yml and teardown.yml against moto's EC2 server.

Real Ansible and the real amazon.aws collection talk to `moto.server` through
AWS_ENDPOINT_URL. Nodes are registered with a throwaway portal (SQLite in a
temporary directory, no Redis) through the project's own CLI.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.ansible.conftest import BIN, Run, ansible_env, run_ansible, unwrap
from tests.support.templates import copy_sqlite_template

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REGION = "us-east-1"
FLEET = "ansible-test"
#: Two models, three GPU nodes, one portal host.
MODELS = [
    {"model": "llama-3.1-8b", "served_name": "meta-llama/Llama-3.1-8B-Instruct",
     "weights": "meta-llama/Llama-3.1-8B-Instruct", "instance_type": "g6.xlarge", "count": 2,
     "ami": "ami-12c6146b", "disk_size_gb": 200, "input_price": "0.10",
     "output_price": "0.20", "context": 8192},
    {"model": "qwen-small", "served_name": "Qwen/Qwen3-Embedding-0.6B", "kind": "embed",
     "instance_type": "g6.xlarge", "count": 1, "ami": "ami-12c6146b",
     "input_price": "0.05", "output_price": "0"},
]
ADMIN_CIDR = "198.51.100.0/24"
VLLM_PORT = 8000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto.server did not start:\n{log.read_text()}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def aws_env(moto_url: str) -> dict[str, str]:
    return ansible_env(AWS_ENDPOINT_URL=moto_url, AWS_ACCESS_KEY_ID="testing",
                       AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)


@pytest.fixture(scope="module")
def ec2(moto_url: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def portal_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway portal: SQLite in a temporary directory, no Redis (port 1 answers nobody)."""
    data = tmp_path_factory.mktemp("portal")
    env = {"PORTAL_DATA_DIR": str(data), "PORTAL_REDIS_URL": "redis://127.0.0.1:1/0",
           "PORTAL_EMBEDDED_REDIS": "auto"}
    copy_sqlite_template(data / "portal.sqlite3")  # migrate then only makes its identity
    subprocess.run([str(BIN / "portal"), "migrate"], env=ansible_env(**env), check=True,
                   capture_output=True, cwd=data, timeout=60)
    return env


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory: pytest.TempPathFactory, portal_env: dict[str, str]) -> Path:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    fleet = {
        "fleet_name": FLEET, "fleet_region": REGION, "fleet_vpc_id": "", "fleet_subnet_id": "",
        "fleet_assign_public_ip": True, "fleet_admin_cidr": ADMIN_CIDR,
        "fleet_key_name": FLEET, "fleet_public_key": f"{key} ansible-test",
        "fleet_vllm_port": VLLM_PORT, "fleet_wait_timeout": 120,
        "fleet_portal": {"count": 1, "instance_type": "t3.large", "ami": "ami-12c6146b",
                         "disk_size_gb": 40},
        "fleet_models": MODELS,
        "fleet_register_with_portal": True, "fleet_portal_host": "localhost",
        "fleet_portal_cli": str(BIN / "portal"), "fleet_portal_environment": portal_env,
    }
    path = tmp_path_factory.mktemp("fleet") / "fleet.yml"
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    return path


def provision(fleet_file: Path, aws_env: dict[str, str], log: Path) -> Run:
    return run_ansible("ansible-playbook", "-i", "localhost,", "playbooks/provision.yml",
                       "-e", f"fleet_file={fleet_file}", env=aws_env, log=log, timeout=150)


@pytest.fixture(scope="module")
def provisioned(fleet_file: Path, aws_env: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    logs = tmp_path_factory.mktemp("provision-logs")
    first = provision(fleet_file, aws_env, logs / "first.log").check()
    second = provision(fleet_file, aws_env, logs / "second.log").check()
    return first, second


def tags(resource: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def fleet_instances(ec2: Any, *states: str) -> list[dict]:
    pages = ec2.describe_instances(Filters=[
        {"Name": "tag:fleet", "Values": [FLEET]},
        {"Name": "instance-state-name", "Values": list(states or ["pending", "running"])}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def portal_nodes(portal_env: dict[str, str]) -> list[dict]:
    out = subprocess.run([str(BIN / "portal"), "nodes", "list", "--json"],
                         env=ansible_env(**portal_env), check=True, capture_output=True,
                         text=True, cwd=portal_env["PORTAL_DATA_DIR"], timeout=60).stdout
    return json.loads(out)


def test_first_run_creates_and_second_changes_nothing(provisioned: tuple[Run, Run]) -> None:
    first, second = provisioned
    assert first.changed() > 0
    assert second.changed() == 0, f"changed on re-run: {second.changed_tasks()}"


def test_instances_are_tagged(provisioned: tuple[Run, Run], ec2: Any) -> None:
    instances = fleet_instances(ec2)
    by_role: dict[str, list[dict]] = {}
    for instance in instances:
        by_role.setdefault(tags(instance)["role"], []).append(instance)
    assert len(by_role["portal"]) == 1
    assert tags(by_role["portal"][0])["Name"] == f"{FLEET}-portal"

    nodes = by_role["vllm_node"]
    assert sorted(tags(n)["model"] for n in nodes) == ["llama-3.1-8b", "llama-3.1-8b",
                                                       "qwen-small"]
    for node in nodes:
        node_tags = tags(node)
        model = next(m for m in MODELS if m["model"] == node_tags["model"])
        assert node_tags["Name"] == f"{FLEET}-{model['model']}"
        assert node_tags["project"] == "inference-portal"
        assert node_tags["served_name"] == model["served_name"]
        assert node_tags["weights"] == model.get("weights", model["served_name"])
        assert node_tags["vllm_port"] == str(VLLM_PORT)
        assert node_tags["kind"] == model.get("kind", "generate")  # the pooling runner's cue
        assert node["InstanceType"] == model["instance_type"]
        assert node["KeyName"] == FLEET
        assert node["State"]["Name"] == "running"


def test_security_groups_limit_vllm_to_the_portal(provisioned: tuple[Run, Run],
                                                  ec2: Any) -> None:
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": "tag:fleet", "Values": [FLEET]}])["SecurityGroups"]}
    portal, node = groups[f"{FLEET}-portal"], groups[f"{FLEET}-vllm-node"]
    assert tags(portal)["role"] == "portal" and tags(node)["role"] == "vllm_node"

    def rules(group: dict) -> dict[int, dict]:
        return {p["FromPort"]: p for p in group["IpPermissions"]}

    node_rules = rules(node)
    assert set(node_rules) == {VLLM_PORT, 22}
    vllm = node_rules[VLLM_PORT]
    assert [p["GroupId"] for p in vllm["UserIdGroupPairs"]] == [portal["GroupId"]]
    assert vllm["IpRanges"] == []
    assert [r["CidrIp"] for r in node_rules[22]["IpRanges"]] == [ADMIN_CIDR]

    portal_rules = rules(portal)
    assert set(portal_rules) == {80, 443, 22}
    assert [r["CidrIp"] for r in portal_rules[443]["IpRanges"]] == ["0.0.0.0/0"]
    assert [r["CidrIp"] for r in portal_rules[22]["IpRanges"]] == [ADMIN_CIDR]

    instances = fleet_instances(ec2)
    for instance in instances:
        wanted = portal if tags(instance)["role"] == "portal" else node
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [wanted["GroupId"]]


def test_nodes_are_registered_with_the_portal(provisioned: tuple[Run, Run], ec2: Any,
                                              portal_env: dict[str, str]) -> None:
    expected = {
        i["InstanceId"]: (tags(i)["model"], f"http://{i['PrivateIpAddress']}:{VLLM_PORT}")
        for i in fleet_instances(ec2) if tags(i)["role"] == "vllm_node"}
    registered = {n["instance_id"]: (n["model"], n["url"]) for n in portal_nodes(portal_env)}
    assert registered == expected
    assert {n["state"] for n in portal_nodes(portal_env)} == {"running"}
    out = subprocess.run([str(BIN / "portal"), "models", "list", "--json"],
                         env=ansible_env(**portal_env), check=True, capture_output=True,
                         text=True, cwd=portal_env["PORTAL_DATA_DIR"], timeout=60).stdout
    assert {m["name"]: m["kind"] for m in json.loads(out)} == {
        m["model"]: m.get("kind", "generate") for m in MODELS}


def test_dynamic_inventory_groups_by_role_and_model(provisioned: tuple[Run, Run], ec2: Any,
                                                    aws_env: dict[str, str]) -> None:
    run = run_ansible("ansible-inventory", "-i", "inventory/aws_ec2.yml", "--list",
                      env=aws_env)
    assert run.returncode == 0, run.tail()
    inventory = unwrap(json.loads(run.output[run.output.index("{"):]))

    def members(group: str) -> set[str]:
        return set(inventory.get(group, {}).get("hosts", []))

    instances = {i["InstanceId"]: tags(i) for i in fleet_instances(ec2)}
    nodes = {i for i, t in instances.items() if t["role"] == "vllm_node"}
    assert members("role_vllm_node") == nodes
    assert members("role_portal") == {i for i, t in instances.items() if t["role"] == "portal"}
    assert members("model_llama_3_1_8b") == {i for i in nodes
                                            if instances[i]["model"] == "llama-3.1-8b"}
    assert members("model_qwen_small") == {i for i in nodes
                                          if instances[i]["model"] == "qwen-small"}

    hostvars = inventory["_meta"]["hostvars"]
    for node in nodes:
        node_vars = hostvars[node]
        model = next(m for m in MODELS if m["model"] == instances[node]["model"])
        assert node_vars["vllm_node_portal_model"] == model["model"]
        assert node_vars["vllm_node_served_model_name"] == model["served_name"]
        assert node_vars["vllm_node_port"] == VLLM_PORT
        assert node_vars["vllm_node_model_kind"] == model.get("kind", "generate")
        assert node_vars["ansible_host"]


def test_teardown_needs_confirmation_then_destroys(provisioned: tuple[Run, Run], ec2: Any,
                                                   fleet_file: Path, aws_env: dict[str, str],
                                                   portal_env: dict[str, str]) -> None:
    refused = run_ansible("ansible-playbook", "-i", "localhost,", "playbooks/teardown.yml",
                          "-e", f"fleet_file={fleet_file}", env=aws_env)
    assert refused.returncode != 0
    assert "Not confirmed: nothing was destroyed" in refused.output
    assert len(fleet_instances(ec2)) == 4

    run_ansible("ansible-playbook", "-i", "localhost,", "playbooks/teardown.yml",
                "-e", f"fleet_file={fleet_file}", "-e", "confirm=yes", env=aws_env).check()
    assert fleet_instances(ec2, "pending", "running", "stopping", "stopped") == []
    assert {n["state"] for n in portal_nodes(portal_env)} == {"terminated"}
    names = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert not names & {f"{FLEET}-portal", f"{FLEET}-vllm-node"}

    # Running it again finds nothing left to do.
    again = run_ansible("ansible-playbook", "-i", "localhost,", "playbooks/teardown.yml",
                        "-e", f"fleet_file={fleet_file}", "-e", "confirm=yes",
                        env=aws_env).check()
    assert again.changed() == 0, f"changed on re-run: {again.changed_tasks()}"

