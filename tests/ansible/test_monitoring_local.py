"""roles/monitoring converges THIS machine, then Prometheus is checked from outside.

A portal (``portal serve``, tests/support/portal.py) and a simnode run on free ports; a
generated inventory puts them in ``role_portal`` and ``role_vllm_node`` and this machine in
``monitoring``. playbooks/monitoring.yml installs Prometheus and Alertmanager (Debian's
packages) under Supervisor, twice: the second run changes nothing. Then, through their
HTTP APIs: both targets are up, the rules of monitoring/rules are loaded, the gauges a
scrape reads are stored, a changed setting is applied by a reload, and an alert travels
from the portal's counters to Alertmanager's webhook receiver (a listener of this test).

Needs root and apt (Debian or Ubuntu); skipped without them locally, failed in CI. It
writes under /opt/inference-portal-test/monitoring and Supervisor's program directory,
listens on 19090 (Prometheus) and 19093 (Alertmanager), and starts from empty data
directories (an earlier run's are removed); afterwards its programs are
removed from Supervisor, and supervisord is stopped if it was not running before. It
takes turns with test_site_local.py, which uses the same supervisord (``MachineLock``).
Playbook output is kept in /opt/inference-portal-test/logs.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from simnode.testing import SimnodeProcess, free_port, start_simnode
from tests.ansible.conftest import (
    REPO,
    TEST_ROOT,
    MachineLock,
    Run,
    ansible_env,
    prepare_test_root,
    run_ansible,
    which,
)
from tests.ansible.test_site_local import require_machine, service_running
from tests.support.portal import PortalServer

# Its fixture may first wait for test_site_local.py to give the machine back.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

VARS_FILE = REPO / "tests" / "ansible" / "vars" / "monitoring_converge.yml"
VARS = yaml.safe_load(VARS_FILE.read_text())
LOGS = TEST_ROOT / "logs"
SUPERVISOR_CONF = "/etc/supervisor/supervisord.conf"
PROGRAMS_DIR = Path("/etc/supervisor/conf.d")
PREFIX = VARS["monitoring_program_prefix"]
PROGRAMS = (f"{PREFIX}-prometheus", f"{PREFIX}-alertmanager")
PROMETHEUS = f"http://127.0.0.1:{VARS['monitoring_prometheus_port']}"
ALERTMANAGER = f"http://127.0.0.1:{VARS['monitoring_alertmanager_port']}"
WEBHOOK_SECRET = "whsec_monitoring_converge_test"
MODEL = "demo"


class Receiver:
    """Alertmanager's webhook receiver: keeps every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_inventory(path: Path, portal: PortalServer, node: SimnodeProcess) -> Path:
    """This machine monitors; the portal and the node are hosts of their usual groups."""
    local = {"ansible_connection": "local",
             "ansible_python_interpreter": "{{ ansible_playbook_python }}",
             "ansible_become": "{{ lookup('ansible.builtin.pipe', 'id -u') != '0' }}"}
    inventory = {"all": {"children": {
        "monitoring": {"hosts": {"localhost": local}},
        "role_portal": {"hosts": {"portal-under-test": {
            "ansible_host": "127.0.0.1", "portal_nginx_listen_port": portal.port}}},
        "role_vllm_node": {"hosts": {"gpu-under-test": {
            "ansible_host": "127.0.0.1", "vllm_node_port": node.port,
            "vllm_node_portal_model": MODEL}}},
    }}}
    path.write_text(yaml.safe_dump(inventory))
    return path


def wait_for(what: str, probe: Callable[[], Any], seconds: float = 60) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"{what}: still {last!r} after {seconds} s")


def query(expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]["result"]


def remove_programs() -> None:
    """Take this test's programs out of Supervisor (stopping them), leaving the rest."""
    removed = False
    for program in PROGRAMS:
        for path in PROGRAMS_DIR.glob(f"{program}.*"):
            path.unlink()
            removed = True
    if removed and which("supervisorctl"):
        subprocess.run(["supervisorctl", "-c", SUPERVISOR_CONF, "update"],
                       capture_output=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory,
               redis_url: str) -> Iterator[dict[str, Any]]:
    """A portal and a node to watch, a receiver, and the role converged twice."""
    require_machine()
    root = tmp_path_factory.mktemp("monitoring")
    lock = MachineLock()  # test_site_local.py uses the same supervisord
    supervisor_was_running = service_running("supervisor")
    receiver = Receiver()
    node = start_simnode("--model", MODEL)
    portal = PortalServer(root / "portal", redis_url, workers=1,
                          env={"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET})
    try:
        # A fresh installation: no samples of an earlier run's portal, and no notification
        # log that would hold back this run's alert as already sent.
        remove_programs()
        shutil.rmtree(VARS["monitoring_data_dir"], ignore_errors=True)
        prepare_test_root()  # else the role would make it, closed to the site's services
        portal.start()
        portal.add_model(MODEL)
        portal.add_node(MODEL, node.url)
        inventory = write_inventory(root / "inventory.yml", portal, node)

        def converge(name: str, *extra: str) -> Run:
            return run_ansible(
                "ansible-playbook", "-i", inventory, "playbooks/monitoring.yml",
                "-e", f"@{VARS_FILE}", "-e", f"monitoring_alertmanager_webhook_url={receiver.url}",
                *extra, env=ansible_env(), timeout=600, log=LOGS / f"monitoring-{name}.log")

        first = converge("converge-1").check()
        second = converge("converge-2").check()
        yield {"first": first, "second": second, "portal": portal, "node": node,
               "receiver": receiver, "converge": converge}
    finally:
        remove_programs()
        # As test_site_local.py does: a supervisord this test started is stopped, with
        # whatever it started besides (program files other tests left behind).
        if not supervisor_was_running and which("service"):
            subprocess.run(["service", "supervisor", "stop"], capture_output=True, check=False)
        lock.release()
        portal.stop()
        node.stop()
        receiver.close()


def test_second_converge_changes_nothing(deployment: dict[str, Any]) -> None:
    first, second = deployment["first"], deployment["second"]
    assert first.recap() and second.recap()
    assert second.changed() == 0, f"changed on re-run: {second.changed_tasks()}"


def test_both_programs_run_under_supervisor(deployment: dict[str, Any]) -> None:
    status = subprocess.run(["supervisorctl", "-c", SUPERVISOR_CONF, "status", *PROGRAMS],
                            capture_output=True, text=True, check=False).stdout
    states = {line.split()[0]: line.split()[1] for line in status.splitlines() if line.strip()}
    assert states == dict.fromkeys(PROGRAMS, "RUNNING"), status


def test_prometheus_scrapes_the_portal_and_the_node(deployment: dict[str, Any]) -> None:
    portal, node = deployment["portal"], deployment["node"]

    def targets() -> dict[str, dict[str, Any]] | None:
        answer = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()
        found = {t["labels"]["job"]: t for t in answer["data"]["activeTargets"]}
        if all(found.get(job, {}).get("health") == "up" for job in ("portal", "vllm")):
            return found
        return None

    found = wait_for("the portal and vllm targets up", targets)
    assert found["portal"]["scrapeUrl"] == f"http://127.0.0.1:{portal.port}/metrics"
    assert found["portal"]["labels"]["host"] == "portal-under-test"
    assert found["vllm"]["scrapeUrl"] == f"{node.url}/metrics"
    assert found["vllm"]["labels"]["model"] == MODEL
    assert found["vllm"]["labels"]["node"] == "gpu-under-test"
    assert found["prometheus"]["health"] == "up"
    assert found["alertmanager"]["health"] == "up"


def test_prometheus_stores_the_gauges_a_scrape_reads(deployment: dict[str, Any]) -> None:
    running = wait_for("portal_nodes of the demo model",
                       lambda: query(f'portal_nodes{{model="{MODEL}", state="running"}}'))
    assert running[0]["value"][1] == "1"
    for series in ("portal_redis_up", "portal_database_up", "portal_hot_store_ready"):
        assert query(series)[0]["value"][1] == "1", series
    assert query("portal_ledger_backlog_entries")
    assert query(f'vllm:num_requests_waiting{{model_name="{MODEL}"}}')


def test_prometheus_loaded_the_shipped_rules(deployment: dict[str, Any]) -> None:
    shipped = {rule["alert"] for path in sorted((REPO / "monitoring" / "rules").glob("*.yml"))
               for group in yaml.safe_load(path.read_text())["groups"]
               for rule in group["rules"] if "alert" in rule}
    groups = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]
              if rule["type"] == "alerting"}
    assert loaded == shipped
    assert all(rule["health"] != "err" for group in groups for rule in group["rules"]), groups


def test_alertmanager_has_the_receiver(deployment: dict[str, Any]) -> None:
    status = httpx.get(f"{ALERTMANAGER}/api/v2/status", timeout=10).json()
    config = yaml.safe_load(status["config"]["original"])
    assert config["route"]["receiver"] == "oncall"
    (oncall,) = [r for r in config["receivers"] if r["name"] == "oncall"]
    assert oncall["webhook_configs"][0]["url"] == deployment["receiver"].url
    assert status["cluster"]["status"] == "disabled"


def test_an_alert_reaches_the_receiver(deployment: dict[str, Any]) -> None:
    """Webhook deliveries with a forged signature: the portal counts them, Prometheus
    fires PortalWebhooksRefused, Alertmanager posts it to the receiver."""
    portal, receiver = deployment["portal"], deployment["receiver"]

    def forged(count: int) -> None:
        for _ in range(count):
            answer = httpx.post(f"{portal.url}/webhooks/stripe", content=b'{"id": "evt_1"}',
                                headers={"stripe-signature": "t=1,v1=forged"}, timeout=10)
            assert answer.status_code == 400, answer.text

    refused = 'portal_webhooks_total{outcome="refused"}'
    forged(1)  # the counter's first sample: increase() counts from there
    wait_for("the refused counter in Prometheus", lambda: query(refused))
    forged(10)
    wait_for("ten more refused deliveries", lambda: float(query(refused)[0]["value"][1]) >= 11)

    def notified() -> dict[str, Any] | None:
        for notification in receiver.notifications:
            for alert in notification["alerts"]:
                if alert["labels"]["alertname"] == "PortalWebhooksRefused":
                    return alert
        return None

    alert = wait_for("PortalWebhooksRefused at the receiver", notified, seconds=90)
    assert alert["status"] == "firing"
    assert alert["labels"]["provider"] == "stripe"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook"] == "docs/runbooks/stripe.md"


def test_a_changed_setting_is_applied_by_a_reload(deployment: dict[str, Any]) -> None:
    """A new external label: Prometheus's file changes, the handler signals it (no restart:
    its process stays), and the label is in its running configuration."""
    pid = subprocess.run(["supervisorctl", "-c", SUPERVISOR_CONF, "pid", PROGRAMS[0]],
                         capture_output=True, text=True, check=True).stdout.strip()
    run = deployment["converge"](
        "converge-3", "-e", '{"monitoring_external_labels": {"installation": "converge-test"}}'
    ).check()
    assert "RUNNING HANDLER [monitoring : Reload Prometheus]" in run.output, run.tail()

    def reloaded() -> bool:
        config = httpx.get(f"{PROMETHEUS}/api/v1/status/config", timeout=10).json()
        return "installation: converge-test" in config["data"]["yaml"]

    wait_for("the external label in Prometheus's configuration", reloaded)
    after = subprocess.run(["supervisorctl", "-c", SUPERVISOR_CONF, "pid", PROGRAMS[0]],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert after == pid
