"""site.yml converges THIS machine, then the installation is checked from outside.

Slow (apt installs, two virtualenvs, two converges: a few minutes). It needs root and
apt (Debian or Ubuntu); it is skipped without them locally and fails in CI. Everything
it writes lives under /opt/inference-portal-test, plus /etc/nginx/conf.d/
inference-portal-test.conf and Supervisor program files; it listens on 18080 (Nginx),
18000 (edge), 18100 (simnode) and 16379 (Redis), and leaves the machine's own Redis
(6379) and PostgreSQL (5432) alone. Supervisord and Nginx are stopped afterwards when
they were not running before. Playbook output is kept in /opt/inference-portal-test/logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from websockets.sync.client import connect

from tests.ansible.conftest import (
    REPO,
    TEST_ROOT,
    MachineLock,
    Run,
    ansible_env,
    prepare_test_root,
    run_ansible,
    strict,
    which,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: The extra variables of this test (directories, ports, programs turned off).
VARS_FILE = REPO / "tests" / "ansible" / "vars" / "local_converge.yml"
VARS = yaml.safe_load(VARS_FILE.read_text())
ROOT = TEST_ROOT
LOGS = ROOT / "logs"
SUPERVISOR_CONF = "/etc/supervisor/supervisord.conf"
NGINX = f"http://127.0.0.1:{VARS['portal_nginx_listen_port']}"
CLI = VARS["portal_cli_path"]
MODEL = "demo"
NODE_PROGRAM = VARS["vllm_node_program_name"]


def require_machine() -> None:
    """Root and apt, or skip (fail in CI)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root")
    if which("apt-get") is None or not Path("/etc/debian_version").exists():
        problems.append("needs a Debian or Ubuntu machine (apt)")
    if problems:
        message = "site.yml local converge " + " and ".join(problems)
        if strict():
            pytest.fail(message)
        pytest.skip(message)


def clean_env() -> dict[str, str]:
    return ansible_env()


def service_running(name: str) -> bool:
    """Is the Supervisor or Nginx daemon up (whoever started it)?"""
    if name == "supervisor":
        if which("supervisorctl") is None:
            return False
        probe = subprocess.run(["supervisorctl", "-c", SUPERVISOR_CONF, "pid"],
                               capture_output=True, text=True)
        return probe.returncode == 0 and probe.stdout.strip().isdigit()
    pid = Path("/run/nginx.pid")
    return pid.exists() and Path(f"/proc/{pid.read_text().strip()}").exists()


def snapshot_source() -> Path:
    """Freeze the code the roles install, so both converges see the same source."""
    target = ROOT / "source"
    archive = ROOT / "source.tar.gz"
    prepare_test_root()
    subprocess.run([sys.executable, str(REPO / "roles/project_package/files/pack_source.py"),
                    str(REPO), str(archive), "pyproject.toml", "README.md", "LICENSE", "edge",
                    "dramatiq_actors", "simnode"], check=True, capture_output=True)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def converge(source: Path, name: str) -> Run:
    return run_ansible(
        "ansible-playbook", "-i", "inventory/local.yml", "site.yml", "-e", f"@{VARS_FILE}",
        "-e", f"portal_source_path={source}", "-e", f"vllm_node_simnode_source_path={source}",
        env=clean_env(), timeout=840, log=LOGS / f"{name}.log")


def node_ops(action: str, *extra: str) -> Run:
    return run_ansible(
        "ansible-playbook", "-i", "inventory/local.yml", "playbooks/node_ops.yml",
        "-e", f"action={action}", "-e", "target=model_demo", "-e", f"@{VARS_FILE}", *extra,
        env=clean_env(), timeout=300, log=LOGS / f"node_ops-{action}.log")


@pytest.fixture(scope="module")
def converged() -> Iterator[tuple[Run, Run]]:
    """Converge twice (installing only once); yield both runs; stop what was started."""
    require_machine()
    lock = MachineLock()  # test_monitoring_local.py uses the same supervisord
    before = {name: service_running(name) for name in ("supervisor", "nginx")}
    try:  # a converge that fails half-way is cleaned up too
        source = snapshot_source()
        first = converge(source, "converge-1").check()
        second = converge(source, "converge-2").check()
        yield first, second
    finally:
        for name, was_running in before.items():
            if not was_running and which("service"):
                subprocess.run(["service", name, "stop"], capture_output=True, check=False)
        lock.release()


def portal_cli(*args: str) -> str:
    result = subprocess.run([CLI, *args], env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def program_states() -> dict[str, str]:
    out = subprocess.run(["supervisorctl", "-c", SUPERVISOR_CONF, "status"],
                         capture_output=True, text=True).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def expected_programs() -> set[str]:
    prefix = VARS["portal_program_prefix"]
    programs = {f"{prefix}-edge", f"{prefix}-redis", NODE_PROGRAM}
    if VARS.get("portal_worker_enabled", True):
        programs.add(f"{prefix}-worker")
    if VARS.get("portal_scheduler_enabled", True):
        programs.add(f"{prefix}-scheduler")
    return programs


def demo_node() -> dict:
    nodes = [n for n in json.loads(portal_cli("nodes", "list", "--json")) if n["model"] == MODEL]
    assert len(nodes) == 1, nodes
    return nodes[0]


def chat(key: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{NGINX}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": MODEL, "max_tokens": 8,
                            "messages": [{"role": "user", "content": "hello"}], **extra})


def wait_for_status(key: str, status: int, seconds: float = 15) -> httpx.Response:
    """The edge learns node changes over pub/sub (and every few seconds): poll briefly."""
    deadline = time.monotonic() + seconds
    while True:
        response = chat(key)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


@pytest.fixture(scope="module")
def api_key(converged: tuple[Run, Run]) -> str:
    created = json.loads(portal_cli("keys", "create", "--name", "ansible-site-test",
                                    "--credit", "5", "--json"))
    return created["key"]


def test_second_converge_changes_nothing(converged: tuple[Run, Run]) -> None:
    first, second = converged
    assert first.recap() and second.recap()
    assert second.changed() == 0, f"changed on re-run: {second.changed_tasks()}"


def ours(states: dict[str, str]) -> dict[str, str]:
    """The programs of this test's installation (the machine may run others)."""
    return {name: state for name, state in states.items() if name in expected_programs()}


def test_supervisor_runs_every_program(converged: tuple[Run, Run]) -> None:
    states = program_states()
    assert expected_programs() <= set(states), states
    assert set(ours(states).values()) == {"RUNNING"}, states


def test_nginx_fronts_the_edge(converged: tuple[Run, Run]) -> None:
    ready = httpx.get(f"{NGINX}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.headers["server"].startswith("nginx")
    assert ready.headers["x-content-type-options"] == "nosniff"
    assert ready.headers["x-frame-options"] == "DENY"
    metrics = httpx.get(f"{NGINX}/metrics", timeout=10)
    assert metrics.status_code == 200  # loopback is in portal_nginx_metrics_allow
    assert metrics.headers["content-type"].startswith("text/plain")
    too_big = httpx.post(f"{NGINX}/v1/chat/completions", content=b"x" * (5 * 1024 * 1024),
                         timeout=30)
    assert too_big.status_code == 413


def test_chat_completion_through_nginx(api_key: str) -> None:
    client = openai.OpenAI(base_url=f"{NGINX}/v1", api_key=api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0

    pieces = [chunk.choices[0].delta.content or ""
              for chunk in client.chat.completions.create(
                  model=MODEL, max_tokens=8, stream=True,
                  messages=[{"role": "user", "content": "hello"}])
              if chunk.choices]
    assert len([p for p in pieces if p]) > 1, pieces  # streamed, chunk by chunk


def test_websocket_chat_through_nginx(api_key: str) -> None:
    """A chat room over a WebSocket through Nginx: upgrade, auth, a question, a streamed reply."""
    url = NGINX.replace("http://", "ws://") + "/ws/chat/ansible-site-test"
    with connect(url, open_timeout=10, close_timeout=2) as ws:
        ws.send(json.dumps({"type": "auth", "key": api_key}))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready", ready
        ws.send(json.dumps({"type": "message", "text": "hello", "model": MODEL,
                            "params": {"max_tokens": 8}}))
        deltas, done = [], None
        deadline = time.monotonic() + 30
        while done is None and time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=30))
            if frame["type"] == "delta":
                deltas.append(frame["text"])
            elif frame["type"] == "done":
                done = frame
            assert frame["type"] != "error", frame
    assert done is not None and done["status"] == "done", done
    assert deltas and "".join(deltas).strip(), deltas  # streamed over the socket, piece by piece
    assert done["usage"]["completion_tokens"] > 0


def test_node_ops_check_mode_changes_nothing(api_key: str) -> None:
    node_ops("stop", "--check").check()
    assert program_states()[NODE_PROGRAM] == "RUNNING"
    assert demo_node()["state"] == "running"
    assert chat(api_key).status_code == 200


def test_node_ops_restart_vllm_drains_and_returns(api_key: str) -> None:
    """Drain through the CLI (the node stays up), restart under Supervisor, back in service."""
    before = program_states()[NODE_PROGRAM]
    run = node_ops("restart_vllm").check()
    assert "Record the state in the portal: draining" in run.output
    assert before == "RUNNING" and program_states()[NODE_PROGRAM] == "RUNNING"
    assert demo_node()["state"] == "running"
    assert wait_for_status(api_key, 200).status_code == 200


def test_node_ops_stop_then_boot(api_key: str) -> None:
    node_ops("stop").check()
    assert program_states()[NODE_PROGRAM] == "STOPPED"
    assert demo_node()["state"] == "stopped"
    refused = wait_for_status(api_key, 503)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "model_warming"

    node_ops("boot").check()
    assert demo_node()["state"] == "running"
    served = wait_for_status(api_key, 200)
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["message"]["content"]
    states = program_states()
    assert expected_programs() <= set(states), states
    assert set(ours(states).values()) == {"RUNNING"}, states
