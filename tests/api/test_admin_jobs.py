"""``GET /admin/jobs``: jobs newest first, by status, account and model; bad filters are 400s."""

from __future__ import annotations

import pytest

from edge.db.models import ApiKey
from tests.support.inprocess import InProcessPortal

TOKEN = "jobs-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.portal_settings(admin_token=TOKEN)


async def submit(portal: InProcessPortal, secret: str, model: str) -> str:
    answer = await portal.client.post(
        "/v1/jobs", headers={"authorization": f"Bearer {secret}"},
        json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


async def test_jobs_are_found_by_account_and_model(inprocess_portal: InProcessPortal) -> None:
    portal, http = inprocess_portal, inprocess_portal.client
    await portal.add_model("m1")
    await portal.add_model("m2")
    first_key, first = await portal.create_key("5")
    second_key, second = await portal.create_key("5")
    mine = [await submit(portal, first, "m1"), await submit(portal, first, "m2")]
    theirs = await submit(portal, second, "m1")
    account = (await ApiKey.get(id=first_key)).account_id

    def ids(answer) -> list[str]:
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()["data"]]

    everything = (await http.get("/admin/jobs", headers=ADMIN)).json()["data"]
    assert [(j["id"], j["key_id"], j["account"]) for j in everything] == [
        (theirs, second_key, (await ApiKey.get(id=second_key)).account_id),
        (mine[1], first_key, account), (mine[0], first_key, account)]
    assert ids(await http.get("/admin/jobs", params={"account": str(account)},
                              headers=ADMIN)) == [mine[1], mine[0]]
    assert ids(await http.get("/admin/jobs", params={"model": "m1"}, headers=ADMIN)) == [
        theirs, mine[0]]
    assert ids(await http.get("/admin/jobs", params={"model": "m1", "account": str(account),
                                                     "status": "queued"},
                              headers=ADMIN)) == [mine[0]]
    assert ids(await http.get("/admin/jobs", params={"model": "m3"}, headers=ADMIN)) == []

    for params, param in (({"account": "x"}, "account"), ({"account": "0"}, "account"),
                          ({"model": "m" * 129}, "model"),
                          ({"status": "lost"}, "status"), ({"limit": "x"}, "limit")):
        refused = await http.get("/admin/jobs", params=params, headers=ADMIN)
        assert refused.status_code == 400, params
        assert refused.json()["error"]["param"] == param
    assert (await http.get("/admin/jobs", params={"account": str(account)})).status_code == 401
