"""The console's nodes page in Chromium: a node action behind its confirmation reaches
the same actor as ``portal nodes drain``, and the audit log names the console."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.console.conftest import ADMIN, artifacts
from tests.support.deployment import Deployment


def nodes(deployment: Deployment) -> list[dict[str, Any]]:
    answer = httpx.get(deployment.url + "/admin/nodes", headers=ADMIN, timeout=10)
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def audit(deployment: Deployment, action: str) -> list[dict[str, Any]]:
    answer = httpx.get(deployment.url + "/admin/audit", params={"action": action},
                       headers=ADMIN, timeout=10)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


def wait_for_state(deployment: Deployment, node_id: int, states: set[str],
                   timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = next(n["state"] for n in nodes(deployment) if n["id"] == node_id)
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"node {node_id} stayed {state}, not one of {states}")


def test_a_node_action_asks_first_then_reaches_its_actor(
        console_page: Any, console_deployment: Deployment) -> None:
    page, url = console_page, console_deployment.url
    (node,) = nodes(console_deployment)
    assert node["state"] == "running"
    # Signed in, the operator lands on the overview, its chart drawn without a script.
    assert page.locator("#overview-chart svg").count() == 1
    page.screenshot(path=str(artifacts("console-overview.png")), full_page=True)
    page.goto(url + "/admin/console/nodes")
    row = page.locator(f"tr[data-node='{node['id']}']")
    assert "running" in row.inner_text() and "healthy" in row.inner_text()

    # Cancelled: nothing is enqueued, nothing audited.
    row.locator("button[data-action=drain]").click()
    dialog = page.locator("dialog#confirm")
    assert f"Drain node {node['id']}" in dialog.inner_text()
    dialog.locator("button[value=cancel]").click()
    assert not dialog.is_visible()
    assert audit(console_deployment, "node.drain") == []

    # Confirmed: the drain actor takes it out of routing and stops it.
    row.locator("button[data-action=drain]").click()
    dialog.locator("button#confirm-ok").click()
    page.wait_for_selector("#flash:has-text('Drain of node')")
    (entry,) = audit(console_deployment, "node.drain")
    assert entry["actor"].startswith("console:") and entry["target"] == f"node:{node['id']}"
    assert wait_for_state(console_deployment, node["id"], {"stopped"}) == "stopped"
    page.reload()
    assert "stopped" in page.locator(f"tr[data-node='{node['id']}']").inner_text()
    page.screenshot(path=str(artifacts("console-nodes.png")), full_page=True)

    # And back: boot from the page brings it up again for the module's other tests.
    page.locator(f"tr[data-node='{node['id']}'] button[data-action=boot]").click()
    dialog.locator("button#confirm-ok").click()
    assert wait_for_state(console_deployment, node["id"], {"running"}) == "running"


def test_the_launch_form_refuses_what_the_api_refuses(
        console_page: Any, console_deployment: Deployment) -> None:
    page, url = console_page, console_deployment.url
    page.goto(url + "/admin/console/nodes")
    page.fill("input[name=instance_type]", "g5.xlarge")  # no image, no launch template
    page.click("form[data-api='/admin/nodes'] button[type=submit]")
    page.locator("dialog#confirm button#confirm-ok").click()
    page.wait_for_selector("#flash.error")
    assert "image_id" in page.locator("#flash").inner_text()
    assert audit(console_deployment, "node.launch") == []
