"""The audit log: an admin API change and a CLI change each append a row with the target
before and after; rows can only be appended (no route changes one, the model refuses)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from edge import audit
from edge.db.models import AppendOnly, AuditEntry
from tests.support.inprocess import InProcessPortal
from tests.support.portal import PortalServer

TOKEN = "audit-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
EDGE = Path(__file__).resolve().parents[2] / "edge"


@pytest.mark.portal_settings(admin_token=TOKEN)
async def test_an_admin_api_change_appends_a_row(inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    await inprocess_portal.add_model("m")
    changed = await http.patch("/admin/models/m/policy", headers=ADMIN,
                               json={"max_nodes": 3})
    assert changed.status_code == 200, changed.text
    again = await http.patch("/admin/models/m/policy", headers=ADMIN, json={"max_nodes": 3})
    assert again.status_code == 200  # nothing changed: no row
    made = (await http.post("/admin/keys", headers=ADMIN, json={"name": "acme"})).json()
    await http.post(f"/admin/keys/{made['id']}/revoke", headers=ADMIN)

    (policy,) = (await http.get("/admin/audit?target=model:m", headers=ADMIN)).json()["data"]
    assert (policy["actor"], policy["action"]) == ("admin-api", "model.policy")
    assert (policy["before"]["max_nodes"], policy["after"]["max_nodes"]) == (1, 3)
    entries = (await http.get("/admin/audit", headers=ADMIN)).json()["data"]
    assert [e["action"] for e in entries] == ["key.revoke", "key.create", "model.policy"]
    revoked = entries[0]
    assert (revoked["before"]["revoked"], revoked["after"]["revoked"]) == (False, True)
    assert "key" not in revoked["after"] and made["key"] not in str(entries)  # no secret
    by_action = (await http.get("/admin/audit?action=key.create&limit=1",
                                headers=ADMIN)).json()["data"]
    assert [e["target"] for e in by_action] == [f"key:{made['id']}"]


def test_a_cli_change_appends_a_row(tmp_path: Path, redis_url: str) -> None:
    portal = PortalServer(tmp_path, redis_url)
    portal.cli("migrate")
    portal.add_model("m")
    portal.cli("models", "policy", "m", "--max-nodes", "2", "--json")
    node = portal.cli_json("nodes", "add", "--model", "m", "--url", "http://10.0.0.9:8000")
    portal.cli("nodes", "remove", str(node["id"]))
    rows = portal.cli_json("audit", "list")
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("cli", "node.remove"), ("cli", "node.add"), ("cli", "model.policy"),
        ("cli", "model.add")]
    removed, added, policy, _model = rows
    assert (removed["before"]["url"], removed["after"]) == ("http://10.0.0.9:8000", None)
    assert (added["before"], added["after"]["state"]) == (None, "running")
    assert (policy["before"]["max_nodes"], policy["after"]["max_nodes"]) == (1, 2)
    only = portal.cli_json("audit", "list", "--target", f"node:{node['id']}")
    assert [r["action"] for r in only] == ["node.remove", "node.add"]


async def test_rows_are_never_updated_or_deleted(inprocess_portal: InProcessPortal) -> None:
    row = await audit.record("cli", "key.revoke", "key:1", {"revoked": False},
                             {"revoked": True})
    row.action = "key.create"
    with pytest.raises(AppendOnly):
        await row.save()
    with pytest.raises(AppendOnly):
        await row.delete()
    with pytest.raises(AppendOnly):
        await AuditEntry.filter(id=row.id).delete()
    with pytest.raises(AppendOnly):
        await AuditEntry.filter(id=row.id).update(action="x")
    with pytest.raises(AppendOnly):
        await AuditEntry.all().delete()
    (kept,) = await AuditEntry.all()
    assert (kept.action, kept.after) == ("key.revoke", {"revoked": True})


def test_no_route_changes_the_audit_log(inprocess_portal: InProcessPortal) -> None:
    routes = {route.path: route.methods for route in inprocess_portal.app.router.routes
              if "audit" in route.path}
    assert {path.strip("/") for path in routes} == {"admin/audit", "admin/console/audit"}
    assert all(methods <= {"GET", "HEAD"} for methods in routes.values())


def test_only_the_audit_module_touches_the_table() -> None:
    """The model and edge.audit use AuditEntry; nothing else in edge/ does (the OpenAPI
    document names its schema, a string)."""
    used = re.compile(r"(?<![\"'])\bAuditEntry\b(?![\"'])")
    users = sorted(str(path.relative_to(EDGE)) for path in EDGE.rglob("*.py")
                   if used.search(path.read_text()) and "migrations" not in path.parts)
    assert users == ["audit.py", "db/models.py"]
    tree = ast.parse((EDGE / "audit.py").read_text())
    called = {node.func.attr for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert not called & {"update", "delete", "save", "bulk_update", "update_or_create"}


@pytest.mark.portal_settings(admin_token=TOKEN)
async def test_bad_filters_are_refused_by_name(inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    for query, param in (({"target": "node:\x00"}, "target"), ({"action": "x" * 65}, "action"),
                         ({"limit": "0"}, "limit"), ({"limit": "lots"}, "limit")):
        for path in ("/admin/audit", "/admin/contact") if param == "limit" else ("/admin/audit",):
            answer = await http.get(path, params=query, headers=ADMIN)
            assert answer.status_code == 400, (path, query)
            assert answer.json()["error"]["param"] == param
