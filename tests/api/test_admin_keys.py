"""``/admin/accounts`` and ``/admin/keys``: the CLI's key management over HTTP, in-process."""

from __future__ import annotations

import pytest

from edge.db.models import Account, ApiKey
from tests.support.inprocess import InProcessPortal

TOKEN = "admin-secret-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.portal_settings(admin_token=TOKEN)


async def test_keys_are_made_changed_rotated_and_revoked(
        inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    made = await http.post("/admin/keys", json={"name": "acme", "credit": "5"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    first = made.json()
    assert first["scope"] == "manage" and first["key"].startswith("sk-ip-")
    account = first["account"]

    second = await http.post("/admin/keys", headers=ADMIN, json={
        "name": "ci", "account": account, "scope": "api", "cap": "1.5", "cap_reset": "daily",
        "rpm": 7})
    assert second.status_code == 201, second.text
    api_key = second.json()
    assert (api_key["scope"], api_key["cap_micros"], api_key["cap_reset"],
            api_key["limits"]["requests_per_minute"]) == ("api", 1_500_000, "daily", 7)

    shown = (await http.get(f"/admin/accounts/{account}", headers=ADMIN)).json()
    assert [k["name"] for k in shown["keys"]] == ["acme", "ci"]
    assert shown["balance_micros"] == 5_000_000

    changed = await http.patch(f"/admin/keys/{api_key['id']}", headers=ADMIN,
                               json={"rpm": 9, "cap": None})
    assert changed.status_code == 200 and changed.json()["cap"] is None
    row = await ApiKey.get(id=api_key["id"])
    assert (row.rpm, row.cap) == (9, None)

    rotated = await http.post(f"/admin/keys/{api_key['id']}/rotate", headers=ADMIN,
                              json={"grace": 30})
    assert rotated.status_code == 200
    new_secret = rotated.json()["key"]
    assert new_secret != api_key["key"] and rotated.json()["previous_prefix"]
    for secret in (api_key["key"], new_secret):  # both work during the grace period
        seen = await http.get("/v1/key", headers={"authorization": f"Bearer {secret}"})
        assert seen.status_code == 200 and seen.json()["data"]["id"] == api_key["id"]

    revoked = await http.post(f"/admin/keys/{api_key['id']}/revoke", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked"]
    for secret in (api_key["key"], new_secret):
        gone = await http.get("/v1/key", headers={"authorization": f"Bearer {secret}"})
        assert gone.status_code == 401
    frozen_in_time = await http.patch(f"/admin/keys/{api_key['id']}", headers=ADMIN,
                                      json={"rpm": 11})
    assert frozen_in_time.status_code == 400  # a revoked key cannot be changed
    assert frozen_in_time.json()["error"]["param"] == "key"
    assert (await ApiKey.get(id=api_key["id"])).rpm == 9

    topped = await http.post(f"/admin/accounts/{account}/credit", headers=ADMIN,
                             json={"usd": "2", "reference": "wire-1", "note": "bank wire"})
    again = await http.post(f"/admin/accounts/{account}/credit", headers=ADMIN,
                            json={"usd": "2", "reference": "wire-1", "note": "bank wire"})
    assert topped.json()["balance_micros"] == 7_000_000
    assert again.json()["duplicate"] and again.json()["balance_micros"] == 7_000_000
    assert (await Account.get(id=account)).balance == 7_000_000


@pytest.mark.parametrize(("body", "param"), [
    ({"rpm": 0}, "rpm"),
    ({"rpm": "9"}, "rpm"),
    ({"tpm": 10**13}, "tpm"),
    ({"cap": "-1"}, "cap"),
    ({"cap": "50"}, "cap"),  # above the balance
    ({"cap": "nan"}, "cap"),
    ({"models": ["no-such-model"]}, "models"),
    ({"models": "m1"}, "models"),
    ({"routes": ["everything"]}, "routes"),
    ({"expires_at": "2001-01-01T00:00:00"}, "expires_at"),
    ({"expires_at": "soon"}, "expires_at"),
    ({"scope": "root"}, "scope"),
    ({"scope": "api"}, "scope"),  # the account's only manage key
    ({"cap_reset": "hourly"}, "cap_reset"),
    ({"name": ""}, "name"),
])
async def test_bad_settings_are_refused_and_change_nothing(inprocess_portal: InProcessPortal,
                                                           body: dict, param: str) -> None:
    http = inprocess_portal.client
    made = (await http.post("/admin/keys", json={"name": "acme", "credit": "5"},
                            headers=ADMIN)).json()
    before = await ApiKey.get(id=made["id"])
    refused = await http.patch(f"/admin/keys/{made['id']}", json=body, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    after = await ApiKey.get(id=made["id"])
    assert [getattr(after, f) for f in ("name", "scope", "models", "routes", "rpm", "tpm", "cap",
                                        "cap_reset", "expires_at")] == \
        [getattr(before, f) for f in ("name", "scope", "models", "routes", "rpm", "tpm", "cap",
                                      "cap_reset", "expires_at")]


async def test_unknown_ids_and_a_missing_token(inprocess_portal: InProcessPortal) -> None:
    http = inprocess_portal.client
    for path in ("/admin/accounts/999999", "/admin/keys/999999",
                 "/admin/accounts/99999999999999999999"):
        assert (await http.get(path, headers=ADMIN)).status_code == 404
    assert (await http.post("/admin/keys/999999/revoke", headers=ADMIN)).status_code == 404
    assert (await http.get("/admin/accounts")).status_code == 401
    assert (await http.post("/admin/keys", json={"name": "x"})).status_code == 401
    made = (await http.post("/admin/keys", json={"name": "find-me"}, headers=ADMIN)).json()
    found = (await http.get("/admin/accounts", params={"q": made["prefix"][:10]},
                            headers=ADMIN)).json()["data"]
    assert [a["id"] for a in found] == [made["account"]]
