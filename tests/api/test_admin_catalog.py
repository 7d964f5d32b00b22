"""``/admin/models``: the catalogue over HTTP, in-process: what it lists, adding and changing
a model (seen on ``/v1/models`` within a second), the audit rows, and every refusal
changing nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.db.models import LLM, AuditEntry
from tests.support.inprocess import InProcessPortal

TOKEN = "catalog-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.portal_settings(admin_token=TOKEN)

#: The columns a refused change must leave as they were.
COLUMNS = ("served_name", "input_price", "output_price", "context_length", "kind", "enabled",
           "idle_ttl", "min_nodes")


async def public_model(portal: InProcessPortal, name: str, *, within: float = 1.0,
                       until: Any = None) -> dict[str, Any] | None:
    """``GET /v1/models``' entry of ``name`` once ``until(entry)`` holds (or ``within``
    seconds have passed): what a client sees after the change reached the worker."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        listed = (await portal.client.get("/v1/models")).json()["data"]
        entry = next((m for m in listed if m["id"] == name), None)
        if until is None or until(entry) or asyncio.get_running_loop().time() > deadline:
            return entry
        await asyncio.sleep(0.02)


async def columns(name: str) -> list[Any]:
    row = await LLM.get(name=name)
    return [getattr(row, column) for column in COLUMNS]


async def test_a_model_is_added_priced_disabled_and_listed(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    made = await http.post("/admin/models", headers=ADMIN, json={
        "name": "llama", "served_name": "meta/llama", "input_price": "0.25",
        "output_price": 1.1, "context_length": 4096, "min_nodes": 1})
    assert made.status_code == 201, made.text
    view = made.json()
    assert {k: view[k] for k in ("name", "served_name", "kind", "input_price",
                                 "input_price_micros", "output_price", "output_price_micros",
                                 "context_length", "enabled", "outcome")} == {
        "name": "llama", "served_name": "meta/llama", "kind": "generate",
        "input_price": "0.250000", "input_price_micros": 250_000,
        "output_price": "1.100000", "output_price_micros": 1_100_000,
        "context_length": 4096, "enabled": True, "outcome": "created"}
    assert (view["policy"]["min_nodes"], view["policy"]["max_nodes"]) == (1, 1)
    seen = await public_model(inprocess_portal, "llama", until=lambda m: m is not None)
    assert seen is not None and seen["pricing"]["input"] == "0.250000"

    again = await http.post("/admin/models", headers=ADMIN, json={
        "name": "llama", "served_name": "meta/llama", "input_price": "0.25",
        "output_price": "1.10", "context_length": 4096})
    assert (again.status_code, again.json()["outcome"]) == (200, "unchanged")

    changed = await http.patch("/admin/models/llama", headers=ADMIN,
                               json={"input_price": "0.5", "context_length": 8192})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["input_price"], changed.json()["output_price"],
            changed.json()["context_length"], changed.json()["outcome"]) == (
        "0.500000", "1.100000", 8192, "updated")
    seen = await public_model(inprocess_portal, "llama",
                              until=lambda m: m and m["pricing"]["input"] == "0.500000")
    assert seen is not None
    assert (seen["pricing"]["input_micros"], seen["pricing"]["output_micros"],
            seen["context_length"]) == (500_000, 1_100_000, 8192)

    hidden = await http.patch("/admin/models/llama", headers=ADMIN, json={"enabled": False})
    assert hidden.json()["enabled"] is False
    assert await public_model(inprocess_portal, "llama", until=lambda m: m is None) is None
    assert (await http.get("/v1/models/llama")).status_code == 404
    listed = (await http.get("/admin/models", headers=ADMIN)).json()["data"]
    assert [(m["name"], m["enabled"]) for m in listed] == [("llama", False)]  # still listed
    shown = (await http.get("/admin/models/llama", headers=ADMIN)).json()
    assert (shown["enabled"], shown["input_price_micros"]) == (False, 500_000)

    unchanged = await http.patch("/admin/models/llama", headers=ADMIN,
                                 json={"enabled": False})
    assert unchanged.json()["outcome"] == "unchanged"
    rows = (await http.get("/admin/audit?target=model:llama", headers=ADMIN)).json()["data"]
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("admin-api", "model.update"), ("admin-api", "model.update"),
        ("admin-api", "model.add")]
    disabled, priced, added = rows
    assert added["before"] is None
    assert (added["after"]["input_price"], added["after"]["min_nodes"]) == (250_000, 1)
    assert (priced["before"]["input_price"], priced["after"]["input_price"]) == (250_000,
                                                                                500_000)
    assert (priced["before"]["context_length"], priced["after"]["context_length"]) == (4096,
                                                                                      8192)
    assert (disabled["before"]["enabled"], disabled["after"]["enabled"]) == (True, False)


async def test_the_list_counts_nodes_by_state_and_names_may_hold_slashes(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    await inprocess_portal.add_model("org/embedder", kind="embed", input_price="0.02",
                                     output_price="0")
    await inprocess_portal.add_node("org/embedder", "http://10.0.0.1:8000")
    await inprocess_portal.add_node("org/embedder", "http://10.0.0.2:8000", healthy=False)
    await inprocess_portal.add_node("org/embedder", "http://10.0.0.3:8000", state="stopped")
    (model,) = (await http.get("/admin/models", headers=ADMIN)).json()["data"]
    assert model["nodes"] == {"running": 1, "unhealthy": 1, "stopped": 1}
    assert (model["kind"], model["input_price"], model["policy"]["model"]) == (
        "embed", "0.020000", "org/embedder")

    changed = await http.patch("/admin/models/org/embedder", headers=ADMIN,
                               json={"output_price": "0.01"})
    assert changed.status_code == 200, changed.text
    assert (await LLM.get(name="org/embedder")).output_price == 10_000
    # The policy's own route is still the policy's.
    await inprocess_portal.add_model("plain")
    policy = await http.patch("/admin/models/plain/policy", headers=ADMIN,
                              json={"max_nodes": 2})
    assert policy.status_code == 200, policy.text
    assert policy.json()["max_nodes"] == 2
    assert (await http.get("/admin/models/plain/policy", headers=ADMIN)).json()["max_nodes"] == 2


@pytest.mark.parametrize(("body", "param"), [
    ({"input_price": "-1"}, "input_price"),
    ({"input_price": "abc"}, "input_price"),
    ({"input_price": "0.0000001"}, "input_price"),
    ({"input_price": "1000000.000001"}, "input_price"),
    ({"output_price": None}, "output_price"),
    ({"output_price": True}, "output_price"),
    ({"context_length": 0}, "context_length"),
    ({"context_length": "8k"}, "context_length"),
    ({"context_length": 10_000_001}, "context_length"),
    ({"enabled": "yes"}, "enabled"),
    ({"kind": "vision"}, "kind"),
    ({"kind": ["embed"]}, "kind"),
    ({"served_name": ""}, "served_name"),
    ({"served_name": "two words"}, "served_name"),
    ({"idle_ttl": 60}, "idle_ttl"),  # the policy's: PATCH /admin/models/{name}/policy
    ({"name": "renamed"}, "name"),
    ({"context_length": 2048, "colour": "red"}, "colour"),  # all or nothing
])
async def test_a_bad_change_is_refused_and_changes_nothing(
        inprocess_portal: InProcessPortal, body: dict, param: str) -> None:
    await inprocess_portal.add_model("m")
    before = await columns("m")
    refused = await inprocess_portal.client.patch("/admin/models/m", json=body, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    assert await columns("m") == before
    assert not await AuditEntry.exists()


@pytest.mark.parametrize(("body", "param"), [
    ({"input_price": "1", "output_price": "1"}, "name"),
    ({"name": 7, "input_price": "1", "output_price": "1"}, "name"),
    ({"name": "has space", "input_price": "1", "output_price": "1"}, "name"),
    ({"name": "x" * 129, "input_price": "1", "output_price": "1"}, "name"),
    ({"name": "new", "output_price": "1"}, "input_price"),
    ({"name": "new", "input_price": "1", "output_price": "1", "min_nodes": 2}, "min_nodes"),
    ({"name": "new", "input_price": "1", "output_price": "1", "idle_ttl": -1}, "idle_ttl"),
    ({"name": "new", "input_price": "1", "output_price": "1", "max_nodes": 3}, "max_nodes"),
    ({"name": "m", "input_price": "1", "output_price": "1", "kind": "vision"}, "kind"),
])
async def test_a_bad_addition_is_refused_and_changes_nothing(
        inprocess_portal: InProcessPortal, body: dict, param: str) -> None:
    await inprocess_portal.add_model("m")
    before = await columns("m")
    refused = await inprocess_portal.client.post("/admin/models", json=body, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    assert [m.name for m in await LLM.all()] == ["m"] and await columns("m") == before
    assert not await AuditEntry.exists()


async def test_bodies_unknown_models_and_the_token(inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    await inprocess_portal.add_model("m")
    for body in (b"not json", b"[1, 2]", b""):
        refused = await http.patch("/admin/models/m", content=body, headers=ADMIN)
        assert refused.status_code == 400, (body, refused.text)
    assert (await http.patch("/admin/models/nope", json={"enabled": False},
                             headers=ADMIN)).status_code == 404
    assert (await http.get("/admin/models/nope", headers=ADMIN)).status_code == 404
    for method, path in (("GET", "/admin/models"), ("POST", "/admin/models"),
                         ("GET", "/admin/models/m"), ("PATCH", "/admin/models/m")):
        refused = await http.request(method, path, json={"name": "x", "input_price": "0",
                                                         "output_price": "0"})
        assert refused.status_code == 401, (method, path)
        wrong = await http.request(method, path, json={"enabled": False},
                                   headers={"authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401, (method, path)
    assert [m.name for m in await LLM.all()] == ["m"] and (await LLM.get(name="m")).enabled


async def test_a_model_named_with_a_slash_has_its_policy_too(
        inprocess_portal: InProcessPortal) -> None:
    """Hub-style names (``org/model``) reach the policy routes as they reach the model's."""
    await inprocess_portal.add_model("org/x")
    http = inprocess_portal.client
    assert (await http.get("/admin/models/org/x", headers=ADMIN)).json()["name"] == "org/x"
    changed = await http.patch("/admin/models/org/x/policy", headers=ADMIN,
                               json={"max_nodes": 2})
    assert changed.status_code == 200 and changed.json()["model"] == "org/x"
    assert (await LLM.get(name="org/x")).max_nodes == 2
    shown = await http.get("/admin/models/org/x/policy", headers=ADMIN)
    assert shown.json()["max_nodes"] == 2
    assert (await http.get("/admin/models/org/y/policy", headers=ADMIN)).status_code == 404
